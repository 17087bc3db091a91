package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

// sessionHook connects MQTT to the session registry: it answers requests on
// sessions/U/S/req, turns wills and disconnects into liveness, and restores
// retained presence lazily when someone subscribes to it.
type sessionHook struct {
	mqtt.HookBase
	access   *access
	registry *sessions.Registry
	calls    *calls
	delivery *delivery
	snaps    *snapshots // nil without snapshot keys
	out      *outbox
	log      *slog.Logger

	acks *publishQueues // shared with access, so refusals keep their place

	nextConn atomic.Uint64
	conns    sync.Map // *mqtt.Client -> sessions.Conn
	clients  sync.Map // sessions.Conn -> *mqtt.Client
}

func (h *sessionHook) ID() string { return "tether-sessions" }

func (h *sessionHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnSessionEstablished, mqtt.OnPublish, mqtt.OnWill, mqtt.OnDisconnect, mqtt.OnSubscribed,
	}, []byte{b})
}

// conn returns the broker-wide id of cl's connection (0 if it has none).
func (h *sessionHook) conn(cl *mqtt.Client) sessions.Conn {
	if c, ok := h.conns.Load(cl); ok {
		return c.(sessions.Conn)
	}
	return 0
}

func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	c := sessions.Conn(h.nextConn.Add(1))
	h.conns.Store(cl, c)
	h.clients.Store(c, cl)
}

func (h *sessionHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.acks.settle(cl)
	h.acks.forget(cl)
	if c := h.conn(cl); c != 0 {
		h.registry.Disconnected(c)
		h.conns.Delete(cl)
		h.clients.Delete(c)
	}
}

// OnPublish handles requests and notifies. The access hook ran first, so
// the publisher owns the topic. Requests are answered, then acknowledged
// (the PUBACK follows the reply, after every commit the request made), and
// never forwarded to subscribers.
func (h *sessionHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if strings.HasPrefix(pk.TopicName, wire.NotifyRoot+"/") {
		return pk, h.notify(cl, pk) // the access hook let only services through
	}
	user, name, leaf, ok := wire.ParseSessionTopic(pk.TopicName)
	if !ok {
		return pk, nil
	}
	switch leaf {
	case wire.LeafReq:
		if pk.FixedHeader.Qos == 2 { // exactly-once publish handshakes stay with mochi
			h.acks.settle(cl) // after the requests before it
			h.request(cl, user, name, pk.Payload, replyToOf(pk))
			return pk, packets.CodeSuccessIgnore
		}
		// Run by the connection's ack queue, in order with its other
		// publishes; the PUBACK follows the reply.
		payload, to := pk.Payload, replyToOf(pk) // not pk: the closure would copy it to the heap
		h.acks.push(cl, pendingAck{pk: refOf(pk), run: func() { h.request(cl, user, name, payload, to) }})
		return pk, packets.ErrRejectPacket // no PUBACK from mochi: the ack queue sends it
	case wire.LeafPresence:
		// Presence is broker-owned; a device speaks to it only through its will.
		return pk, h.acks.deny(cl, pk, packets.ErrNotAuthorized)
	}
	return pk, nil
}

// request runs one request and answers it.
func (h *sessionHook) request(cl *mqtt.Client, user, name string, payload []byte, to replyTo) {
	res := h.handle(cl, user, name, payload)
	h.out.reply(user, name, to, res)
	// After the reply: queued notifications follow it, whether the
	// instance just began or came back (after a reconnect or a broker
	// restart) with any other request.
	h.delivery.release(user, name, h.conn(cl))
}

// handle runs one request and builds its reply.
func (h *sessionHook) handle(cl *mqtt.Client, user, name string, payload []byte) wire.Response {
	req, werr := wire.DecodeRequest(payload)
	if werr != nil {
		return wire.Response{ID: req.ID, Error: werr}
	}
	conn := h.conn(cl)
	var (
		ok  any
		err error
	)
	if h.snaps != nil {
		before, _ := h.snaps.sealed(user, name)
		defer func() { // at most one snapshot per request: only if it succeeded and the sealed state changed
			if err == nil {
				if err := h.snaps.sendIfChanged(cl, user, name, before); err != nil {
					h.log.Error("send snapshot", "session", user+"/"+name, "error", err)
				}
			}
		}()
	}
	switch req.Op {
	case wire.OpBegin:
		if req.Restore != "" {
			if h.snaps == nil {
				err = wire.Errorf(wire.CodeBadRequest, "this broker has no snapshot keys: it cannot restore sessions")
				break
			}
			var restored bool
			if restored, err = h.snaps.restore(user, name, req.Restore); err != nil {
				break
			}
			h.log.Info("begin with snapshot", "session", user+"/"+name, "restored", restored)
		}
		ok, err = h.begin(user, name, conn)
	case wire.OpPing:
		ok, err = h.registry.Ping(user, name, conn, req.Nonce, req.Cursor)
	case wire.OpRemember:
		err = h.registry.Remember(user, name, conn, req.Nonce, req.Memento, req.Phase)
		ok = struct{}{}
	case wire.OpEnd:
		err = h.registry.End(user, name, conn, req.Nonce)
		ok = struct{}{}
	case wire.OpCall:
		ok, err = h.calls.run(user, name, conn, req)
	case wire.OpAck:
		var n int
		n, err = h.delivery.ack(user, name, conn, req.Nonce, *req.Upto, req.Resend)
		ok = map[string]any{"acked": *req.Upto, "removed": n}
	default:
		err = errNotYet
	}
	if err != nil {
		return wire.Response{ID: req.ID, Error: h.wireError(err, user, name, req.Op)}
	}
	return wire.Response{ID: req.ID, OK: ok}
}

var errNotYet = errors.New("broker: op not supported by this broker")

// begun is the begin reply: the session's instance and its queue.
type begun struct {
	sessions.BeginResult
	QueueInfo
	Window int `json:"window"` // notifications sent before the broker waits for an ack
}

// begin starts an instance, then delivers the queue from the last acked seq.
func (h *sessionHook) begin(user, name string, conn sessions.Conn) (any, error) {
	var res sessions.BeginResult
	err := h.delivery.begin(user, name, func() (sessions.Conn, error) {
		var err error
		res, err = h.registry.Begin(user, name, conn)
		return conn, err
	})
	if err != nil {
		return nil, err
	}
	if res.Superseded.Conn != 0 {
		h.supersede(user, name, res.Superseded)
	}
	if afterBegin != nil {
		afterBegin(user, name)
	}
	qi, err := h.delivery.info(user, name)
	if err != nil {
		return nil, err
	}
	return begun{res, qi, h.delivery.window}, nil
}

// supersede tells the connection that held the instance a begin just
// replaced, on its res topic and to it alone (every device of the session
// reads res, and notifications go to them all): its SDK then stops
// handing the session's notifications to the application and reports the
// takeover, instead of learning of it at its next ping. It waits for the
// write at most supersedeWait, so that a stuck connection cannot hold up
// the begin; the notice goes out before the begin's reply and the
// notifications that follow it, so a device reading its connection in
// order sees it before any of them.
func (h *sessionHook) supersede(user, name string, s sessions.Superseded) {
	v, ok := h.clients.Load(s.Conn)
	if !ok {
		return // gone meanwhile: its next request gets stale_nonce
	}
	payload, err := json.Marshal(wire.Superseded{ID: json.RawMessage("null"), Nonce: s.Nonce,
		Error: wire.Errorf(wire.CodeStaleNonce, "another instance of %s/%s began on another connection; begin again", user, name)})
	if err != nil {
		return
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: wire.SessionTopic(user, name, wire.LeafRes), Payload: payload}
	written := make(chan struct{})
	go func() {
		defer close(written)
		_ = v.(*mqtt.Client).WritePacket(pk) // fails only when the connection is gone
	}()
	select {
	case <-written:
	case <-time.After(supersedeWait):
	}
}

// supersedeWait bounds how long a begin waits to tell the connection it replaced.
const supersedeWait = 100 * time.Millisecond

// afterBegin, when set (only by tests, before Open), runs after a begin
// attached its instance and before its reply is sent.
var afterBegin func(user, session string)

// wireError maps an error from the parts to the closed set of wire codes;
// this is the one place that mapping lives.
func (h *sessionHook) wireError(err error, user, name, op string) *wire.Error {
	var (
		we *wire.Error
		he *nonce.HandlerError
	)
	switch {
	case errors.As(err, &he) && he.Stack != nil:
		h.log.Error("call handler panicked", "session", user+"/"+name, "method", he.Method, "panic", he.Err, "stack", string(he.Stack))
		return wire.Errorf(wire.CodeInternal, "%s failed inside the application; nothing was committed", he.Method)
	case errors.As(err, &he):
		var app *wire.Error // a handler may choose its code, within the closed set
		if errors.As(he.Err, &app) && app.Code.Known() {
			return app
		}
		code := wire.CodeBadRequest
		switch c := queueErrorCode(he.Err); {
		case c == wire.CodeQueueFull, c == wire.CodeTooLarge, c == wire.CodeForbidden:
			code = c // a notification the handler sent was refused (Call.Notify)
		case errors.Is(he.Err, context.DeadlineExceeded):
			code = wire.CodeInternal // the handler outran CallTimeout
		}
		return wire.Errorf(code, "%s failed: %v", he.Method, he.Err)
	case errors.As(err, &we):
		return we
	case errors.Is(err, sessions.ErrStaleNonce):
		return wire.Errorf(wire.CodeStaleNonce, "nonce is not the current instance's: another instance took over or the session ended; begin again")
	case errors.Is(err, sessions.ErrBusy):
		return wire.Errorf(wire.CodeSessionBusy, "session %s/%s is live on another connection (exclusive policy)", user, name)
	case errors.Is(err, sessions.ErrExpired):
		return wire.Errorf(wire.CodeSessionExpired, "session %s/%s is past its deadline", user, name)
	case errors.Is(err, sessions.ErrTooLarge):
		return wire.Errorf(wire.CodeTooLarge, "%s", strings.TrimPrefix(err.Error(), "sessions: "))
	case errors.Is(err, sessions.ErrTooManySessions):
		return wire.Errorf(wire.CodeForbidden, "%s", strings.TrimPrefix(err.Error(), "sessions: "))
	case errors.Is(err, sessions.ErrInvalid):
		return wire.Errorf(wire.CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "sessions: "))
	case errors.Is(err, nonce.ErrUnknownMethod):
		return wire.Errorf(wire.CodeUnknownMethod, "%v", err)
	case errors.Is(err, nonce.ErrSeqTooOld), errors.Is(err, nonce.ErrSeqReused):
		return wire.Errorf(wire.CodeBadRequest, "%v", err)
	case errors.Is(err, queues.ErrFull), errors.Is(err, queues.ErrTooLarge), errors.Is(err, queues.ErrBadMessage), errors.Is(err, queues.ErrInvalid):
		return wire.Errorf(queueErrorCode(err), "%s", strings.TrimPrefix(err.Error(), "queues: "))
	case errors.Is(err, errNotYet):
		return wire.Errorf(wire.CodeBadRequest, "op %s is not supported by this broker", op)
	}
	h.log.Error("request failed", "session", user+"/"+name, "op", op, "error", err)
	return wire.Errorf(wire.CodeInternal, "the broker failed; nothing was committed")
}

// willPayload is what the Go and JS clients put in their last will.
type willPayload struct {
	Conn string `json:"conn"`
}

// voidTopic is where wills the broker has consumed are sent: no client may
// subscribe to $-topics, so nobody receives them.
const voidTopic = "$tether/void"

// OnWill consumes wills on a session's presence topic: the broker turns
// them into liveness and publishes presence itself. Wills on topics the
// client may not publish to are dropped too (mochi does not check them),
// and so are wills on the broker's other topics (a request, a notify):
// mochi sends a will past the publish hooks, so it would reach
// subscribers raw instead of being answered or made durable.
func (h *sessionHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	p, ok := h.access.principal(cl)
	if !ok || !p.Allowed(will.TopicName, true) {
		return voidWill(will), nil
	}
	if strings.HasPrefix(will.TopicName, wire.NotifyRoot+"/") {
		h.log.Info("will on a notify topic dropped", "client", cl.ID, "topic", will.TopicName)
		return voidWill(will), nil
	}
	user, name, leaf, ok := wire.ParseSessionTopic(will.TopicName)
	if !ok {
		return will, nil
	}
	if leaf != wire.LeafPresence {
		h.log.Info("will on a session topic other than presence dropped", "client", cl.ID, "topic", will.TopicName)
		return voidWill(will), nil
	}
	var wp willPayload
	_ = json.Unmarshal(will.Payload, &wp) // the payload is informative; the connection is what counts
	h.acks.settle(cl)
	h.registry.Will(user, name, h.conn(cl), wp.Conn)
	return voidWill(will), nil
}

func voidWill(w mqtt.Will) mqtt.Will {
	w.TopicName, w.Retain, w.Qos, w.Payload = voidTopic, false, 0, nil
	return w
}

// OnSubscribed restores the retained presence of the subscriber's stored
// sessions that its new filters cover, loading them (presence is not kept
// across restarts: start-up must not scan sessions).
func (h *sessionHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	p, ok := h.access.principal(cl)
	if !ok || p.Anonymous {
		return
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= 0x80 {
			continue
		}
		levels := strings.SplitN(f.Filter, "/", 4)
		var names []string
		if len(levels) >= 3 && wire.ValidName(levels[2]) {
			names = []string{levels[2]}
		} else {
			var err error
			if names, err = h.registry.Names(p.User); err != nil {
				h.log.Error("list sessions for presence", "user", p.User, "error", err)
				continue
			}
		}
		for _, name := range names {
			if topicMatches(f.Filter, wire.SessionTopic(p.User, name, wire.LeafPresence)) {
				h.registry.Touch(p.User, name)
			}
			// Delivery waited for this subscription (see subscribed).
			if topicMatches(f.Filter, wire.SessionTopic(p.User, name, wire.LeafNotify)) && h.registry.AttachedConn(p.User, name) == h.conn(cl) {
				h.delivery.kick(p.User, name)
			}
		}
	}
}

// subscribed reports whether connection c has a subscription that covers
// topic. Delivery waits for it: a notification published before the
// device subscribed (it reconnected and sent a request first) would reach
// no one, and the device's next cumulative ack would skip it.
func (h *sessionHook) subscribed(c sessions.Conn, topic string) bool {
	v, ok := h.clients.Load(c)
	if !ok {
		return false
	}
	for filter := range v.(*mqtt.Client).State.Subscriptions.GetAll() {
		if topicMatches(filter, topic) {
			return true
		}
	}
	return false
}

// topicMatches reports whether an MQTT filter matches a topic.
func topicMatches(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		switch {
		case f == "#":
			return true
		case i >= len(ts):
			return false
		case f != "+" && f != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}
