package queues

import (
	"fmt"
	"math"
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Enqueue appends m to the queue of user/session with the next seq and
// returns the stored entry with the drops it caused, in the order they
// happened. def applies unless the queue has its own limits.
//
// A message with a collapse key replaces the queued entry with the same key:
// that entry is removed (ReasonCollapsed, or ReasonExpired if its TTL had
// passed) and the new one gets a new seq at the tail. If the message does
// not fit even so, entries whose TTL has passed are removed first
// (ReasonExpired), and then the policy decides:
//
//   - drop_oldest removes the oldest entries (ReasonOverflowOldest) until it
//     fits, at most MaxBatch per call: a queue left above lowered limits
//     shrinks by up to MaxBatch per Enqueue.
//   - drop_newest keeps the queued entries (the same-key one too) and drops
//     the incoming message: it still consumes a seq, is counted, and is the
//     last Drop (ReasonOverflowNewest); the returned Entry is zero. This is
//     not an error: the message was accepted and dropped by policy.
//   - reject returns ErrFull and changes nothing, not even the seq counter.
//
// Data longer than MaxBytes is ErrTooLarge and changes nothing; an invalid m
// is ErrBadMessage. Data is stored compacted, and its compacted length is
// what counts against MaxBytes. Times are stored in UTC.
func Enqueue(tx persistence.Txn, user, session string, m Message, def Limits, now time.Time) (Entry, []Drop, error) {
	r, err := NewRun(tx, user, session)
	if err != nil {
		return Entry{}, nil, err
	}
	e, drops, err := r.Enqueue(m, def, now)
	if err != nil {
		return Entry{}, nil, err
	}
	return e, drops, r.Close()
}

// Run enqueues messages to one queue within one transaction, as Enqueue
// does one by one, but reads the queue's state once and writes it once
// (Close). A message refused with ErrFull, ErrTooLarge or ErrBadMessage
// changes nothing and the run goes on; after any other error the
// transaction must be discarded.
type Run struct {
	tx    persistence.Txn
	q     queue
	st    state
	dirty bool
}

// NewRun starts a run on user/session's queue in tx.
func NewRun(tx persistence.Txn, user, session string) (*Run, error) {
	q, err := open(user, session)
	if err != nil {
		return nil, err
	}
	st, err := loadState(tx, q)
	if err != nil {
		return nil, err
	}
	return &Run{tx: tx, q: q, st: st}, nil
}

// Close writes the queue's state if the run changed it.
func (r *Run) Close() error {
	if !r.dirty {
		return nil
	}
	r.dirty = false
	return saveState(r.tx, r.q, r.st)
}

// Enqueue is the package's Enqueue within the run.
func (r *Run) Enqueue(m Message, def Limits, now time.Time) (Entry, []Drop, error) {
	if err := m.Validate(); err != nil {
		return Entry{}, nil, err
	}
	tx, q, st := r.tx, r.q, r.st // st is kept only if m is taken (or dropped by policy)
	data := compactData(m.Data)
	lim := st.EffectiveLimits(def)
	if err := lim.Validate(); err != nil {
		return Entry{}, nil, err
	}
	if len(data) > lim.MaxBytes {
		return Entry{}, nil, fmt.Errorf("%w: data is %d bytes; the queue holds at most %d", ErrTooLarge, len(data), lim.MaxBytes)
	}
	if st.NextSeq == math.MaxUint64 {
		return Entry{}, nil, fmt.Errorf("%w: sequence numbers exhausted", ErrCorrupt)
	}
	e := Entry{Seq: st.NextSeq, Data: data, Enqueued: now.UTC(), Key: m.Key}
	if m.TTL > 0 {
		e.Expires = now.Add(m.TTL).UTC()
	}

	// Work out what must leave for e to fit before writing anything, so
	// that reject can refuse with nothing changed.
	var (
		same *held
		err  error
	)
	if m.Key != "" {
		if same, err = lookupKey(tx, q, m.Key); err != nil {
			return Entry{}, nil, err
		}
	}
	count, size := st.Count+1, st.Bytes+len(data)
	skip := uint64(0)
	if same != nil {
		count, size, skip = count-1, size-same.size, same.seq
	}
	var expired []held
	scanned, complete := !lim.fits(count, size), false
	if scanned {
		if expired, complete, err = expiredEntries(tx, q, st.ExpiryFrom, now, MaxBatch, skip); err != nil {
			return Entry{}, nil, err
		}
		for _, h := range expired {
			count, size = count-1, size-h.size
		}
	}
	fits := lim.fits(count, size)
	if !fits && lim.policy() == Reject {
		return Entry{}, nil, fmt.Errorf("%w: %d messages, %d bytes queued; the limits are %d messages, %d bytes",
			ErrFull, st.Count, st.Bytes, lim.MaxMessages, lim.MaxBytes)
	}

	var drops []Drop
	for _, h := range expired {
		if err := removeEntry(tx, q, h); err != nil {
			return Entry{}, nil, err
		}
		st.removed(h, ReasonExpired)
		drops = append(drops, h.drop(ReasonExpired))
	}
	if scanned {
		st.ExpiryFrom = st.nextExpiryFrom(expired, complete, now)
	}
	if !fits && lim.policy() == DropNewest {
		if same != nil && !same.expires.IsZero() { // it stays, and the scan skipped it
			st.ExpiryFrom = min(st.ExpiryFrom, expiryStamp(same.expires))
		}
		st.NextSeq++
		st.dropped(ReasonOverflowNewest)
		r.st, r.dirty = st, true
		return Entry{}, append(drops, Drop{Seq: e.Seq, Reason: ReasonOverflowNewest, Key: e.Key}), nil
	}
	if same != nil {
		if err := removeEntry(tx, q, *same); err != nil {
			return Entry{}, nil, err
		}
		// An entry already past its TTL was lost to expiry, not to the newer message.
		reason := ReasonCollapsed
		if same.expired(now) {
			reason = ReasonExpired
		}
		st.removed(*same, reason)
		drops = append(drops, same.drop(reason))
	}
	if !fits { // drop_oldest
		oldest, err := oldestEntries(tx, q, &st, lim, count, size)
		if err != nil {
			return Entry{}, nil, err
		}
		for _, h := range oldest {
			if err := removeEntry(tx, q, h); err != nil {
				return Entry{}, nil, err
			}
			st.removed(h, ReasonOverflowOldest)
			drops = append(drops, h.drop(ReasonOverflowOldest))
		}
		if len(oldest) > 0 { // every entry below the last one dropped is gone
			st.First = max(st.First, oldest[len(oldest)-1].seq+1)
		}
	}

	if err := putEntry(tx, q, e); err != nil {
		return Entry{}, nil, err
	}
	if st.Count == 0 {
		st.First = e.Seq
	}
	if !e.Expires.IsZero() {
		st.ExpiryFrom = min(st.ExpiryFrom, expiryStamp(e.Expires))
	}
	st.NextSeq++
	st.Count++
	st.Bytes += len(data)
	r.st, r.dirty = st, true
	return e, drops, nil
}

// oldestEntries returns the entries, oldest first, whose removal brings a
// queue that would hold count entries and size bytes within lim; at most
// MaxBatch of them.
func oldestEntries(tx persistence.Txn, q queue, st *state, lim Limits, count, size int) ([]held, error) {
	var out []held
	err := tx.Scan(q.entries, st.entriesFrom(q, 0), func(k, v []byte) (bool, error) {
		if lim.fits(count, size) || len(out) == MaxBatch {
			return false, nil
		}
		h, err := decodeHeld(k, v)
		if err != nil {
			return false, err
		}
		out = append(out, h)
		count, size = count-1, size-h.size
		return true, nil
	})
	return out, err
}
