package queues

import (
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Expire removes up to limit entries of user/session whose TTL has passed
// at now, soonest-expired first, and returns them as drops (ReasonExpired).
// limit <= 0 or above MaxBatch means MaxBatch; call again while it returns
// limit drops. The work is proportional to the entries removed, not to the
// queue: an index keeps entries in expiry order.
func Expire(tx persistence.Txn, user, session string, now time.Time, limit int) ([]Drop, error) {
	q, err := open(user, session)
	if err != nil {
		return nil, err
	}
	st, err := loadState(tx, q)
	if err != nil {
		return nil, err
	}
	expired, complete, err := expiredEntries(tx, q, st.ExpiryFrom, now, batch(limit), 0)
	if err != nil || len(expired) == 0 {
		return nil, err
	}
	drops := make([]Drop, 0, len(expired))
	for _, h := range expired {
		if err := removeEntry(tx, q, h); err != nil {
			return nil, err
		}
		st.removed(h, ReasonExpired)
		drops = append(drops, h.drop(ReasonExpired))
	}
	st.ExpiryFrom = st.nextExpiryFrom(expired, complete, now)
	return drops, saveState(tx, q, st)
}

// expiredEntries returns up to limit stored entries expired at now, in expiry
// order, scanning the expiry index from stamp from and leaving out seq skip
// (0: none). complete says it found all of them. It only reads.
func expiredEntries(tx persistence.Txn, q queue, from uint64, now time.Time, limit int, skip uint64) (out []held, complete bool, err error) {
	until := expiryStamp(now)
	var seqs []uint64
	complete = true
	err = tx.Scan(q.expiry, persistence.Uint64Key(q.expiry, from), func(k, _ []byte) (bool, error) {
		stamp, seq, err := q.parseExpiryKey(k)
		if err != nil || stamp > until {
			return false, err
		}
		if seq == skip {
			return true, nil
		}
		if len(seqs) == limit {
			complete = false
			return false, nil
		}
		seqs = append(seqs, seq)
		return true, nil
	})
	if err != nil {
		return nil, false, err
	}
	// The entries are read after the scan: the Txn contract promises
	// nothing about other calls while a scan is open.
	out = make([]held, 0, len(seqs))
	for _, seq := range seqs {
		h, err := loadHeld(tx, q, seq)
		if err != nil {
			return nil, false, err
		}
		out = append(out, h)
	}
	return out, complete, nil
}

// batch is n bounded to 1..MaxBatch, with n <= 0 meaning MaxBatch.
func batch(n int) int {
	if n <= 0 || n > MaxBatch {
		return MaxBatch
	}
	return n
}
