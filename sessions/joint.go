package sessions

import (
	"errors"

	"github.com/f47fa0da/tether/persistence"
)

// Joint lets an ExecLocked function change other sessions of its user in
// its own transaction: what it does to them commits with the session it
// runs in, or not at all (an exactly-once call notifying the user's
// sessions). A Joint is valid only during the function it was passed to.
//
// The sessions it touches stay locked until the transaction has
// committed. Deadlock-free because of the lock order: ExecLocked takes its
// lock first (a user's calls share one), then the running session, then
// the joined ones; every other operation holds one session at a time.
type Joint struct {
	r    *Registry
	user string
	name string // the running session's
	tx   persistence.Txn
	s    *Session // the running session's copy, as fn changes it
	ch   Change   // what Update did to the running session
	held map[string]*joined
	// order lists held in the order they were locked.
	order []*joined
	err   error // set by Abort: the transaction fails with it
	ended bool  // the transaction is over: Update refuses
}

// ErrJointEnded is Update after the function it was passed to returned.
var ErrJointEnded = errors.New("sessions: the transaction of this call has ended")

// Abort makes the running transaction fail with err whatever the running
// function returns: for an Update whose fn failed after writing part of
// its change to tx, which must not commit.
func (j *Joint) Abort(err error) {
	if j.err == nil {
		j.err = err
	}
}

// joined is a session locked by a Joint and its copy in the transaction.
type joined struct {
	e       *entry
	s       Session
	head    journalHead
	events  []Event
	changed bool
	used    bool // an Update of it succeeded
}

// writes reports whether the transaction stores o's record: it changed,
// or it is new and an Update of it succeeded (a refused one creates nothing).
func (o *joined) writes() bool { return o.changed || (o.used && unstored(o.e)) }

// Update runs fn on a copy of the user's session name (created in state
// new if it does not exist, subject to MaxSessionsPerUser) in the running
// transaction, as Update does on its own; name may be the running session.
// What fn changes is kept only if fn succeeds, and written when the
// running function returns.
func (j *Joint) Update(name string, fn func(tx persistence.Txn, s *Session) (Change, error)) error {
	if j.ended {
		return ErrJointEnded
	}
	if name == j.name {
		ns := *j.s
		ch, err := fn(j.tx, &ns)
		if err != nil {
			return err
		}
		*j.s = ns
		j.ch.Changed = j.ch.Changed || ch.Changed
		j.ch.Events = append(j.ch.Events, ch.Events...)
		return nil
	}
	o := j.held[name]
	if o == nil {
		e, err := j.r.lock(j.user, name)
		if err != nil {
			return err
		}
		o = &joined{e: e, s: e.s, head: e.head}
		if j.held == nil {
			j.held = map[string]*joined{}
		}
		j.held[name] = o
		j.order = append(j.order, o)
	}
	if !o.used && unstored(o.e) {
		// A new session: refused here, not when the transaction ends, so
		// that the caller may go on without it.
		if err := j.r.admit(j.tx, j.user, name); err != nil {
			return err
		}
	}
	ns := o.s
	ch, err := fn(j.tx, &ns)
	if err != nil {
		return err
	}
	o.s, o.changed, o.used = ns, o.changed || ch.Changed, true
	o.events = append(o.events, ch.Events...)
	return nil
}

// begin resets the Joint for an attempt of the running function (a
// conflict retries it): copies afresh, sessions already locked kept.
func (j *Joint) begin(tx persistence.Txn, s *Session) {
	j.tx, j.s, j.ch, j.err = tx, s, Change{}, nil
	for _, o := range j.order {
		o.s, o.head, o.events, o.changed, o.used = o.e.s, o.e.head, nil, false, false
	}
}

// write stores the joined sessions that changed (or are new), in tx.
func (j *Joint) write(tx persistence.Txn) error {
	for _, o := range j.order {
		if o.writes() {
			if err := j.r.write(tx, &o.s, o.events, &o.head); err != nil {
				return err
			}
		}
	}
	return nil
}

// end records the outcome of the transaction in the joined sessions'
// entries (d covers it; err is its error) and unlocks them.
func (j *Joint) end(d persistence.Durable, err error) {
	for i := len(j.order) - 1; i >= 0; i-- {
		o := j.order[i]
		o.e.durable = o.e.durable.Join(d)
		if err == nil && o.writes() {
			o.e.s, o.e.head = o.s, o.head
		}
		o.e.mu.Unlock()
	}
	j.held, j.order, j.ended = nil, nil, true
}
