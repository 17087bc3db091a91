package queues

import (
	"fmt"
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Ack acknowledges every entry of user/session up to and including seq
// upto: it removes them and raises Meta.Acked to upto. It is cumulative
// and idempotent: an upto at or below Meta.Acked changes nothing.
//
// An upto beyond the last seq assigned (Meta.NextSeq-1) is an error
// wrapping ErrInvalid and changes nothing: a device cannot have received
// it, so it is a bug or a stale device, and clamping would hide that.
//
// One call removes at most limit entries (limit <= 0 or above MaxBatch means
// MaxBatch). When more remain at or below upto, Acked is raised only to
// just below the first of them and more is true: call Ack again, in the
// same or a new transaction. Only entries at or below upto are scanned.
//
// An entry whose TTL has passed at now is removed as expired (one of the
// returned drops, counted as ReasonExpired) rather than acknowledged:
// deliverers skip expired entries, so a cumulative ack past one is no
// sign that it arrived, and the sweep would have dropped it the same way.
// removed counts the entries acknowledged.
func Ack(tx persistence.Txn, user, session string, upto uint64, limit int, now time.Time) (removed int, drops []Drop, more bool, err error) {
	q, err := open(user, session)
	if err != nil {
		return 0, nil, false, err
	}
	st, err := loadState(tx, q)
	if err != nil {
		return 0, nil, false, err
	}
	if upto >= st.NextSeq {
		return 0, nil, false, fmt.Errorf("%w: ack up to %d, but the last seq assigned is %d", ErrInvalid, upto, st.NextSeq-1)
	}
	if upto <= st.Acked {
		return 0, nil, false, nil
	}
	limit = batch(limit)
	var acked []held
	err = tx.Scan(q.entries, st.entriesFrom(q, 0), func(k, v []byte) (bool, error) {
		seq, err := persistence.Uint64Suffix(k)
		if err != nil || seq > upto {
			return false, err
		}
		if len(acked) == limit {
			// Entry seq stays: acknowledge only what lies before it.
			more, upto = true, seq-1
			return false, nil
		}
		h, err := decodeHeld(k, v)
		if err != nil {
			return false, err
		}
		acked = append(acked, h)
		return true, nil
	})
	if err != nil {
		return 0, nil, false, err
	}
	for _, h := range acked {
		if err := removeEntry(tx, q, h); err != nil {
			return 0, nil, false, err
		}
		if h.expired(now) {
			st.removed(h, ReasonExpired)
			drops = append(drops, h.drop(ReasonExpired))
			continue
		}
		st.removed(h, "")
		removed++
	}
	st.Acked = upto
	st.First = max(st.First, upto+1)
	return removed, drops, more, saveState(tx, q, st)
}
