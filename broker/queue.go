package broker

import (
	"context"
	"errors"
	"fmt"
	"path"
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

	mu      sync.Mutex
	cursor  map[string]*cursor // by "user/session": the last seq sent to the current instance
	pumping map[string]bool    // sessions with a kicked pump running: true if kicked again since
}

type cursor struct {
	mu   sync.Mutex
	conn sessions.Conn // the connection sent went to
	sent uint64
	hold bool // a begin's reply is not out yet: send nothing before it
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

// dropEvents journals drops and counts them.
func (d *delivery) dropEvents(drops []queues.Drop) []sessions.Event {
	events := make([]sessions.Event, 0, len(drops))
	for _, dr := range drops {
		d.metrics.dropped.WithLabelValues(string(dr.Reason)).Inc()
		detail := map[string]any{"seq": dr.Seq, "reason": string(dr.Reason)}
		if dr.Key != "" {
			detail["key"] = dr.Key
		}
		events = append(events, sessions.Event{Kind: "drop", Detail: detail})
	}
	return events
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
	d.pump(user, session)
	return entry, nil
}

// commit adds m to user/session's queue without waiting for durability:
// nothing about it may leave the broker (a PUBACK, a delivery) before
// the returned Durable is waited on.
func (d *delivery) commit(user, session string, m queues.Message) (queues.Entry, persistence.Durable, error) {
	entries, errs, durable, err := d.commitBatch(user, session, []queues.Message{m})
	if err == nil {
		err = errs[0]
	}
	return entries[0], durable, err
}

// commitBatch adds ms to user/session's queue in one transaction, in
// order, without waiting for durability (see commit). A message the queue
// refuses (full, too large, invalid) gets its error in errs and changes
// nothing; err fails the whole batch, which then changed nothing. When
// every message is refused nothing is committed (not even a new session).
func (d *delivery) commitBatch(user, session string, ms []queues.Message) ([]queues.Entry, []error, persistence.Durable, error) {
	entries, errs := make([]queues.Entry, len(ms)), make([]error, len(ms))
	durable, err := d.registry.Commit(user, session, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
		clear(entries) // afresh on every attempt: a conflict retries this function
		clear(errs)
		run, err := queues.NewRun(tx, user, session)
		if err != nil {
			return sessions.Change{}, err
		}
		now, refused, limits := time.Now(), 0, d.limitsFor(session)
		var events []sessions.Event
		for i, m := range ms {
			e, drops, err := run.Enqueue(m, limits, now)
			if err != nil {
				if queueErrorCode(err) == wire.CodeInternal {
					return sessions.Change{}, err
				}
				errs[i], refused = err, refused+1
				continue
			}
			entries[i] = e
			events = append(events, d.dropEvents(drops)...)
		}
		if refused == len(ms) {
			return sessions.Change{}, errAllRefused
		}
		return sessions.Change{Changed: len(events) > 0, Events: events}, run.Close()
	})
	if errors.Is(err, errAllRefused) {
		err = nil
	}
	for i := range ms {
		switch {
		case err != nil:
			d.metrics.rejected.WithLabelValues(string(queueErrorCode(err))).Inc()
		case errs[i] != nil:
			d.metrics.rejected.WithLabelValues(string(queueErrorCode(errs[i]))).Inc()
		case entries[i].Seq != 0:
			d.metrics.enqueued.Inc()
		}
	}
	return entries, errs, durable, err
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
		err := d.registry.Exec(user, session, conn, nonce, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
			n, m, err := queues.Ack(tx, user, session, upto, queues.MaxBatch)
			if err != nil {
				return sessions.Change{}, err
			}
			total, more = total+n, m
			if n == 0 && !(resend && !more) {
				return sessions.Change{}, nil
			}
			detail := map[string]any{"upto": upto, "removed": n}
			if resend && !more {
				detail["resend"] = true // a gap the device saw, worth an operator's eye
			}
			return sessions.Change{Changed: true, Events: []sessions.Event{{Kind: "ack", Detail: detail}}}, nil
		})
		if err != nil {
			return total, err
		}
	}
	d.metrics.acked.Add(float64(total))
	if resend {
		d.metrics.resends.Inc()
		d.rewind(user, session, conn)
	}
	d.kick(user, session)
	return total, nil
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
		c.conn, c.sent, c.hold = conn, 0, true
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
		c.sent = 0 // raised to the acked seq by the pump
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
func (d *delivery) kick(user, session string) {
	key := user + "/" + session
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, running := d.pumping[key]; running {
		d.pumping[key] = true
		return
	}
	d.pumping[key] = false
	go func() {
		reserveStack16K(0)
		for {
			d.pump(user, session)
			d.mu.Lock()
			again := d.pumping[key]
			if !again {
				delete(d.pumping, key)
			} else {
				d.pumping[key] = false
			}
			d.mu.Unlock()
			if !again {
				return
			}
		}
	}()
}

// pump publishes the next entries of user/session to its device, up to the
// window, if its instance is attached. Pumps of one session are serialised.
func (d *delivery) pump(user, session string) {
	key := user + "/" + session
	conn := d.registry.AttachedConn(user, session)
	if conn == 0 {
		// Nothing in flight to anyone: the next begin starts from acked. A
		// cursor that a begin holds (locked) stays: it is that begin's.
		d.mu.Lock()
		if c, ok := d.cursor[key]; ok && c.mu.TryLock() {
			if !c.hold {
				delete(d.cursor, key)
			}
			c.mu.Unlock()
		}
		d.mu.Unlock()
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
		c.conn, c.sent = conn, 0
	}
	topic := wire.SessionTopic(user, session, wire.LeafNotify)
	if d.subscribed != nil && !d.subscribed(conn, topic) {
		return // its subscription kicks the pump again
	}
	var entries []queues.Entry
	err := d.store.View(func(tx persistence.Txn) error {
		var err error
		c.sent, entries, err = queues.ReadWindow(tx, user, session, c.sent, d.window, time.Now())
		return err
	})
	if err != nil {
		d.out.log.Error("read queue", "session", key, "error", err)
		return
	}
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
	}
}

func (d *delivery) expire(user, session string) {
	if qi, err := d.info(user, session); err != nil || qi.Depth == 0 {
		return // nothing queued (or never stored): nothing to expire
	}
	err := d.registry.Update(user, session, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
		drops, err := queues.Expire(tx, user, session, time.Now(), queues.MaxBatch)
		if err != nil {
			return sessions.Change{}, err
		}
		events := d.dropEvents(drops)
		return sessions.Change{Changed: len(events) > 0, Events: events}, nil
	})
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
