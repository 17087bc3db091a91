package queues

import (
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Read returns up to limit entries of user/session with seq above after,
// in seq order, leaving out those expired at now (Expire removes them).
// limit <= 0 or above MaxBatch means MaxBatch. To page through a queue,
// pass the last returned seq as after; an empty result is the end.
// Read only reads: it works in a View transaction too.
func Read(tx persistence.Txn, user, session string, after uint64, limit int, now time.Time) ([]Entry, error) {
	q, err := open(user, session)
	if err != nil {
		return nil, err
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	st, err := loadState(tx, q)
	if err != nil {
		return nil, err
	}
	entries, _, err := read(tx, q, st, after, limit, now)
	return entries, err
}

// ReadWindow is Read for a deliverer that keeps at most window entries
// unacknowledged, with one read of the queue's state: sent is the last seq
// it sent, raised to the queue's acked seq if below it (what was sent
// before that counts no more); acked is the queue's acked seq; entries are
// those above sent, as many as the window has room for; expired counts
// the entries the read passed over because their TTL had passed (an
// Expire removes them, so that later reads need not pass them again).
func ReadWindow(tx persistence.Txn, user, session string, sent uint64, window int, now time.Time) (_, acked uint64, _ []Entry, expired int, _ error) {
	q, err := open(user, session)
	if err != nil {
		return sent, 0, nil, 0, err
	}
	st, err := loadState(tx, q)
	if err != nil {
		return sent, 0, nil, 0, err
	}
	sent = max(sent, st.Acked)
	room := window - int(sent-st.Acked)
	if room <= 0 || sent == ^uint64(0) {
		return sent, st.Acked, nil, 0, nil
	}
	entries, expired, err := read(tx, q, st, sent, room, now)
	return sent, st.Acked, entries, expired, err
}

// read returns up to limit entries of q above after, leaving out (and
// counting) those expired at now.
func read(tx persistence.Txn, q queue, st state, after uint64, limit int, now time.Time) (out []Entry, expired int, err error) {
	if st.Count == 0 || after >= st.NextSeq-1 {
		return nil, 0, nil // nothing stored above after: no scan (a deliverer that sent everything asks often)
	}
	limit = batch(limit)
	err = tx.Scan(q.entries, st.entriesFrom(q, after), func(k, v []byte) (bool, error) {
		seq, err := persistence.Uint64Suffix(k)
		if err != nil {
			return false, err
		}
		e, err := decodeEntry(seq, v)
		if err != nil {
			return false, err
		}
		if e.Expired(now) {
			expired++
		} else {
			out = append(out, e)
		}
		return len(out) < limit, nil
	})
	return out, expired, err
}
