// Package client is Tether's Go SDK for devices, on paho.mqtt.golang. It
// speaks the protocol in docs/protocol.md and imports no server package.
//
// The crash discipline: Dial, Begin (read the memento and phase), resume
// after the memento, Remember or Call as you go, End when done. A device
// that crashed does the same after restarting: Begin returns crashed=true
// and the last memento, so nothing committed is done twice.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/f47fa0da/tether/internal/pahoconn"
	"github.com/f47fa0da/tether/wire"
)

// Config says where and as whom to connect.
type Config struct {
	URL     string // tcp://host:1883, ssl://…, ws://host:8083/mqtt, wss://…
	User    string
	Token   string
	Session string // the logical session's name, chosen by the client

	ClientID       string        // MQTT client id; default: random, unique per Dial
	KeepAlive      time.Duration // MQTT keepalive; the broker notices a dead socket within 1.5×
	RequestTimeout time.Duration // default deadline of a request when ctx has none
	TickInterval   time.Duration // expected tick interval until begin says the broker's (pings go at this rate)
	LostAfter      int           // missed ticks before EventLost
	ManualPing     bool          // the application sends Ping itself; no automatic pings
	// AckDelay is how long an ack may wait for more notifications to be
	// handled, so that one ack (one commit on the broker) covers a run of
	// them; 0 sends each at once. It leaves sooner once half the broker's
	// delivery window is unacknowledged, when a gap asks for a resend, and
	// before End. At most 1 s; an ack that has not left when the device
	// dies only means those notifications come again to the next begin.
	AckDelay time.Duration
	// Snapshot is the last sealed snapshot the application kept (from
	// OnSnapshot); Begin presents it so that a broker which lost the session
	// (another node, a lost data directory) restores it.
	Snapshot string
	// OnSnapshot, if set, is called with every newer snapshot the broker
	// sends; keep the blob somewhere that survives a crash. A blob a
	// Begin's broker refused (expired, sealed with a key it does not hold,
	// or it has no keys) is not presented again by this Client; the kept
	// copy stays (another broker may take it) until a newer one comes.
	// It runs on the goroutine that reads the broker's messages: replies
	// and notifications wait while it runs, so keep it short and make no
	// request of the Client from it (its reply could not be read).
	OnSnapshot func(blob string)
	// OnAcked, if set, is called once the broker confirmed an ack: every
	// notification up to upto is out of the session's queue for good.
	// (Begun.Acked says the same at a Begin.) It runs on the goroutine
	// that sent the ack; keep it short.
	OnAcked   func(upto uint64)
	TLSConfig *tls.Config
	Logger    *slog.Logger
}

// DefaultConfig returns a Config with the timings matching the broker's defaults.
func DefaultConfig() Config {
	return Config{KeepAlive: 10 * time.Second, RequestTimeout: 10 * time.Second, TickInterval: 5 * time.Second, LostAfter: 3,
		AckDelay: 10 * time.Millisecond}
}

func (c Config) validate() error {
	if c.URL == "" {
		return errors.New("client: URL is required")
	}
	if err := wire.CheckName("user", c.User); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := wire.CheckName("session", c.Session); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if c.KeepAlive < time.Second || c.RequestTimeout <= 0 || c.TickInterval <= 0 || c.LostAfter < 1 {
		return errors.New("client: KeepAlive ≥ 1s, RequestTimeout, TickInterval and LostAfter must be set (start from DefaultConfig)")
	}
	if c.AckDelay < 0 || c.AckDelay > time.Second {
		return fmt.Errorf("client: AckDelay must be 0..1s, got %s", c.AckDelay)
	}
	return nil
}

// Errors a request can fail with. Broker errors are *Error values that
// match these with errors.Is by code.
var (
	// ErrStaleNonce means another instance took over (or the session ended):
	// this instance is dead. Crash and begin again.
	ErrStaleNonce    = &Error{Code: wire.CodeStaleNonce}
	ErrSessionBusy   = &Error{Code: wire.CodeSessionBusy}
	ErrExpired       = &Error{Code: wire.CodeSessionExpired}
	ErrUnknownMethod = &Error{Code: wire.CodeUnknownMethod}
	ErrNotBegun      = errors.New("client: no current instance: call Begin first")
	ErrClosed        = errors.New("client: closed")
	// ErrConnectionLost is returned for a request that cannot be safely
	// resent after the connection dropped (begin); begin again.
	ErrConnectionLost = errors.New("client: connection lost before the reply")
	// ErrRefused: the broker refused the client's credentials on its last
	// reconnect (EventRefused). Dial again with a valid token if it was
	// revoked or expired.
	ErrRefused = errors.New("client: the broker refused the credentials (token revoked or expired?)")
)

// Error is an error reply from the broker.
type Error struct {
	Code    wire.Code
	Message string
}

func (e *Error) Error() string { return "tether: " + string(e.Code) + ": " + e.Message }

// Is matches errors by code, so errors.Is(err, client.ErrStaleNonce) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Tick is the broker's periodic word on the session.
type Tick struct {
	RemainingMs *int64 `json:"remaining_ms"` // nil without a time window
	State       string `json:"state"`
	Phase       string `json:"phase"`
	ServerTime  int64  `json:"server_time"`
}

// Remaining is the time left in the window, and false without one.
func (t Tick) Remaining() (time.Duration, bool) {
	if t.RemainingMs == nil {
		return 0, false
	}
	return time.Duration(*t.RemainingMs) * time.Millisecond, true
}

// Begun is the reply to Begin.
type Begun struct {
	Nonce       string          `json:"nonce"`
	Memento     json.RawMessage `json:"memento"`
	Crashed     bool            `json:"crashed"`
	State       string          `json:"state"`
	Phase       string          `json:"phase"`
	RemainingMs *int64          `json:"remaining_ms"`
	NextSeq     uint64          `json:"next_seq"`
	// TickIntervalMs and LivenessMs are the broker's timings for this
	// session; the client paces its pings and its watchdog by them.
	TickIntervalMs int64  `json:"tick_interval_ms"`
	LivenessMs     int64  `json:"liveness_ms"`
	Acked          uint64 `json:"acked"`  // highest notification seq acknowledged so far
	Queued         int    `json:"queued"` // notifications waiting; they follow the reply
	Window         int    `json:"window"` // notifications the broker sends before it waits for an ack (0: not told)
}

// Notification is one message from the session's queue. Seqs only grow;
// gaps mean entries were dropped by the queue's policy or expired.
type Notification struct {
	Seq  uint64
	Data json.RawMessage
	Time time.Time // when it was enqueued

	instance uint64 // the instance it was delivered to
}

// Event is a change in the link to the broker as the device sees it.
type Event int

const (
	// EventLost: no tick for LostAfter tick intervals.
	EventLost Event = iota + 1
	// EventRecovered: ticks are arriving again.
	EventRecovered
	// EventTakenOver: another instance began the session (another device,
	// or another Client) and this one's nonce is dead: Nonce() is empty,
	// no more notifications are handed over, and requests fail with
	// ErrStaleNonce until Begin. Crash and begin again, or stop.
	EventTakenOver
	// EventRefused: on a reconnect the broker refused this client's
	// credentials (its token was revoked or expired, or the broker could
	// not check it). While that lasts requests fail at once with
	// ErrRefused; the client keeps trying and carries on by itself once
	// an attempt is accepted. A revoked token never is: Dial again with a
	// valid one.
	EventRefused
)

func (e Event) String() string {
	switch e {
	case EventLost:
		return "connection lost"
	case EventRecovered:
		return "recovered"
	case EventTakenOver:
		return "taken over"
	case EventRefused:
		return "credentials refused"
	}
	return "event(" + strconv.Itoa(int(e)) + ")"
}

// Client is one device's connection to one session. Its methods are safe
// for concurrent use.
type Client struct {
	cfg    Config
	mqtt   paho.Client
	topics struct {
		req, res, tick, notify, presence, snapshot string
		subs                                       map[string]byte // filter -> QoS
	}
	connID string
	log    *slog.Logger

	seq     atomic.Uint64 // request ids
	mu      sync.Mutex
	pending map[string]*pending // by request id
	nonce   string
	cursor  json.RawMessage
	snap    struct {
		version uint64
		blob    string
	}
	callMu  sync.Mutex // one call at a time, so seqs reach the broker in order
	nextSeq uint64     // seq of the next call (from begin's next_seq)

	ticks    chan Tick
	events   chan Event
	notes    chan Notification
	inbox    chan inboxItem // arrival order = the broker's seq order
	instance atomic.Uint64  // begins answered so far; notifications belong to one
	stale    atomic.Uint64  // the instance found taken over (see takenOver); its notifications are dropped
	lostTo   bool           // the last instance was taken over, and no Begin since (guarded by mu)
	handed   uint64         // highest seq handed to the application in the current instance, from begin's acked (guarded by mu)
	replaced []string       // nonces the broker said were replaced, newest last (guarded by mu; see takenOver)
	moved    chan struct{}  // closed when the instance changes (a Begin, a takeover), then replaced (guarded by mu)
	acked    atomic.Uint64  // the broker's acked seq at the latest begin
	ackWant  atomic.Uint64  // highest seq the application handled
	ackSent  atomic.Uint64  // highest seq the broker confirmed as acked
	gaps     atomic.Uint64  // gaps seen in the notifications (a Prev not seen)
	resent   atomic.Uint64  // gaps covered by a resend the broker confirmed
	window   atomic.Int64   // the broker's delivery window, from begin (0: not told)
	ackKick  chan struct{}
	held     *Notification // one whose HandleNotifications handler failed; handed first next time (guarded by mu)
	lastTick atomic.Int64  // unix nanos
	lost     atomic.Bool
	interval atomic.Int64 // ping and watchdog period, nanos

	refused    atomic.Bool   // the broker refused the credentials at the last attempt (EventRefused)
	refusedCh  chan struct{} // closed while refused, replaced once accepted again (guarded by mu)
	gen        atomic.Uint64 // connections made so far
	subscribed chan struct{} // closed once the first subscription is in place
	// ready is closed while the connection is up with its subscriptions in
	// place; requests wait for it, so that nothing the broker sends in
	// reply (notifications above all: their acks are cumulative) can
	// arrive before this client listens again after a reconnect.
	ready chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type pending struct {
	payload []byte
	gen     uint64 // the connection it was sent on
	resend  bool   // safe to send again after a reconnect
	// onOK, if set, runs on the message goroutine when the ok reply
	// arrives, before any later message is looked at.
	onOK func(ok json.RawMessage)
	done chan reply
}

// reply is a response as the client reads it: ok stays raw until decoded into the caller's type.
type reply struct {
	ID    json.RawMessage `json:"id"`
	OK    json.RawMessage `json:"ok"`
	Error *wire.Error     `json:"error"`
	// Superseded is set (id null) on the broker's notice that another
	// begin replaced the instance with this nonce (wire.Superseded).
	Superseded string `json:"superseded"`
}

// Dial connects to the broker with a last will on the session's presence
// topic, subscribes to the session's topics, and starts the watchdog that
// reports EventLost/EventRecovered. It reconnects by itself after a drop.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, pending: map[string]*pending{}, ticks: make(chan Tick, 16), events: make(chan Event, 16),
		notes: make(chan Notification), inbox: make(chan inboxItem, 4096), ackKick: make(chan struct{}, 1),
		log: cfg.Logger, subscribed: make(chan struct{}), ready: make(chan struct{}), moved: make(chan struct{}),
		refusedCh: make(chan struct{})}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.connID = randomHex(8)
	c.topics.req = wire.SessionTopic(cfg.User, cfg.Session, wire.LeafReq)
	c.topics.res = wire.SessionTopic(cfg.User, cfg.Session, wire.LeafRes)
	c.topics.tick = wire.SessionTopic(cfg.User, cfg.Session, wire.LeafTick)
	c.topics.presence = wire.SessionTopic(cfg.User, cfg.Session, wire.LeafPresence)
	// Explicit topics, not sessions/U/S/+: mochi v2.7.9 reads a topic's
	// retained path without a lock when a wildcard filter scans it, racing
	// with the broker's retained presence updates.
	c.topics.notify = wire.SessionTopic(cfg.User, cfg.Session, wire.LeafNotify)
	c.topics.snapshot = wire.SessionTopic(cfg.User, cfg.Session, wire.LeafSnapshot)
	c.topics.subs = map[string]byte{c.topics.res: 1, c.topics.tick: 0, c.topics.notify: 1, c.topics.snapshot: 0}
	c.snap.blob = cfg.Snapshot
	clientID := cfg.ClientID
	if clientID == "" {
		clientID = "tether-" + cfg.User + "-" + randomHex(6)
	}
	will, _ := json.Marshal(map[string]string{"state": "offline", "conn": c.connID})
	opts := paho.NewClientOptions().
		AddBroker(cfg.URL).SetClientID(clientID).
		SetUsername(cfg.User).SetPassword(cfg.Token).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetStore(noStore{}). // no replays by paho: see noStore
		SetKeepAlive(cfg.KeepAlive).
		SetPingTimeout(cfg.KeepAlive).
		SetConnectTimeout(cfg.RequestTimeout).
		SetAutoReconnect(true).SetMaxReconnectInterval(2*time.Second).
		SetOrderMatters(true). // our handler never blocks, and notifications must stay in order
		SetWill(c.topics.presence, string(will), 1, false).
		SetDefaultPublishHandler(c.onMessage). // every topic: see onConnect
		SetOnConnectHandler(c.onConnect).
		SetConnectionLostHandler(func(paho.Client, error) { c.notReady() }).
		SetConnectionNotificationHandler(c.onConnectionNotification).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { c.notReady() })
	if cfg.TLSConfig != nil {
		opts.SetTLSConfig(cfg.TLSConfig)
	}
	pahoconn.Use(opts)
	c.mqtt = paho.NewClient(opts)
	c.ctx, c.cancel = context.WithCancel(context.Background()) // before Connect: onConnect waits on it
	tok := c.mqtt.Connect()
	if !waitToken(ctx, tok) {
		c.cancel()
		c.mqtt.Disconnect(0)
		return nil, fmt.Errorf("client: connect %s: %w", cfg.URL, context.Cause(ctx))
	}
	if err := tok.Error(); err != nil {
		c.cancel()
		return nil, fmt.Errorf("client: connect %s: %w", cfg.URL, err)
	}
	select { // replies must have somewhere to arrive before the first request
	case <-c.subscribed:
	case <-ctx.Done():
		c.cancel()
		c.mqtt.Disconnect(0)
		return nil, fmt.Errorf("client: subscribe to %s: %w", c.topics.res, context.Cause(ctx))
	}
	c.lastTick.Store(time.Now().UnixNano())
	c.interval.Store(int64(cfg.TickInterval))
	c.wg.Add(3)
	go c.watchdog()
	go c.deliver()
	go c.acker()
	return c, nil
}

// onConnectionNotification reports a reconnect the broker refused for the
// credentials (a revoked or expired token, or a broker that cannot check
// it): requests fail at once meanwhile instead of waiting for a connection
// that may never come, and the application is told (EventRefused). The
// client keeps trying: a refusal may be the broker's passing fault.
func (c *Client) onConnectionNotification(_ paho.Client, n paho.ConnectionNotification) {
	f, ok := n.(paho.ConnectionNotificationFailed)
	if !ok || !(errors.Is(f.Reason, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(f.Reason, packets.ErrorRefusedNotAuthorised)) {
		return
	}
	if c.gen.Load() == 0 || !c.refused.CompareAndSwap(false, true) {
		return // the first connect (Dial returns the error), or told already
	}
	c.log.Error("the broker refused this client's credentials; still trying", "error", f.Reason)
	c.mu.Lock()
	close(c.refusedCh)
	c.mu.Unlock()
	c.emit(EventRefused)
}

// accepted ends a refusal once a connection is accepted again.
func (c *Client) accepted() {
	if c.refused.CompareAndSwap(true, false) {
		c.mu.Lock()
		c.refusedCh = make(chan struct{})
		c.mu.Unlock()
		c.log.Info("the broker accepts this client's credentials again")
	}
}

func (c *Client) setReady() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
}

// notReady runs when paho reports a connection lost, and before each
// reconnect attempt. Paho reports the loss from a goroutine of its own,
// started beside the one that reconnects: the report may come after the
// next connection is up, and even after its onConnect made the client
// ready. So a call finding a connection open changes nothing (c.mu orders
// the check against setReady): the lost one is not the current one, and
// the reconnect attempt before it, which paho runs in order, already
// made the client wait for that connection's subscriptions.
func (c *Client) notReady() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mqtt.IsConnectionOpen() {
		return
	}
	select {
	case <-c.ready:
		c.ready = make(chan struct{})
	default:
	}
}

func (c *Client) readyChan() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// onConnect runs after every (re)connect: a clean session has no
// subscriptions, so subscribe again, then resend what is safe to resend.
func (c *Client) onConnect(m paho.Client) {
	c.accepted()
	// No handler per topic: paho would match every message against each
	// subscription's filter, part by part; the default handler, onMessage,
	// tells the session's topics apart by name.
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		tok := m.SubscribeMultiple(c.topics.subs, nil)
		if tok.WaitTimeout(c.cfg.RequestTimeout) && tok.Error() == nil {
			break
		}
		c.log.Warn("subscribe failed; trying again", "error", tok.Error(), "in", delay)
		if !m.IsConnectionOpen() {
			return // the next connect subscribes again
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	gen := c.gen.Add(1)
	defer c.setReady()
	if gen == 1 {
		close(c.subscribed)
		return
	}
	c.mu.Lock()
	var again [][]byte
	for id, p := range c.pending {
		switch {
		case p.gen >= gen:
			// sent on this connection already
		case p.resend:
			p.gen = gen
			again = append(again, p.payload)
		default:
			p.done <- reply{Error: &wire.Error{Code: "connection_lost"}}
			delete(c.pending, id)
		}
	}
	c.mu.Unlock()
	for _, payload := range again {
		m.Publish(c.topics.req, 0, false, payload)
	}
}

func (c *Client) onMessage(_ paho.Client, msg paho.Message) {
	switch msg.Topic() {
	case c.topics.res:
		var res reply
		if err := json.Unmarshal(msg.Payload(), &res); err != nil {
			c.log.Warn("undecodable reply", "error", err)
			return
		}
		if res.Superseded != "" {
			if res.Error != nil && res.Error.Code == wire.CodeStaleNonce {
				c.takenOver(res.Superseded) // the broker's word that another begin replaced this instance
			}
			return
		}
		var id string
		if json.Unmarshal(res.ID, &id) != nil {
			return
		}
		c.mu.Lock()
		p := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if p != nil {
			if p.onOK != nil && res.Error == nil {
				p.onOK(res.OK)
			}
			p.done <- res
		}
	case c.topics.tick:
		var t Tick
		if err := json.Unmarshal(msg.Payload(), &t); err != nil {
			return
		}
		c.gotTick(t)
	case c.topics.snapshot:
		var sn struct {
			Version uint64 `json:"version"`
			Blob    string `json:"blob"`
		}
		if err := json.Unmarshal(msg.Payload(), &sn); err != nil || sn.Blob == "" {
			return
		}
		c.mu.Lock()
		newer := sn.Version > c.snap.version
		if newer {
			c.snap.version, c.snap.blob = sn.Version, sn.Blob
		}
		c.mu.Unlock()
		if newer && c.cfg.OnSnapshot != nil {
			c.cfg.OnSnapshot(sn.Blob)
		}
	case c.topics.notify:
		inst := c.instance.Load()
		if inst == 0 || inst == c.stale.Load() {
			return // not begun, or taken over: these are another instance's (the topic is shared)
		}
		n, err := wire.DecodeNotification(msg.Payload())
		if err != nil || n.Seq == 0 {
			c.log.Warn("undecodable notification", "error", err)
			return
		}
		select {
		case c.inbox <- inboxItem{n: n, instance: inst}:
		default:
			// The broker sends at most its delivery window unacknowledged;
			// anything beyond is redelivered after the next begin.
			c.log.Warn("notification inbox full; dropped until redelivered", "seq", n.Seq)
		}
	}
}

// inboxItem is a notification and the instance it arrived under.
type inboxItem struct {
	n        wire.Notification
	instance uint64
}

// deliver passes notifications to the application in order, each seq once
// per instance. A new instance starts counting from the broker's acked seq
// (everything after it is sent again); what is still in the inbox from an
// older instance is dropped (the new one gets it again).
func (c *Client) deliver() {
	defer c.wg.Done()
	var cur, last uint64
	for {
		var it inboxItem
		select {
		case <-c.ctx.Done():
			return
		case it = <-c.inbox:
		}
		if it.instance < cur || it.instance == c.stale.Load() {
			continue
		}
		if it.instance > cur {
			cur, last = it.instance, c.acked.Load()
		}
		n := it.n
		if n.Seq <= last {
			continue // a redelivery of something already handed over
		}
		if n.Prev > last {
			// Something sent before n never arrived. Acks being cumulative,
			// n must wait: ask for everything after the acked seq again.
			c.log.Warn("notification gap; asking for a resend", "seq", n.Seq, "prev", n.Prev, "last", last)
			c.gaps.Add(1)
			c.kickAcker()
			continue
		}
		last = n.Seq
		c.mu.Lock()
		current := it.instance == c.instance.Load() && it.instance != c.stale.Load()
		if current { // offered from now on: Ack may cover it
			c.handed = max(c.handed, n.Seq)
		}
		moved := c.moved
		c.mu.Unlock()
		if !current {
			continue
		}
		select {
		case <-moved:
			continue // moved on between the check and now: with a reader waiting, the select below could still pick the send
		default:
		}
		select {
		case <-c.ctx.Done():
			return
		case c.notes <- Notification{Seq: n.Seq, Data: n.Data, Time: time.UnixMilli(n.TS), instance: it.instance}:
		case <-moved:
			// A Begin or a takeover while it was offered: it is no longer
			// this instance's to hand over (the new one gets it again).
		}
	}
}

// Notifications delivers the session's notifications in seq order without
// duplicates. The application acknowledges with Ack (or uses
// HandleNotifications, which acks for it); unacknowledged ones are
// delivered again to the next Begin, here or on another device.
func (c *Client) Notifications() <-chan Notification { return c.notes }

// Ack acknowledges every notification up to seq upto (cumulative); the
// broker removes them from the queue. A seq above what the current
// instance has handed over (an older instance's, after a Begin on another
// broker) is ignored. Acknowledge what you received since the last
// Begin; HandleNotifications does it for you. It is sent in the background and
// coalesced (see Config.AckDelay), so it never waits for the broker.
func (c *Client) Ack(upto uint64) {
	c.mu.Lock()
	beyond := upto > c.handed
	c.mu.Unlock()
	if beyond {
		// Not this instance's: a seq of an older one, numbered by another
		// broker. Acking it here would remove entries nobody has seen.
		c.log.Warn("ack beyond what this instance handed over; ignored", "upto", upto)
		return
	}
	raise(&c.ackWant, upto)
	c.kickAcker()
}

func (c *Client) kickAcker() {
	select {
	case c.ackKick <- struct{}{}:
	default:
	}
}

// HandleNotifications calls fn for each notification, in order, until ctx
// ends, acking each after fn returns nil. If fn fails, HandleNotifications
// returns its error and the notification is not acked: the next call
// hands it to fn first (in the same instance; after a Begin it comes back
// from the broker), so nothing after it is acked past it.
func (c *Client) HandleNotifications(ctx context.Context, fn func(Notification) error) error {
	for {
		n, ok := c.takeHeld()
		if !ok {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.ctx.Done():
				return ErrClosed
			case n = <-c.notes:
			}
			if n.instance != c.instance.Load() || n.instance == c.stale.Load() {
				continue // offered before a Begin or a takeover: not this instance's
			}
		}
		if err := fn(n); err != nil {
			c.mu.Lock()
			c.held = &n
			c.mu.Unlock()
			return err
		}
		if n.instance == c.instance.Load() { // a Begin meanwhile: the new instance gets it again
			c.Ack(n.Seq)
		}
	}
}

// takeHeld returns the notification whose handler failed last, if it is
// still the current instance's (a Begin since redelivers it anyway).
func (c *Client) takeHeld() (Notification, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.held
	c.held = nil
	if h == nil || h.instance != c.instance.Load() || h.instance == c.stale.Load() {
		return Notification{}, false
	}
	return *h, true
}

// acker sends the highest wanted ack, one at a time, asking for a resend
// when a gap was seen since the last one it asked for.
func (c *Client) acker() {
	defer c.wg.Done()
	var retry time.Duration
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.ackKick:
		}
		for {
			if !c.ackWait() {
				return
			}
			// The nonce first: a Begin after it makes this ack stale (and
			// harmless), never the old instance's want under the new nonce.
			nonce := c.Nonce()
			want, gaps := c.ackWant.Load(), c.gaps.Load()
			resend := gaps > c.resent.Load()
			if want <= c.ackSent.Load() && !resend {
				break
			}
			if nonce == "" {
				break // the next begin sends everything unacked anyway
			}
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
			err := c.sendAck(ctx, nonce, want, resend)
			cancel()
			var refused *Error
			if errors.Is(err, ErrClosed) || errors.Is(err, ErrRefused) {
				break // the next begin, or the next connection's, sends it
			}
			if errors.As(err, &refused) && refused.Code != wire.CodeInternal {
				// The broker answered (stale_nonce: taken over; session_expired;
				// a bad ack): sending it again cannot help. The next begin
				// redelivers what was not acknowledged. (internal, a store
				// failure, is worth another try.)
				c.log.Warn("ack refused", "upto", want, "error", err)
				break
			}
			if err != nil {
				// The broker keeps its window full until this ack arrives,
				// and redelivers only what was already handed over: send
				// it again, for as long as the instance lives.
				retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
				c.log.Warn("ack failed; trying again", "upto", want, "error", err, "in", retry)
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(retry):
				}
				continue
			}
			retry = 0
			raise(&c.resent, gaps)
		}
	}
}

// sendAck acknowledges up to upto under nonce and records it as sent.
func (c *Client) sendAck(ctx context.Context, nonce string, upto uint64, resend bool) error {
	if err := c.request(ctx, wire.Request{Op: wire.OpAck, Nonce: nonce, Upto: &upto, Resend: resend}, true, nil); err != nil {
		return err
	}
	c.mu.Lock()
	if c.nonce == nonce { // not an older instance's, confirmed after a Begin reset the count
		raise(&c.ackSent, upto)
	}
	c.mu.Unlock()
	if c.cfg.OnAcked != nil {
		c.cfg.OnAcked(upto)
	}
	return nil
}

// ackWait holds the next ack back for up to AckDelay while holdAck says
// it may wait for more. It returns false when the client is closing.
func (c *Client) ackWait() bool {
	if c.cfg.AckDelay <= 0 || !c.holdAck() {
		return true
	}
	timer := time.NewTimer(c.cfg.AckDelay)
	defer timer.Stop()
	for c.holdAck() {
		select {
		case <-c.ackKick: // more handled: look again
		case <-timer.C:
			return true
		case <-c.ctx.Done():
			return false
		}
	}
	return true
}

// holdAck reports whether an ack is pending that may wait for more: no
// resend is asked for, the broker said its window, and less than half of
// it is unacknowledged (the other half keeps coming meanwhile).
func (c *Client) holdAck() bool {
	want, sent := c.ackWant.Load(), c.ackSent.Load()
	if want <= sent || c.gaps.Load() > c.resent.Load() {
		return false
	}
	w := uint64(c.window.Load())
	return want-sent < w/2
}

// gotTick records a sign of life and passes the tick on (dropping it if the
// application is not reading).
func (c *Client) gotTick(t Tick) {
	c.lastTick.Store(time.Now().UnixNano())
	if c.lost.CompareAndSwap(true, false) {
		c.emit(EventRecovered)
	}
	select {
	case c.ticks <- t:
	default:
	}
}

func (c *Client) emit(e Event) {
	select {
	case c.events <- e:
	default:
	}
}

// watchdog pings the current instance every interval and reports
// EventLost when no tick came for LostAfter intervals.
func (c *Client) watchdog() {
	defer c.wg.Done()
	for {
		every := time.Duration(c.interval.Load())
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(every):
		}
		if c.Nonce() == "" {
			// No instance, no ticks to expect: silence counts from the next Begin.
			c.lastTick.Store(time.Now().UnixNano())
			continue
		}
		silent := time.Since(time.Unix(0, c.lastTick.Load()))
		if silent > time.Duration(c.cfg.LostAfter)*every && c.lost.CompareAndSwap(false, true) {
			c.emit(EventLost)
		}
		if !c.cfg.ManualPing && c.Nonce() != "" && c.mqtt.IsConnectionOpen() {
			go func() {
				ctx, cancel := context.WithTimeout(c.ctx, every)
				defer cancel()
				_, _ = c.Ping(ctx)
			}()
		}
	}
}

// pace adopts the broker's timings: ping at the tick interval, and at least
// three times within the liveness so the sweep never detaches a live device.
func (c *Client) pace(tickMs, livenessMs int64) {
	every := time.Duration(tickMs) * time.Millisecond
	if l := time.Duration(livenessMs) * time.Millisecond / 3; l > 0 && (every <= 0 || l < every) {
		every = l
	}
	if every > 0 {
		c.interval.Store(int64(every))
	}
}

// Ticks delivers the broker's ticks (and ping replies). Slow readers miss ticks, not the connection.
func (c *Client) Ticks() <-chan Tick { return c.ticks }

// Events delivers EventLost, EventRecovered, EventTakenOver and EventRefused.
func (c *Client) Events() <-chan Event { return c.events }

// Nonce is the current instance's nonce, empty before Begin, after End and
// once the instance was taken over (EventTakenOver).
func (c *Client) Nonce() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nonce
}

// forgetSnapshot drops blob, which the broker refused (expired, sealed with
// a key it does not hold, or it has no keys): presented again it would
// fail every later Begin. The application's copy is left alone: a broker
// with the right key may still restore from it, and the next snapshot
// replaces it.
func (c *Client) forgetSnapshot(blob string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap.blob == blob {
		c.snap.blob, c.snap.version = "", 0 // this broker's snapshots count on from its own version
	}
}

// Snapshot is the latest sealed snapshot of the session this client holds
// (empty if none): what Begin presents to restore the session elsewhere.
func (c *Client) Snapshot() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap.blob
}

// SetCursor sets what the user is looking at; the next ping reports it.
func (c *Client) SetCursor(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.cursor = b
	c.mu.Unlock()
	return nil
}

// takenOver ends the instance with nonce, if it is still this client's
// current one: the broker said another instance replaced it (its notice,
// or stale_nonce to a request). Its notifications are no longer handed
// over (they are the new instance's), and EventTakenOver tells the
// application.
func (c *Client) takenOver(nonce string) {
	c.mu.Lock()
	if nonce != "" && c.nonce != nonce {
		// Maybe this client's own begin whose reply is still on its way
		// (the notice overtook it): the reply's onOK looks here.
		if c.replaced = append(c.replaced, nonce); len(c.replaced) > 8 {
			c.replaced = c.replaced[1:]
		}
	}
	if nonce == "" || c.nonce != nonce {
		c.mu.Unlock()
		return
	}
	c.nonce, c.lostTo = "", true
	c.stale.Store(c.instance.Load())
	c.moveLocked()
	c.mu.Unlock()
	c.log.Warn("another instance took the session over; begin again", "session", c.cfg.Session)
	c.emit(EventTakenOver)
}

// moveLocked tells deliver the instance changed: what it offers now is the
// old one's. c.mu is held.
func (c *Client) moveLocked() {
	close(c.moved)
	c.moved = make(chan struct{})
}

// noInstance is the error of a request without a current instance:
// ErrStaleNonce once the last one was taken over (as the broker would
// answer), so that the crash discipline sees the same error either way;
// else ErrNotBegun.
func (c *Client) noInstance() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lostTo {
		return &Error{Code: wire.CodeStaleNonce, Message: "another instance took the session over; begin again"}
	}
	return ErrNotBegun
}

// Begin starts a new instance of the session and returns the memento and
// phase to resume from. A begin is not resent after a reconnect (that would
// start a second instance): it fails with ErrConnectionLost instead. If
// another device began the session before this begin was answered, Begin
// succeeds and EventTakenOver follows at once.
func (c *Client) Begin(ctx context.Context) (Begun, error) {
	var b Begun
	// The instance takes over as the reply is read, before the queued
	// notifications that follow it: from here on, notifications count from
	// the broker's acked seq (everything after it is sent again).
	onOK := func(ok json.RawMessage) {
		var nb Begun
		if json.Unmarshal(ok, &nb) != nil {
			return
		}
		c.mu.Lock() // the instance's ack state changes as one (see sendAck, Ack, deliver)
		c.nonce, c.nextSeq, c.lostTo, c.handed = nb.Nonce, nb.NextSeq, false, nb.Acked
		replaced := slices.Contains(c.replaced, nb.Nonce)
		c.acked.Store(nb.Acked)
		c.ackWant.Store(nb.Acked)
		c.ackSent.Store(nb.Acked)
		c.window.Store(int64(nb.Window))
		c.instance.Add(1)
		c.moveLocked()
		c.mu.Unlock()
		if replaced {
			// Another device began between this begin and its reply: the
			// broker's notice came first, and this instance is dead at birth.
			c.takenOver(nb.Nonce)
		}
	}
	restore := c.Snapshot()
	if err := c.requestWith(ctx, wire.Request{Op: wire.OpBegin, Restore: restore}, false, &b, onOK); err != nil {
		if restore != "" && (errors.Is(err, &Error{Code: wire.CodeBadRequest}) || errors.Is(err, &Error{Code: wire.CodeTooLarge})) {
			c.forgetSnapshot(restore)
		}
		return b, err
	}
	c.pace(b.TickIntervalMs, b.LivenessMs)
	return b, nil
}

// Call makes an exactly-once call of method with args; memento, when not
// nil, is committed with it. The call is numbered (seq) and resent with
// the same seq after a reconnect, so a network blip never runs it twice:
// a retry gets the stored reply. It returns the handler's reply (JSON).
// ErrStaleNonce means another instance took over: crash and begin again.
// A connected Call sends the request whatever ctx says; if ctx ends before
// the reply, Call returns once the request is written out, so the call
// may have run (a retry with the same seq tells).
func (c *Client) Call(ctx context.Context, method string, args, memento any) (json.RawMessage, error) {
	req := wire.Request{Op: wire.OpCall, Method: method}
	var err error
	if args != nil {
		if req.Args, err = json.Marshal(args); err != nil {
			return nil, fmt.Errorf("client: call %s args: %w", method, err)
		}
	}
	if memento != nil {
		if req.Memento, err = json.Marshal(memento); err != nil {
			return nil, fmt.Errorf("client: call %s memento: %w", method, err)
		}
	}
	c.callMu.Lock()
	defer c.callMu.Unlock()
	c.mu.Lock()
	req.Nonce, req.Seq = c.nonce, c.nextSeq
	c.mu.Unlock()
	if req.Nonce == "" {
		return nil, c.noInstance()
	}
	var out json.RawMessage
	err = c.request(ctx, req, true, &out)
	var be *Error
	if err == nil || errors.As(err, &be) && be.Code != wire.CodeStaleNonce {
		// The broker decided this seq (ran it, or refused it for good): the next call takes the next seq.
		c.mu.Lock()
		if c.nonce == req.Nonce && c.nextSeq == req.Seq {
			c.nextSeq++
		}
		c.mu.Unlock()
	}
	return out, err
}

// Ping refreshes liveness (with the cursor, if set) and returns a tick.
func (c *Client) Ping(ctx context.Context) (Tick, error) {
	var t Tick
	c.mu.Lock()
	req := wire.Request{Op: wire.OpPing, Nonce: c.nonce, Cursor: c.cursor}
	c.cursor = nil
	c.mu.Unlock()
	if req.Nonce == "" {
		return t, c.noInstance()
	}
	err := c.request(ctx, req, true, &t)
	if err == nil {
		c.gotTick(t)
		return t, nil
	}
	c.mu.Lock()
	if c.cursor == nil { // not reported: the next ping carries it, unless SetCursor set a newer one
		c.cursor = req.Cursor
	}
	c.mu.Unlock()
	return t, err
}

// Remember commits memento (and phase, if not nil) under the current instance.
func (c *Client) Remember(ctx context.Context, memento any, phase *string) error {
	m, err := json.Marshal(memento)
	if err != nil {
		return err
	}
	nonce := c.Nonce()
	if nonce == "" {
		return c.noInstance()
	}
	return c.request(ctx, wire.Request{Op: wire.OpRemember, Nonce: nonce, Memento: m, Phase: phase}, true, nil)
}

// End closes the instance cleanly; the session's memento is cleared.
func (c *Client) End(ctx context.Context) error {
	nonce := c.Nonce()
	if nonce == "" {
		return nil
	}
	// What was handled is acknowledged first, not left to a held ack: the
	// next instance would get it again.
	if want := c.ackWant.Load(); want > c.ackSent.Load() && c.gaps.Load() <= c.resent.Load() {
		if err := c.sendAck(ctx, nonce, want, false); err != nil {
			return err
		}
	}
	// The instance is over as the reply is read, before any later message:
	// a background ping that went out with this nonce and comes back
	// stale_nonce must not pass for a takeover.
	return c.requestWith(ctx, wire.Request{Op: wire.OpEnd, Nonce: nonce}, true, nil, func(json.RawMessage) {
		c.mu.Lock()
		if c.nonce == nonce {
			c.nonce = ""
		}
		c.mu.Unlock()
	})
}

// Close disconnects cleanly (no will) and stops the watchdog. It does not
// end the session: a later Begin, here or on another device, resumes it.
// The Notifications, Ticks and Events channels are not closed: a reader
// stops on its own context (HandleNotifications returns ErrClosed).
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.mqtt.Disconnect(250)
		c.wg.Wait()
	})
}

// request publishes req and waits for its reply, decoding ok into out.
func (c *Client) request(ctx context.Context, req wire.Request, resend bool, out any) error {
	return c.requestWith(ctx, req, resend, out, nil)
}

// requestWith is request with a hook run on the message goroutine when the
// ok reply arrives.
func (c *Client) requestWith(ctx context.Context, req wire.Request, resend bool, out any, onOK func(json.RawMessage)) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	if c.refused.Load() {
		return ErrRefused
	}
	c.mu.Lock()
	refused := c.refusedCh
	c.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	// Every device of a session reads the same res topic: ids must be
	// unique across devices, not just on this connection.
	id := c.connID + "." + strconv.FormatUint(c.seq.Add(1), 10)
	req.ID = json.RawMessage(strconv.Quote(id))
	payload, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ready := c.readyChan()
	select {
	case <-ready: // connected: send now, whatever the deadline says
	default: // wait for the connection and its subscriptions (see Client.ready)
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("client: %s: not connected: %w", req.Op, context.Cause(ctx))
		case <-c.ctx.Done():
			return ErrClosed
		case <-refused:
			return ErrRefused
		}
	}
	p := &pending{payload: payload, gen: c.gen.Load(), resend: resend, done: make(chan reply, 1), onOK: onOK}
	c.mu.Lock()
	c.pending[id] = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	// QoS 0: the reply is the acknowledgement, and a request lost with its
	// connection is sent again by onConnect (or fails, for a begin).
	sent := c.mqtt.Publish(c.topics.req, 0, false, payload)
	select {
	case res := <-p.done:
		if res.Error != nil {
			if res.Error.Code == "connection_lost" {
				return ErrConnectionLost
			}
			if res.Error.Code == wire.CodeStaleNonce && req.Nonce != "" {
				c.takenOver(req.Nonce)
			}
			return &Error{Code: res.Error.Code, Message: res.Error.Message}
		}
		if out == nil {
			return nil
		}
		return json.Unmarshal(res.OK, out)
	case <-ctx.Done():
		// Given up on the reply, but not before the request is on the
		// wire (or its connection gone): a caller that crashes now has
		// sent it, as Call promises.
		select {
		case <-sent.Done():
		case <-c.ctx.Done():
		case <-time.After(time.Second):
		}
		return fmt.Errorf("client: %s: %w", req.Op, context.Cause(ctx))
	case <-c.ctx.Done():
		return ErrClosed
	case <-refused:
		return ErrRefused
	}
}

// raise sets v to n if n is larger.
func raise(v *atomic.Uint64, n uint64) {
	for cur := v.Load(); n > cur && !v.CompareAndSwap(cur, n); cur = v.Load() {
	}
}

func waitToken(ctx context.Context, tok paho.Token) bool {
	select {
	case <-tok.Done():
		return true
	case <-ctx.Done():
		return false
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
