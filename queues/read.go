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
	limit = batch(limit)
	var out []Entry
	err = tx.Scan(q.entries, st.entriesFrom(q, after), func(k, v []byte) (bool, error) {
		seq, err := persistence.Uint64Suffix(k)
		if err != nil {
			return false, err
		}
		e, err := decodeEntry(seq, v)
		if err != nil {
			return false, err
		}
		if !e.expired(now) {
			out = append(out, e)
		}
		return len(out) < limit, nil
	})
	return out, err
}
