// Package nonce is the exactly-once core: a call runs at most once per
// (session, seq). Its effects, the memento and its reply are written in the
// caller's transaction; a retried call gets the stored reply and does not
// run again. The current nonce and memento live in the session record
// (package sessions); this package keeps the reply cache, the
// application's transaction-scoped state and the call procedure.
package nonce

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Reply is a committed call's stored reply.
type Reply struct {
	Seq    uint64          `json:"seq"`
	Method string          `json:"method"`
	Args   []byte          `json:"args_sha256"` // so a reused seq with other arguments is refused, not answered
	OK     json.RawMessage `json:"ok"`
	At     time.Time       `json:"at"`
}

// Key layout: reply/<user>/<session>/<seq BE64> -> JSON Reply.
func replyPrefix(user, session string) []byte { return persistence.Prefix("reply", user, session) }

// GetReply returns the stored reply of (user/session, seq), if any.
func GetReply(tx persistence.Txn, user, session string, seq uint64) (Reply, bool, error) {
	v, err := tx.Get(persistence.Uint64Key(replyPrefix(user, session), seq))
	if errors.Is(err, persistence.ErrNotFound) {
		return Reply{}, false, nil
	}
	if err != nil {
		return Reply{}, false, err
	}
	var r Reply
	if err := json.Unmarshal(v, &r); err != nil {
		return Reply{}, false, fmt.Errorf("nonce: stored reply: %w", err)
	}
	return r, true, nil
}

// putReply stores r and forgets the replies keep seqs older or more
// (bounded retention). lastSeq is the session's last call seq before r:
// a call right after it drops one reply, a call after a gap in the seqs
// (or after RepliesKept was lowered, seen at the next gap) every reply
// that fell out of the window.
func putReply(tx persistence.Txn, user, session string, r Reply, keep, lastSeq uint64) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	prefix := replyPrefix(user, session)
	if err := tx.Set(persistence.Uint64Key(prefix, r.Seq), v); err != nil {
		return err
	}
	if r.Seq <= keep {
		return nil
	}
	oldest := r.Seq - keep // the newest seq whose reply goes
	if r.Seq == lastSeq+1 {
		return tx.Delete(persistence.Uint64Key(prefix, oldest))
	}
	var gone [][]byte
	err = tx.Scan(prefix, nil, func(k, _ []byte) (bool, error) {
		seq, err := persistence.Uint64Suffix(k)
		if err != nil || seq > oldest {
			return false, err
		}
		gone = append(gone, bytes.Clone(k)) // k is the iterator's, valid only until the next key
		return true, nil
	})
	for _, k := range gone {
		if err == nil {
			err = tx.Delete(k)
		}
	}
	return err
}
