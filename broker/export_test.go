package broker

import (
	"errors"

	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// SetAfterCallCommit installs f as the hook that runs after a call
// committed and before its reply is sent (the crash window), and returns a
// function that puts the previous hook back. Set it before Open and
// restore it after Close: brokers read it from their client goroutines.
func SetAfterCallCommit(f func(user, session string, seq uint64)) (restore func()) {
	old := afterCallCommit
	afterCallCommit = f
	return func() { afterCallCommit = old }
}

// SetAfterBegin installs f as the hook that runs after a begin attached
// its instance and before its reply is sent; like SetAfterCallCommit.
func SetAfterBegin(f func(user, session string)) (restore func()) {
	old := afterBegin
	afterBegin = f
	return func() { afterBegin = old }
}

// AppState returns the committed application state of user at key (what
// handlers write through nonce.Call.State), and false if there is none.
// The key layout is nonce.State's: app/<user>/<key>.
func (b *Broker) AppState(user, key string) ([]byte, bool, error) {
	var (
		v  []byte
		ok bool
	)
	err := b.store.View(func(tx persistence.Txn) error {
		got, err := tx.Get(append(persistence.Prefix("app", user), key...))
		if errors.Is(err, persistence.ErrNotFound) {
			return nil
		}
		v, ok = got, err == nil
		return err
	})
	return v, ok, err
}

// StoredReply returns the reply cached for user/session's call seq.
func (b *Broker) StoredReply(user, session string, seq uint64) (nonce.Reply, bool, error) {
	var (
		r  nonce.Reply
		ok bool
	)
	err := b.store.View(func(tx persistence.Txn) error {
		var err error
		r, ok, err = nonce.GetReply(tx, user, session, seq)
		return err
	})
	return r, ok, err
}

// LoseInTransit makes every notification for which lose returns true
// vanish on its way to the device: counted as sent, never published. Set
// it before the first notification.
func (b *Broker) LoseInTransit(lose func(seq uint64) bool) { b.delivery.lose = lose }

// CommitBatch commits ms to user/session's queue in one transaction, as a
// run of pipelined notifies is, and waits until it is durable.
func (b *Broker) CommitBatch(user, session string, ms []queues.Message) ([]queues.Entry, []error, error) {
	res, durable, err := b.delivery.commitBatch(user, session, ms)
	if werr := durable.Wait(); werr != nil {
		return nil, nil, werr
	}
	return res.entries, res.errs, err
}

// NotifyRun commits ms to user/session's queue in one transaction and,
// once durable, offers the entries still queued to the delivery, as the
// ack queue does with a run of pipelined notifies.
func (b *Broker) NotifyRun(user, session string, ms []queues.Message) error {
	res, durable, err := b.delivery.commitBatch(user, session, ms)
	if werr := durable.Wait(); werr != nil {
		return werr
	}
	if err == nil {
		b.delivery.offer(user, session, res.queued)
	}
	return err
}

// StoreStats reports the store's commits and sync rounds so far.
func (b *Broker) StoreStats() (commits, syncs uint64) { return b.store.Stats() }

// Cursors is how many sessions hold a delivery cursor.
func (b *Broker) Cursors() int { return b.delivery.cursors() }
