// Package queues is the durable notification queue of each session: limits
// in messages and bytes with an overflow policy, per-message TTL, collapse
// keys, and sequence numbers that the device acknowledges cumulatively.
//
// Every function is pure over a persistence.Txn: the caller holds the
// session's lock and the transaction, so a queue change commits atomically
// with the journal events and session state that go with it (DESIGN.md,
// semantics 1, 3 and 4). Nothing is cached in memory.
//
// Sequence numbers start at 1 and are never reused: dropped, expired,
// collapsed and acknowledged entries leave gaps, and the counter lives in the
// queue's Meta, so it survives restarts. The work and memory of one call are
// bounded by MaxBatch entries, however long the queue is.
package queues

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Errors returned by this package; the broker maps each to a wire error code.
var (
	ErrFull       = errors.New("queues: queue full")            // reject policy: queue_full
	ErrTooLarge   = errors.New("queues: message too large")     // too_large
	ErrBadMessage = errors.New("queues: bad message")           // bad_request
	ErrInvalid    = errors.New("queues: invalid argument")      // bad_request (names, limits, ack)
	ErrCorrupt    = errors.New("queues: corrupt stored record") // internal
)

// MaxBatch is the most entries one call reads or removes. It keeps a call's
// writes (up to three keys per entry) well inside one Badger transaction
// with the default 16 MiB memtable (about 26,000 writes), leaving room for
// the caller's own writes in the same transaction.
const MaxBatch = 1000

// Reason says why an entry left the queue without being acknowledged.
type Reason string

const (
	ReasonOverflowOldest Reason = "overflow_oldest" // drop_oldest made room for a newer entry
	ReasonOverflowNewest Reason = "overflow_newest" // drop_newest refused the incoming message
	ReasonCollapsed      Reason = "collapsed"       // a newer message with the same key replaced it
	ReasonExpired        Reason = "expired"         // its TTL passed
)

// Entry is one queued notification.
type Entry struct {
	Seq      uint64          `json:"seq"`
	Data     json.RawMessage `json:"data"`
	Enqueued time.Time       `json:"ts"`
	Expires  time.Time       `json:"expires,omitzero"` // zero: no TTL
	Key      string          `json:"key,omitempty"`    // collapse key
}

// Expired reports whether e is past its TTL at now.
func (e Entry) Expired(now time.Time) bool {
	return !e.Expires.IsZero() && !now.Before(e.Expires)
}

// Drop is an entry (or an incoming message) that left the queue without
// being delivered and acknowledged. The caller journals it.
type Drop struct {
	Seq    uint64 `json:"seq"`
	Reason Reason `json:"reason"`
	Key    string `json:"key,omitempty"`
}

// Meta is a queue's state besides its entries. Count and Bytes are exact:
// the number of stored entries and the sum of their Data lengths.
type Meta struct {
	NextSeq uint64            `json:"next_seq"` // the seq the next message gets; starts at 1
	Acked   uint64            `json:"acked"`    // highest seq acknowledged; every stored entry is above it
	Count   int               `json:"count"`
	Bytes   int               `json:"bytes"`
	Limits  *Limits           `json:"limits,omitempty"`  // per-queue override; nil: the caller's default
	Dropped map[Reason]uint64 `json:"dropped,omitempty"` // entries dropped so far, by reason
}

// EffectiveLimits is the queue's own limits, or def when it has none.
func (m Meta) EffectiveLimits(def Limits) Limits {
	if m.Limits != nil {
		return *m.Limits
	}
	return def
}

func (m *Meta) dropped(reason Reason) {
	if m.Dropped == nil {
		m.Dropped = map[Reason]uint64{}
	}
	m.Dropped[reason]++
}

// GetMeta returns the queue's Meta; a queue never written has the zero
// Meta with NextSeq 1.
func GetMeta(tx persistence.Txn, user, session string) (Meta, error) {
	q, err := open(user, session)
	if err != nil {
		return Meta{}, err
	}
	s, err := loadState(tx, q)
	return s.Meta, err
}

// SetLimits sets the queue's own limits; nil goes back to the caller's
// default. Entries already queued stay: lower limits take effect at the
// next Enqueue (see Enqueue for how an over-full queue shrinks).
func SetLimits(tx persistence.Txn, user, session string, l *Limits) error {
	q, err := open(user, session)
	if err != nil {
		return err
	}
	if l != nil {
		if err := l.Validate(); err != nil {
			return err
		}
		c := *l // the Meta must not alias the caller's value
		l = &c
	}
	s, err := loadState(tx, q)
	if err != nil {
		return err
	}
	s.Limits = l
	return saveState(tx, q, s)
}

// Restore moves the queue's seqs forward to at least nextSeq, with
// everything up to acked acknowledged: a session restored from a snapshot
// on another broker keeps its seqs growing, so its device (which drops
// seqs it has seen) loses nothing new. Seqs never go backwards: lower
// values change nothing. Entries still queued below acked are left to the
// next Ack.
func Restore(tx persistence.Txn, user, session string, nextSeq, acked uint64) error {
	q, err := open(user, session)
	if err != nil {
		return err
	}
	s, err := loadState(tx, q)
	if err != nil {
		return err
	}
	if acked >= nextSeq {
		nextSeq = acked + 1
	}
	changed := false
	if nextSeq > s.NextSeq {
		if s.Count == 0 {
			s.First = nextSeq
		}
		s.NextSeq, changed = nextSeq, true
	}
	if acked > s.Acked && acked < s.NextSeq && s.Count == 0 {
		s.Acked, changed = acked, true
	}
	if !changed {
		return nil
	}
	return saveState(tx, q, s)
}
