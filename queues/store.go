package queues

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/wire"
)

// queue holds the keys of one session's queue (docs/storage.md):
//
//	queue/<user>/<session>/meta                     state: Meta and scan starts (JSON)
//	queue/<user>/<session>/e/<seq>                  Entry (JSON)
//	queue/<user>/<session>/k/<collapse key>         seq of the entry holding the key
//	queue/<user>/<session>/x/<expires><seq>         empty: expiry index, in expiry order
//
// Numbers are 8-byte big-endian. The k and x rows exist exactly for the
// stored entries that have a key or a TTL.
type queue struct {
	meta, entries, keys, expiry []byte
}

// open validates the names and builds the queue's key prefixes. Names are
// checked so that they cannot reach into another queue's keys.
func open(user, session string) (queue, error) {
	if err := wire.CheckName("user", user); err != nil {
		return queue{}, fmt.Errorf("%w: %s", ErrInvalid, err)
	}
	if err := wire.CheckName("session", session); err != nil {
		return queue{}, fmt.Errorf("%w: %s", ErrInvalid, err)
	}
	return queue{
		meta:    persistence.Key("queue", user, session, "meta"),
		entries: persistence.Prefix("queue", user, session, "e"),
		keys:    persistence.Prefix("queue", user, session, "k"),
		expiry:  persistence.Prefix("queue", user, session, "x"),
	}, nil
}

func (q queue) entryKey(seq uint64) []byte { return persistence.Uint64Key(q.entries, seq) }

func (q queue) collapseKey(key string) []byte {
	k := make([]byte, 0, len(q.keys)+len(key))
	return append(append(k, q.keys...), key...)
}

func (q queue) expiryKey(expires time.Time, seq uint64) []byte {
	return persistence.Uint64Key(persistence.Uint64Key(q.expiry, expiryStamp(expires)), seq)
}

// expiryStamp orders times as unsigned keys: Unix nanoseconds with the sign
// bit flipped, so that times before 1970 still sort first.
func expiryStamp(t time.Time) uint64 { return uint64(t.UnixNano()) ^ 1<<63 }

// parseExpiryKey splits an expiry index key into its stamp and seq.
func (q queue) parseExpiryKey(k []byte) (stamp, seq uint64, err error) {
	if len(k) != len(q.expiry)+16 {
		return 0, 0, fmt.Errorf("%w: expiry key %q", ErrCorrupt, k)
	}
	rest := k[len(q.expiry):]
	return binary.BigEndian.Uint64(rest), binary.BigEndian.Uint64(rest[8:]), nil
}

// state is the stored meta row: the queue's Meta, plus where its scans may
// start. Badger keeps a deleted key until compaction and an iterator steps
// over each one, so without these a keep-latest queue that has dropped a
// million entries would step over a million deleted keys on every Enqueue.
type state struct {
	Meta
	First      uint64 `json:"first,omitempty"`       // no stored entry has a lower seq
	ExpiryFrom uint64 `json:"expiry_from,omitempty"` // no expiry row has a lower stamp
}

// removed accounts for h leaving the queue; reason is empty for an ack.
func (s *state) removed(h held, reason Reason) {
	s.Count--
	s.Bytes -= h.size
	if reason != "" {
		s.dropped(reason)
	}
	if s.Count == 0 {
		s.First = s.NextSeq // the next entry is the first
	}
}

// entriesFrom is the key where a scan for entries above seq after starts.
func (s *state) entriesFrom(q queue, after uint64) []byte {
	return q.entryKey(max(after+1, s.Acked+1, s.First))
}

// nextExpiryFrom is where the next expiry scan may start once the expired
// entries found by a scan from s.ExpiryFrom at now are removed: past now if
// the scan was complete, else at the last one found.
func (s *state) nextExpiryFrom(expired []held, complete bool, now time.Time) uint64 {
	switch {
	case complete && expiryStamp(now) < math.MaxUint64:
		return max(s.ExpiryFrom, expiryStamp(now)+1)
	case len(expired) > 0:
		return max(s.ExpiryFrom, expiryStamp(expired[len(expired)-1].expires))
	}
	return s.ExpiryFrom
}

func loadState(tx persistence.Txn, q queue) (state, error) {
	v, err := tx.Get(q.meta)
	if errors.Is(err, persistence.ErrNotFound) {
		return state{Meta: Meta{NextSeq: 1}}, nil
	}
	if err != nil {
		return state{}, err
	}
	s, err := decodeState(v)
	if err != nil {
		return state{}, fmt.Errorf("%w: %s: %v", ErrCorrupt, q.meta, err)
	}
	return s, nil
}

func saveState(tx persistence.Txn, q queue, s state) error {
	return tx.Set(q.meta, encodeState(s))
}

// putEntry writes e and its index rows. e.Data must be compact JSON: its
// length is what Meta.Bytes counts.
func putEntry(tx persistence.Txn, q queue, e Entry) error {
	if err := tx.Set(q.entryKey(e.Seq), encodeEntry(e)); err != nil {
		return err
	}
	if e.Key != "" {
		if err := tx.Set(q.collapseKey(e.Key), binary.BigEndian.AppendUint64(nil, e.Seq)); err != nil {
			return err
		}
	}
	if !e.Expires.IsZero() {
		if err := tx.Set(q.expiryKey(e.Expires, e.Seq), nil); err != nil {
			return err
		}
	}
	return nil
}

// held is what removing a stored entry needs to know about it.
type held struct {
	seq     uint64
	size    int
	key     string
	expires time.Time
}

func (h held) drop(r Reason) Drop { return Drop{Seq: h.seq, Reason: r, Key: h.key} }

func (h held) expired(now time.Time) bool { return !h.expires.IsZero() && !now.Before(h.expires) }

// decodeHeld reads an entry row (key and value as scanned).
func decodeHeld(k, v []byte) (held, error) {
	seq, err := persistence.Uint64Suffix(k)
	if err != nil {
		return held{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	e, data, err := entryRow(seq, v) // the data is neither copied nor checked
	return held{seq: seq, size: len(data), key: e.Key, expires: e.Expires}, err
}

// loadHeld reads the stored entry seq, which an index row says exists.
func loadHeld(tx persistence.Txn, q queue, seq uint64) (held, error) {
	k := q.entryKey(seq)
	v, err := tx.Get(k)
	if errors.Is(err, persistence.ErrNotFound) {
		return held{}, fmt.Errorf("%w: index names missing entry %d", ErrCorrupt, seq)
	}
	if err != nil {
		return held{}, err
	}
	return decodeHeld(k, v)
}

// lookupKey returns the queued entry holding collapse key key, or nil.
func lookupKey(tx persistence.Txn, q queue, key string) (*held, error) {
	v, err := tx.Get(q.collapseKey(key))
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(v) != 8 {
		return nil, fmt.Errorf("%w: collapse key %q: value %x", ErrCorrupt, key, v)
	}
	h, err := loadHeld(tx, q, binary.BigEndian.Uint64(v))
	if err != nil {
		return nil, err
	}
	return &h, nil
}

// removeEntry deletes a stored entry and its index rows. At most one stored
// entry holds a given collapse key, so its k row is this entry's.
func removeEntry(tx persistence.Txn, q queue, h held) error {
	if err := tx.Delete(q.entryKey(h.seq)); err != nil {
		return err
	}
	if h.key != "" {
		if err := tx.Delete(q.collapseKey(h.key)); err != nil {
			return err
		}
	}
	if !h.expires.IsZero() {
		if err := tx.Delete(q.expiryKey(h.expires, h.seq)); err != nil {
			return err
		}
	}
	return nil
}
