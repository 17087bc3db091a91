package broker

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

// QueueRule applies Limits to the queues of sessions whose names match
// Pattern (path.Match syntax), first match wins.
type QueueRule struct {
	Pattern string        `json:"pattern"`
	Limits  queues.Limits `json:"limits"`
}

// delivery moves queue entries to devices: after a begin it sends every
// entry after the last acked seq, then new ones as they commit, in seq
// order, QoS 1, never more than Window unacknowledged at once (so neither
// the broker nor mochi's per-client write queue ever holds a whole queue).
type delivery struct {
	store    *persistence.Store
	registry *sessions.Registry
	out      *outbox
	limits   queues.Limits
	rules    []QueueRule
	window   int
	metrics  *queueMetrics
	// subscribed reports whether a connection has subscribed to a topic;
	// nothing is sent to one that has not (nil: always).
	subscribed func(sessions.Conn, string) bool
	// lose, in tests only, makes a notification vanish in transit: it is
	// counted as sent but never published.
	lose func(seq uint64) bool

	mu       sync.Mutex
	cursor   map[string]*cursor  // by "user/session": the last seq sent to the current instance
	pumping  map[string]*pumpDue // sessions with a kicked pump running: what it has yet to do
	expiring map[string]bool     // sessions an expireSoon is removing expired entries of
	closed   bool                // no pump starts any more (see close)
	pumps    sync.WaitGroup      // the running pumps
}

// close stops pumps from starting and waits for the running ones, which
// read the store: the broker calls it before closing the store.
func (d *delivery) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.pumps.Wait()
}

type cursor struct {
	mu   sync.Mutex
	conn sessions.Conn // the connection sent went to
	sent uint64
	hold bool // a begin's reply is not out yet: send nothing before it
	// acked is the queue's acked seq as last read or acknowledged since
	// (never above the stored one); known says that sent and acked come
	// from a read to this connection (not reset since by a begin, a rewind
	// or another connection); caughtUp, that everything committed until
	// then was sent: the last read found less than the window had room for,
	// or the offers since fit in it.
	acked    uint64
	known    bool
	caughtUp bool
}

// pumpDue is what a running pump is asked to do next: read the queue
// (read), or only send entries just committed and synced (offered).
type pumpDue struct {
	again   bool
	read    bool
	offered []queues.Entry
}

type queueMetrics struct {
	enqueued  prometheus.Counter
	delivered prometheus.Counter
	acked     prometheus.Counter
	resends   prometheus.Counter
	dropped   *prometheus.CounterVec
	rejected  *prometheus.CounterVec
}

func newQueueMetrics(reg *prometheus.Registry) *queueMetrics {
	m := &queueMetrics{
		enqueued:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_notifications_enqueued_total", Help: "Notifications durably enqueued."}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_notifications_delivered_total", Help: "Notifications published to devices (redeliveries included)."}),
		acked:     prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_notifications_acked_total", Help: "Queue entries removed by device acks."}),
		resends: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_notification_resends_total",
			Help: "Acks asking to resend after the acked seq: a device saw a gap (a notification lost in transit)."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_notifications_dropped_total",
			Help: "Queue entries dropped, by reason (overflow_oldest, overflow_newest, collapsed, expired)."}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_notifications_rejected_total",
			Help: "Notifications refused, by code (queue_full, too_large, bad_request, forbidden)."}, []string{"code"}),
	}
	reg.MustRegister(m.enqueued, m.delivered, m.acked, m.resends, m.dropped, m.rejected)
	return m
}

// limitsFor returns the configured limits of session name's queue.
func (d *delivery) limitsFor(name string) queues.Limits {
	for _, r := range d.rules {
		if ok, _ := path.Match(r.Pattern, name); ok {
			return r.Limits
		}
	}
	return d.limits
}

// dropEvents returns the journal events of drops.
func dropEvents(drops []queues.Drop) []sessions.Event {
	events := make([]sessions.Event, 0, len(drops))
	for _, dr := range drops {
		detail := map[string]any{"seq": dr.Seq, "reason": string(dr.Reason)}
		if dr.Key != "" {
			detail["key"] = dr.Key
		}
		events = append(events, sessions.Event{Kind: "drop", Detail: detail})
	}
	return events
}

// counted counts drops that committed, and entries enqueued by a commit.
func (d *delivery) counted(drops []queues.Drop, enqueued int) {
	for _, dr := range drops {
		d.metrics.dropped.WithLabelValues(string(dr.Reason)).Inc()
	}
	d.metrics.enqueued.Add(float64(enqueued))
}

// enqueue durably adds m to user/session's queue (creating the session if
// new) and starts delivering it. When it returns nil the entry is fsynced.
func (d *delivery) enqueue(user, session string, m queues.Message) (queues.Entry, error) {
	entry, durable, err := d.commit(user, session, m)
	if werr := durable.Wait(); werr != nil {
		return queues.Entry{}, werr
	}
	if err != nil {
		return queues.Entry{}, err
	}
	d.kick(user, session) // in the background, counted by close
	return entry, nil
}

// commit adds m to user/session's queue without waiting for durability:
// nothing about it may leave the broker (a PUBACK, a delivery) before
// the returned Durable is waited on.
func (d *delivery) commit(user, session string, m queues.Message) (queues.Entry, persistence.Durable, error) {
	b, durable, err := d.commitBatch(user, session, []queues.Message{m})
	if err == nil {
		err = b.errs[0]
	}
	return b.entries[0], durable, err
}

// batch is what commitBatch did with each of its messages.
type batch struct {
	entries []queues.Entry // message i's entry; zero if refused or dropped by policy
	errs    []error        // why message i was refused
	// queued are the batch's entries still in the queue when it committed
	// (a later message of the batch may have collapsed or pushed out an
	// earlier one), in seq order: what a read right after the commit
	// would have found of the batch.
	queued []queues.Entry
}

// commitBatch adds ms to user/session's queue in one transaction, in
// order, without waiting for durability (see commit). A message the queue
// refuses (full, too large, invalid) gets its error in errs and changes
// nothing; err fails the whole batch, which then changed nothing. When
// every message is refused nothing is committed (not even a new session).
func (d *delivery) commitBatch(user, session string, ms []queues.Message) (batch, persistence.Durable, error) {
	var r enqueued
	durable, err := d.registry.Commit(user, session, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
		var err error
		if r, err = d.enqueueRun(tx, user, session, ms, time.Now()); err != nil {
			return sessions.Change{}, err
		}
		if r.refused == len(ms) {
			return sessions.Change{}, errAllRefused
		}
		return r.change(), nil
	})
	if errors.Is(err, errAllRefused) {
		err = nil
	}
	taken := 0
	for i := range ms {
		switch {
		case err != nil:
			d.metrics.rejected.WithLabelValues(string(queueErrorCode(err))).Inc()
		case r.errs[i] != nil:
			d.metrics.rejected.WithLabelValues(string(queueErrorCode(r.errs[i]))).Inc()
		case r.entries[i].Seq != 0:
			taken++
		}
	}
	b := batch{entries: r.entries, errs: r.errs}
	if err == nil {
		d.counted(r.drops, taken)
		for _, e := range r.entries {
			if e.Seq != 0 && !r.gone[e.Seq] {
				b.queued = append(b.queued, e)
			}
		}
	}
	if b.entries == nil { // the commit failed before enqueueRun ran
		b.entries, b.errs = make([]queues.Entry, len(ms)), make([]error, len(ms))
	}
	return b, durable, err
}

// enqueued is what enqueueRun did.
type enqueued struct {
	entries []queues.Entry // message i's entry; zero if refused or dropped by policy
	errs    []error        // why message i was refused
	refused int
	drops   []queues.Drop
	gone    map[uint64]bool // seqs of the run's entries that left the queue within it
}

// change is the session change that journals the run's drops.
func (r enqueued) change() sessions.Change {
	events := dropEvents(r.drops)
	return sessions.Change{Changed: len(events) > 0, Events: events}
}

// enqueueRun adds ms to user/session's queue in tx, in order. A message
// the queue refuses gets its error in errs and changes nothing; an error
// leaves tx to be discarded.
func (d *delivery) enqueueRun(tx persistence.Txn, user, session string, ms []queues.Message, now time.Time) (enqueued, error) {
	r := enqueued{entries: make([]queues.Entry, len(ms)), errs: make([]error, len(ms))}
	run, err := queues.NewRun(tx, user, session)
	if err != nil {
		return r, err
	}
	limits := d.limitsFor(session)
	for i, m := range ms {
		e, drops, err := run.Enqueue(m, limits, now)
		if err != nil {
			if queueErrorCode(err) == wire.CodeInternal {
				return r, err
			}
			r.errs[i], r.refused = err, r.refused+1
			continue
		}
		r.entries[i] = e
		for _, dr := range drops {
			if r.gone == nil {
				r.gone = map[uint64]bool{}
			}
			r.gone[dr.Seq] = true
		}
		r.drops = append(r.drops, drops...)
	}
	return r, run.Close()
}

// errAllRefused aborts a batch whose every message was refused.
var errAllRefused = errors.New("broker: every message of the batch was refused")

// ack removes user/session's entries up to upto under the current
// instance, journals it, and sends what the window now allows. With
// resend, the device missed something in transit: everything after the
// acked seq is sent again.
func (d *delivery) ack(user, session string, conn sessions.Conn, nonce string, upto uint64, resend bool) (int, error) {
	total := 0
	for more := true; more; {
		var (
			n     int
			drops []queues.Drop
		)
		err := d.registry.Exec(user, session, conn, nonce, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
			var err error
			if n, drops, more, err = queues.Ack(tx, user, session, upto, queues.MaxBatch, time.Now()); err != nil {
				return sessions.Change{}, err
			}
			events := dropEvents(drops)
			if n > 0 || (resend && !more) {
				detail := map[string]any{"upto": upto, "removed": n}
				if resend && !more {
					detail["resend"] = true // a gap the device saw, worth an operator's eye
				}
				events = append(events, sessions.Event{Kind: "ack", Detail: detail})
			}
			return sessions.Change{Changed: len(events) > 0, Events: events}, nil
		})
		if err != nil {
			return total, err
		}
		total += n
		d.counted(drops, 0)
	}
	d.metrics.acked.Add(float64(total))
	if resend {
		d.metrics.resends.Inc()
		d.rewind(user, session, conn)
	}
	d.acknowledged(user, session, upto)
	return total, nil
}

// acknowledged pumps user/session after an ack up to upto committed: the
// window has room again. The queue is read only if it may hold entries
// not sent yet that no offer brings (the window was full, or the cursor
// was reset); otherwise there is nothing to send until the next offer.
func (d *delivery) acknowledged(user, session string, upto uint64) {
	c := d.cursorFor(user + "/" + session)
	c.mu.Lock()
	read := !c.known || !c.caughtUp
	if c.known {
		c.acked = max(c.acked, upto) // the stored acked seq is at least upto now
	}
	c.mu.Unlock()
	d.schedule(user, session, read, nil)
}

// begin runs a begin (fn) with user/session's delivery held: from the
// moment the new instance is attached until its reply is out (release),
// nothing is sent, and then everything after the last acked seq is.
// Notifications sent before the reply would be dropped by the device
// (it has no instance yet) and, acks being cumulative, lost.
func (d *delivery) begin(user, session string, fn func() (sessions.Conn, error)) error {
	key := user + "/" + session
	c := d.cursorFor(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	// A pump that found the session unattached may have dropped c from the
	// map since cursorFor: put it back, so that every pump from now on sees
	// the hold instead of a fresh cursor that would send before the reply.
	d.mu.Lock()
	d.cursor[key] = c
	d.mu.Unlock()
	conn, err := fn()
	if err == nil {
		c.conn, c.sent, c.hold, c.known = conn, 0, true, false
	}
	return err
}

// release runs after every reply to a request from conn: it ends the hold
// of a begin from conn, and sends what the window allows when the instance
// began or came back on another connection (a reconnect, a broker
// restart). Otherwise there is nothing new: enqueues and acks pump by
// themselves. A hold is ended only by the begin that took it: another
// device's request (a stale one, say) answered meanwhile must not let
// notifications overtake that begin's reply.
func (d *delivery) release(user, session string, conn sessions.Conn) {
	d.mu.Lock()
	c, ok := d.cursor[user+"/"+session]
	d.mu.Unlock()
	if ok {
		c.mu.Lock()
		if c.hold && c.conn != conn {
			c.mu.Unlock()
			return
		}
		held, sentTo := c.hold, c.conn
		c.hold = false
		c.mu.Unlock()
		if !held && sentTo == d.registry.AttachedConn(user, session) {
			return
		}
	}
	d.pump(user, session)
}

// rewind makes the next pump to conn start again after the acked seq.
func (d *delivery) rewind(user, session string, conn sessions.Conn) {
	c := d.cursorFor(user + "/" + session)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn {
		c.sent, c.known = 0, false // raised to the acked seq by the pump
	}
}

func (d *delivery) cursorFor(key string) *cursor {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.cursor[key]
	if !ok {
		c = &cursor{}
		d.cursor[key] = c
	}
	return c
}

// kick pumps user/session in the background: the caller (a notifier's ack
// queue, a device's read loop) does not wait for the read. Kicks that come
// while a pump runs make it run once more, so bursts coalesce.
func (d *delivery) kick(user, session string) { d.schedule(user, session, true, nil) }

// offer is kick after a commit of notifies to user/session that is
// durable now, with its queued entries (batch.queued): when they are just
// what a read would find, the pump sends them without reading the queue.
func (d *delivery) offer(user, session string, entries []queues.Entry) {
	d.schedule(user, session, len(entries) == 0, entries)
}

func (d *delivery) schedule(user, session string, read bool, offered []queues.Entry) {
	key := user + "/" + session
	d.mu.Lock()
	defer d.mu.Unlock()
	if due, running := d.pumping[key]; running {
		due.again, due.read = true, due.read || read
		due.offered = append(due.offered, offered...)
		return
	}
	if d.closed {
		return
	}
	due := &pumpDue{}
	d.pumping[key] = due
	d.pumps.Add(1)
	go func() {
		defer d.pumps.Done()
		reserveStack16K(0)
		for {
			d.pumpDue(user, session, read, offered)
			d.mu.Lock()
			again := due.again
			if !again {
				delete(d.pumping, key)
			}
			read, offered = due.read, due.offered
			due.again, due.read, due.offered = false, false, nil
			d.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// dropCursor forgets the cursor of key, a session attached to no
// connection: nothing is in flight to anyone, and the next begin starts
// from acked. A cursor that a begin holds (locked) stays: it is that begin's.
func (d *delivery) dropCursor(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.cursor[key]; ok && c.mu.TryLock() {
		if !c.hold {
			delete(d.cursor, key)
		}
		c.mu.Unlock()
	}
}

// pruneCursors drops the cursors of sessions attached to no connection
// (a session that detached with no pump after it kept its cursor), so
// that they do not pile up with every session ever delivered to.
func (d *delivery) pruneCursors() {
	d.mu.Lock()
	keys := make([]string, 0, len(d.cursor))
	for k := range d.cursor {
		keys = append(keys, k)
	}
	d.mu.Unlock()
	for _, k := range keys {
		user, session, _ := strings.Cut(k, "/")
		if d.registry.AttachedConn(user, session) == 0 {
			d.dropCursor(k)
		}
	}
}

// cursors is how many sessions have a delivery cursor.
func (d *delivery) cursors() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.cursor)
}

// pump publishes the next entries of user/session to its device, up to the
// window, if its instance is attached. Pumps of one session are serialised.
func (d *delivery) pump(user, session string) { d.pumpDue(user, session, true, nil) }

// pumpDue is pump, which reads the queue only if read is set or the
// offered entries are not what a read would return (see sendOffered).
func (d *delivery) pumpDue(user, session string, read bool, offered []queues.Entry) {
	key := user + "/" + session
	conn := d.registry.AttachedConn(user, session)
	if conn == 0 {
		d.dropCursor(key)
		return
	}
	c := d.cursorFor(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		return
	}
	if c.conn != conn {
		// Another connection (a reconnect, another device): what was sent
		// to the old one may never have arrived; start again after acked.
		c.conn, c.sent, c.known = conn, 0, false
	}
	topic := wire.SessionTopic(user, session, wire.LeafNotify)
	if d.subscribed != nil && !d.subscribed(conn, topic) {
		return // its subscription kicks the pump again
	}
	now := time.Now()
	if !read && c.known && len(offered) == 0 {
		return // an ack with nothing left to send (see acknowledged)
	}
	if !read && d.sendOffered(c, topic, offered, now) {
		return
	}
	var (
		entries []queues.Entry
		expired int
	)
	err := d.store.View(func(tx persistence.Txn) error {
		var err error
		c.sent, c.acked, entries, expired, err = queues.ReadWindow(tx, user, session, c.sent, d.window, now)
		return err
	})
	if expired > 0 {
		d.expireSoon(user, session)
	}
	if err != nil {
		c.known = false
		d.out.log.Error("read queue", "session", key, "error", err)
		return
	}
	c.known = true
	c.caughtUp = len(entries) < d.window-int(c.sent-c.acked)
	d.send(c, topic, entries)
}

// sendOffered sends offered (entries of commits that are durable, in the
// order the commits were offered) without reading the queue when they are
// what a read would return: the cursor knows the queue's acked seq, the
// entries not sent yet follow the last seq sent without a gap, and none
// has expired. It reports whether it sent them; a false leaves the cursor
// as it was. The window is counted from c.acked, never above the stored
// acked seq, so it holds as in a read. Entries the window has no room for
// wait for the acks that make room (and read them).
func (d *delivery) sendOffered(c *cursor, topic string, offered []queues.Entry, now time.Time) bool {
	if !c.known || len(offered) == 0 {
		return false
	}
	sent := max(c.sent, c.acked)
	next := offered
	for len(next) > 0 && next[0].Seq <= sent {
		next = next[1:] // sent already, by a read after its commit
	}
	if len(next) == 0 {
		return true // that read may have left more: caughtUp stays as it said
	}
	for i, e := range next {
		if e.Seq != sent+1+uint64(i) || e.Expired(now) {
			return false
		}
	}
	room := max(0, d.window-int(sent-c.acked))
	c.caughtUp = len(next) <= room
	next = next[:min(room, len(next))]
	c.sent = sent
	d.send(c, topic, next)
	return true
}

// send publishes entries, the next ones after c.sent, to c's device.
func (d *delivery) send(c *cursor, topic string, entries []queues.Entry) {
	for _, e := range entries {
		if d.lose != nil && d.lose(e.Seq) {
			c.sent = e.Seq
			continue
		}
		d.out.notify(topic, wire.Notification{Seq: e.Seq, Prev: c.sent, Data: e.Data, TS: e.Enqueued.UnixMilli()})
		c.sent = e.Seq
	}
	d.metrics.delivered.Add(float64(len(entries)))
}

// expireLoop removes expired entries from the queues of loaded sessions
// every interval (Read already skips them; this frees the space), journaling
// each as a drop. Queues of sessions not in memory expire when next touched.
func (d *delivery) expireLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, k := range d.registry.LoadedKeys() {
			if ctx.Err() != nil {
				return
			}
			d.expire(k[0], k[1])
		}
		d.pruneCursors()
	}
}

// expireSoon removes user/session's expired entries in the background
// (tracked like a pump): a read passed over them, and every read until the
// sweep would pass over them again.
func (d *delivery) expireSoon(user, session string) {
	key := user + "/" + session
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.expiring[key] {
		return
	}
	if d.expiring == nil {
		d.expiring = map[string]bool{}
	}
	d.expiring[key] = true
	d.pumps.Add(1)
	go func() {
		defer d.pumps.Done()
		d.expire(user, session)
		d.mu.Lock()
		delete(d.expiring, key)
		d.mu.Unlock()
	}()
}

func (d *delivery) expire(user, session string) {
	if qi, err := d.info(user, session); err != nil || qi.Depth == 0 {
		return // nothing queued (or never stored): nothing to expire
	}
	var drops []queues.Drop
	err := d.registry.Update(user, session, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
		var err error
		if drops, err = queues.Expire(tx, user, session, time.Now(), queues.MaxBatch); err != nil {
			return sessions.Change{}, err
		}
		events := dropEvents(drops)
		return sessions.Change{Changed: len(events) > 0, Events: events}, nil
	})
	if err == nil {
		d.counted(drops, 0)
	}
	if err != nil && !errors.Is(err, sessions.ErrTooManySessions) {
		d.out.log.Error("expire queue", "session", user+"/"+session, "error", err)
	}
}

// queueErrorCode maps queue errors to wire codes.
func queueErrorCode(err error) wire.Code {
	switch {
	case errors.Is(err, queues.ErrFull):
		return wire.CodeQueueFull
	case errors.Is(err, queues.ErrTooLarge):
		return wire.CodeTooLarge
	case errors.Is(err, queues.ErrBadMessage), errors.Is(err, queues.ErrInvalid), errors.Is(err, sessions.ErrInvalid):
		return wire.CodeBadRequest
	case errors.Is(err, sessions.ErrTooManySessions):
		return wire.CodeForbidden
	}
	return wire.CodeInternal
}

// QueueInfo is a queue's state for begin replies and inspection.
type QueueInfo struct {
	Acked   uint64                   `json:"acked"` // highest acked seq
	NextSeq uint64                   `json:"next_notify_seq"`
	Depth   int                      `json:"queued"` // entries waiting
	Bytes   int                      `json:"queued_bytes"`
	Dropped map[queues.Reason]uint64 `json:"dropped,omitempty"`
	Limits  queues.Limits            `json:"limits"`
}

func (d *delivery) info(user, session string) (QueueInfo, error) {
	var qi QueueInfo
	err := d.store.View(func(tx persistence.Txn) error {
		m, err := queues.GetMeta(tx, user, session)
		if err != nil {
			return err
		}
		qi = QueueInfo{Acked: m.Acked, NextSeq: m.NextSeq, Depth: m.Count, Bytes: m.Bytes, Dropped: m.Dropped,
			Limits: m.EffectiveLimits(d.limitsFor(session))}
		return nil
	})
	if err != nil {
		return qi, fmt.Errorf("queue of %s/%s: %w", user, session, err)
	}
	return qi, nil
}
