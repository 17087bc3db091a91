package broker

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/internal/faults"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

// notify handles a service's publish on tether/notify/U[/S-or-pattern]:
// the notification is enqueued and fsynced before the PUBACK. A refusal is
// told to MQTT 5 publishers by reason code: 0x97 quota exceeded
// (queue_full), 0x95 packet too large, 0x99 payload format invalid,
// 0x87 not authorized (session cap); MQTT 3.1.1 has no negative PUBACK.
func (h *sessionHook) notify(cl *mqtt.Client, pk packets.Packet) error {
	rest := strings.TrimPrefix(pk.TopicName, wire.NotifyRoot+"/")
	user, target, _ := strings.Cut(rest, "/")
	m, err := queues.DecodeMessage(pk.Payload, 0)
	if err == nil && !wire.ValidName(user) {
		err = fmt.Errorf("%w: %s", queues.ErrInvalid, wire.CheckName("user", user))
	}
	if err != nil { // refusals past this point are counted where they happen
		h.delivery.metrics.rejected.WithLabelValues(string(queueErrorCode(err))).Inc()
	}
	if pk.FixedHeader.Qos == 2 { // exactly-once publish handshakes stay with mochi
		if err == nil {
			h.acks.settle(cl) // after the QoS 0 and 1 notifies before it: seq order is arrival order
			_, err = h.delivery.notifyMatching(user, target, m)
		}
		if err != nil {
			h.log.Info("notify refused", "topic", pk.TopicName, "client", cl.ID, "error", err)
			return h.acks.deny(cl, pk, reasonFor(err))
		}
		return packets.CodeSuccessIgnore // acknowledged, not forwarded
	}
	// QoS 0 and 1: committed by the connection's ack queue, in arrival
	// order (runs of notifies to one session in one transaction), and
	// acknowledged and delivered once durable, while the read goroutine
	// goes on reading.
	switch {
	case err != nil:
		h.log.Info("notify refused", "topic", pk.TopicName, "client", cl.ID, "error", err)
		h.acks.push(cl, pendingAck{pk: refOf(pk), err: err})
	case faults.DropNotify(): // test only (device-sim): acknowledged, never queued
		h.acks.push(cl, pendingAck{pk: refOf(pk)})
	default:
		h.acks.push(cl, pendingAck{pk: refOf(pk), notify: &notifyJob{user: user, target: target, m: m}})
	}
	return packets.ErrRejectPacket // no PUBACK from mochi: the ack queue sends it
}

// commitNotifies commits a run of notifies from one connection (see
// publishQueues.commitNotifies): one transaction for a run to one
// session, commitMatching for a pattern.
func (h *sessionHook) commitNotifies(run []pendingAck) {
	j := run[0].notify
	if !wire.ValidName(j.target) { // a pattern, or every session: a run of one
		notified, durable, err := h.delivery.commitMatching(j.user, j.target, j.m)
		run[0].durable, run[0].err = durable, err
		if len(notified) > 0 { // also when refused partway: those before stay queued
			run[0].then = func() {
				for _, name := range notified {
					h.delivery.kick(j.user, name)
				}
			}
		}
		h.logRefusal(run[0])
		return
	}
	ms := make([]queues.Message, len(run))
	for i, p := range run {
		ms[i] = p.notify.m
	}
	b, durable, err := h.delivery.commitBatch(j.user, j.target, ms)
	offered := false // every taken notify of the run runs then: offer once
	offer := func() {
		if !offered {
			offered = true
			h.delivery.offer(j.user, j.target, b.queued)
		}
	}
	for i := range run {
		run[i].durable, run[i].err = durable, b.errs[i]
		if err != nil {
			run[i].err = err
		}
		if run[i].err == nil {
			run[i].then = offer
		}
		h.logRefusal(run[i])
	}
}

func (h *sessionHook) logRefusal(p pendingAck) {
	if p.err != nil {
		h.log.Info("notify refused", "topic", p.pk.topic, "error", p.err)
	}
}

func reasonFor(err error) packets.Code {
	switch queueErrorCode(err) {
	case wire.CodeQueueFull:
		return packets.ErrQuotaExceeded
	case wire.CodeTooLarge:
		return packets.ErrPacketTooLarge
	case wire.CodeBadRequest:
		return packets.ErrPayloadFormatInvalid
	case wire.CodeForbidden:
		return packets.ErrNotAuthorized
	}
	return packets.ErrUnspecifiedError
}

// notifyMatching durably enqueues m for user's session target: a name
// (created if new), a path.Match pattern over the user's stored sessions,
// or every stored session when target is empty, and starts delivering. It
// returns how many were notified; the first failure stops it.
func (d *delivery) notifyMatching(user, target string, m queues.Message) (int, error) {
	notified, durable, err := d.commitMatching(user, target, m)
	if werr := durable.Wait(); werr != nil {
		return 0, werr
	}
	for _, name := range notified {
		d.kick(user, name)
	}
	return len(notified), err
}

// commitMatching is notifyMatching without the wait and the delivery: it
// returns the sessions it enqueued for and what to wait for before telling
// anyone.
func (d *delivery) commitMatching(user, target string, m queues.Message) ([]string, persistence.Durable, error) {
	if wire.ValidName(target) {
		_, durable, err := d.commit(user, target, m)
		if err != nil {
			return nil, durable, err
		}
		return []string{target}, durable, nil
	}
	if target != "" {
		if _, err := path.Match(target, ""); err != nil {
			return nil, persistence.Durable{}, fmt.Errorf("%w: session pattern %q: %v", queues.ErrInvalid, target, err)
		}
	}
	names, err := d.registry.Names(user)
	if err != nil {
		return nil, persistence.Durable{}, err
	}
	var (
		notified []string
		durable  persistence.Durable
	)
	for _, name := range names {
		if ok, _ := path.Match(target, name); target == "" || ok {
			_, d, err := d.commit(user, name, m)
			durable = durable.Join(d)
			if err != nil {
				return notified, durable, err
			}
			notified = append(notified, name)
		}
	}
	return notified, durable, nil
}

// Notify durably enqueues data (any JSON-encodable value) for user's
// session, creating the session if it does not exist yet, and returns its
// seq (0 if the drop_newest policy dropped it). Errors: queues.ErrFull
// (reject policy), queues.ErrTooLarge, sessions.ErrTooManySessions.
func (b *Broker) Notify(user, session string, data any) (uint64, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("broker: notify data: %w", err)
	}
	e, err := b.Enqueue(user, session, queues.Message{Data: raw})
	return e.Seq, err
}

// Enqueue is Notify with a TTL and a collapse key.
func (b *Broker) Enqueue(user, session string, m queues.Message) (queues.Entry, error) {
	if err := m.Validate(); err != nil {
		return queues.Entry{}, err
	}
	return b.delivery.enqueue(user, session, m)
}

// NotifyAll notifies every stored session of user; it returns how many.
func (b *Broker) NotifyAll(user string, data any) (int, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("broker: notify data: %w", err)
	}
	return b.delivery.notifyMatching(user, "", queues.Message{Data: raw})
}

// LimitQueue sets the limits of user/session's queue (nil: back to the
// configured ones). Entries above new, lower limits are dropped by the
// policy as new ones arrive.
func (b *Broker) LimitQueue(user, session string, l *queues.Limits) error {
	return setQueueLimits(b.registry, user, session, l)
}

// Outq returns up to limit entries of user/session's queue, oldest first,
// without consuming them.
func (b *Broker) Outq(user, session string, limit int) ([]queues.Entry, error) {
	if !wire.ValidName(user) || !wire.ValidName(session) {
		return nil, fmt.Errorf("%w: bad session name %s/%s", queues.ErrInvalid, user, session)
	}
	var out []queues.Entry
	err := b.store.View(func(tx persistence.Txn) error {
		var err error
		out, err = queues.Read(tx, user, session, 0, limit, time.Now())
		return err
	})
	return out, err
}

// SessionInfo is one session as Sessions lists it.
type SessionInfo struct {
	Name  string         `json:"name"`
	State sessions.State `json:"state"`
	Phase string         `json:"phase,omitempty"`
	Queue QueueInfo      `json:"queue"`
}

// SessionsOf lists user's sessions with their state and queue depth.
func (b *Broker) SessionsOf(user string) ([]SessionInfo, error) {
	list, err := b.registry.List(user)
	if err != nil {
		return nil, err
	}
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		qi, err := b.delivery.info(s.User, s.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, SessionInfo{Name: s.Name, State: s.State, Phase: s.Phase, Queue: qi})
	}
	return out, nil
}
