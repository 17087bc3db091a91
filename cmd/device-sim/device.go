package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/f47fa0da/tether/client"
)

// slot is one session and the simulated devices that take turns on it:
// a device runs (calls, pings, notifications), crashes and is replaced by
// a fresh one that knows nothing but what begin tells it, or is switched:
// another device begins the same session while the old one still runs.
type slot struct {
	sim           *sim
	i             int
	user, session string
	rng           *rand.Rand // used by the slot's goroutine only

	cur           atomic.Pointer[incarnation]
	waitReconnect atomic.Bool // set at a broker restart, cleared by the first success after it

	mu          sync.Mutex
	ackedCalls  int              // calls whose reply a device got
	maxAcked    uint64           // highest acknowledged seq
	doubles     []string         // replies whose count says an effect ran twice
	lostAtBegin []string         // begins that did not show an acknowledged call
	staleRan    []string         // calls that succeeded under a replaced instance
	notified    map[int64]bool   // notifications PUBACKed by the broker
	received    map[int64]bool   // notifications some device of the session got
	consumed    map[int64]bool   // received, and the broker confirmed an ack covering it: out of the queue for good
	ackedUpto   uint64           // highest seq the broker confirmed as acked (an ack's reply, or a begin's acked)
	pending     int              // notified and not yet consumed
	seqID       map[uint64]int64 // notification seq -> notifier id, across devices and restarts
	idSeq       map[int64]uint64 // the other way
	seqReused   []string         // one seq carrying two notifications, or one notification under two seqs
	disorder    []string         // a device saw a seq not above the one before
	unexpected  []string         // errors a correct broker never returns
	nUnexpected int
}

// incarnation is one simulated device: its own client, connection (and
// link, when crashes drop the socket) and local state, lost when it dies.
type incarnation struct {
	dev    *client.Client
	link   *link
	next   uint64 // seq of its next call, from begin
	cancel context.CancelFunc
	done   chan struct{} // the notification reader has stopped

	mu      sync.Mutex
	lastSeq uint64 // highest notification seq this device saw
}

var errStale = errors.New("stale nonce")

func newSlot(s *sim, i int) *slot {
	return &slot{sim: s, i: i, user: simUser(i), session: "s", rng: rand.New(rand.NewPCG(uint64(s.sc.Seed), uint64(i))),
		notified: map[int64]bool{}, received: map[int64]bool{}, consumed: map[int64]bool{}, seqID: map[uint64]int64{}, idSeq: map[int64]uint64{}}
}

// after returns a random pause with the given mean (exponential), or a
// channel that never fires for mean 0.
func (s *slot) after(mean time.Duration) <-chan time.Time {
	if mean <= 0 {
		return nil
	}
	return time.After(time.Duration(s.rng.ExpFloat64() * float64(mean)))
}

// run drives the slot's devices until ctx (the load phase) ends, leaving
// the last device running so that the drain can finish.
func (s *slot) run(ctx, life context.Context) {
	sc := s.sim.sc
	if sc.Ramp > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(s.rng.Int64N(int64(sc.Ramp)))):
		}
	}
	inc := s.beginLoop(ctx)
	if inc == nil {
		return
	}
	callT, pingT, crashT, switchT := s.after(sc.CallEvery), s.after(sc.PingEvery), s.after(sc.CrashEvery), s.after(sc.SwitchEvery)
	for ctx.Err() == nil {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-callT:
			err = s.call(ctx, inc)
			callT = s.after(sc.CallEvery)
		case <-pingT:
			err = s.ping(ctx, inc)
			pingT = s.after(sc.PingEvery)
		case <-crashT:
			s.crash(inc)
			s.sim.crashes.Add(1)
			inc = nil
			crashT = s.after(sc.CrashEvery)
		case <-switchT:
			inc = s.switchDevice(ctx, inc)
			switchT = s.after(sc.SwitchEvery)
		}
		if err != nil && ctx.Err() == nil {
			// stale (nobody else should have taken over) or a broker error: this device is done
			s.crash(inc)
			inc = nil
		}
		if inc == nil {
			if inc = s.beginLoop(ctx); inc == nil {
				return
			}
		}
	}
}

// beginLoop starts a new device, retrying while the broker is away, until ctx ends.
func (s *slot) beginLoop(ctx context.Context) *incarnation {
	for ctx.Err() == nil {
		inc, err := s.begin(ctx)
		if err == nil {
			s.cur.Store(inc)
			return inc
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// begin dials a fresh device and begins the session: the new device knows
// only what begin says (memento, next seq), as after a real crash.
func (s *slot) begin(ctx context.Context) (*incarnation, error) {
	url, l, err := s.sim.deviceURL()
	if err != nil {
		return nil, err
	}
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = url, s.user, s.sim.tokens[s.user], s.session
	cfg.RequestTimeout, cfg.KeepAlive = 5*time.Second, 5*time.Second
	cfg.OnAcked = s.ackedUpTo
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dev, err := client.Dial(dctx, cfg)
	if err != nil {
		if l != nil {
			l.cut()
		}
		return nil, err
	}
	t0 := time.Now()
	b, err := dev.Begin(dctx)
	if err != nil {
		if l != nil {
			l.cut()
		}
		s.sim.closeLater(dev)
		return nil, err
	}
	s.sim.lat.begin.Add(time.Since(t0))
	s.sim.begins.Add(1)
	s.ok()
	s.checkBegin(b)
	s.ackedUpTo(b.Acked)
	ictx, icancel := context.WithCancel(context.Background())
	inc := &incarnation{dev: dev, link: l, next: b.NextSeq, cancel: icancel, done: make(chan struct{})}
	go s.readNotifications(ictx, inc)
	return inc, nil
}

// checkBegin compares what begin says with what devices were told: the
// memento is the last committed seq, and every acknowledged call is in.
func (s *slot) checkBegin(b client.Begun) {
	last := b.NextSeq - 1
	var memento uint64
	if len(b.Memento) > 0 && string(b.Memento) != "null" {
		if err := json.Unmarshal(b.Memento, &memento); err != nil {
			s.unexpectedf("begin: memento %s is not a seq", b.Memento)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if memento != last {
		s.lostAtBegin = append(s.lostAtBegin, fmt.Sprintf("begin: memento %d but next_seq %d", memento, b.NextSeq))
	}
	if s.maxAcked > last {
		s.lostAtBegin = append(s.lostAtBegin, fmt.Sprintf("begin: call %d was acknowledged but next_seq is %d", s.maxAcked, b.NextSeq))
	}
}

// call makes one exactly-once sim.add under inc, resending the same
// request (same seq, args and memento) after timeouts and reconnects.
func (s *slot) call(ctx context.Context, inc *incarnation) error {
	seq := inc.next
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		t0 := time.Now()
		out, err := inc.dev.Call(cctx, "sim.add", addArgs{K: seq}, seq)
		cancel()
		var be *client.Error
		switch {
		case err == nil:
			s.sim.lat.call.Add(time.Since(t0))
			s.sim.calls.Add(1)
			s.ok()
			inc.next++
			count, derr := decodeCount(out)
			s.mu.Lock()
			s.ackedCalls++
			s.maxAcked = max(s.maxAcked, seq)
			switch {
			case derr != nil:
				s.unexpectedLocked("call %d: reply %s: %v", seq, out, derr)
			case count != seq:
				s.doubles = append(s.doubles, fmt.Sprintf("call seq %d answered count %d", seq, count))
			}
			s.mu.Unlock()
			return nil
		case errors.Is(err, client.ErrStaleNonce):
			return errStale
		case errors.As(err, &be):
			s.unexpectedf("call %d: %v", seq, err)
			return err
		case ctx.Err() != nil:
			return ctx.Err() // the run is ending: this call's fate stays unknown
		case errors.Is(err, client.ErrClosed):
			return err
		}
		// a timeout or a lost connection: send the same call again
	}
}

func (s *slot) ping(ctx context.Context, inc *incarnation) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err := inc.dev.Ping(pctx)
	var be *client.Error
	switch {
	case err == nil:
		s.sim.lat.ping.Add(time.Since(t0))
		s.ok()
		return nil
	case errors.Is(err, client.ErrStaleNonce):
		return errStale
	case errors.As(err, &be):
		s.unexpectedf("ping: %v", err)
		return err
	}
	return nil // a timeout while the broker is away: the next ping will tell
}

// switchDevice begins the session on a second device while old still
// runs; old's next call must then fail with stale_nonce and run nothing.
func (s *slot) switchDevice(ctx context.Context, old *incarnation) *incarnation {
	inc := s.beginLoop(ctx)
	if inc == nil {
		return old
	}
	s.sim.switches.Add(1)
	if old != nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := old.dev.Call(cctx, "sim.add", addArgs{K: old.next}, old.next)
		cancel()
		if err == nil {
			s.mu.Lock()
			s.staleRan = append(s.staleRan, fmt.Sprintf("call seq %d ran under a replaced instance: %s", old.next, out))
			s.mu.Unlock()
		}
		old.cancel()
		s.sim.closeLater(old.dev) // a clean goodbye: the old device is put away
		if old.link != nil {
			go func() { <-old.done; old.link.cut() }()
		}
	}
	return inc
}

// crash kills inc without a goodbye: its socket dies (drop) or it closes
// without End (close); its local state is gone either way.
func (s *slot) crash(inc *incarnation) {
	if inc == nil {
		return
	}
	s.cur.CompareAndSwap(inc, nil)
	inc.cancel()
	if inc.link != nil {
		inc.link.cut()
	}
	s.sim.closeLater(inc.dev)
}

// readNotifications is a device's notification reader: record, then ack.
func (s *slot) readNotifications(ctx context.Context, inc *incarnation) {
	defer close(inc.done)
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-inc.dev.Notifications():
			s.gotNotification(inc, n)
			inc.dev.Ack(n.Seq)
		}
	}
}

// noteData is what the built-in notifier sends.
type noteData struct {
	R string `json:"r"` // the run that sent it (a reused data directory may hold an earlier run's)
	N int64  `json:"n"` // notifier's id of the notification
	T int64  `json:"t"` // unix nanos at publish
}

func (s *slot) gotNotification(inc *incarnation, n client.Notification) {
	now := time.Now()
	var d noteData
	if err := json.Unmarshal(n.Data, &d); err != nil {
		s.unexpectedf("notification %d: data %s: %v", n.Seq, n.Data, err)
		return
	}
	if d.R != s.sim.runID {
		return // an earlier run's, left in a reused data directory: acked, not counted
	}
	inc.mu.Lock()
	prev := inc.lastSeq
	inc.lastSeq = max(prev, n.Seq)
	inc.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n.Seq <= prev {
		s.disorder = append(s.disorder, fmt.Sprintf("seq %d after %d on one device", n.Seq, prev))
	}
	if id, ok := s.seqID[n.Seq]; ok && id != d.N {
		s.seqReused = append(s.seqReused, fmt.Sprintf("seq %d carried notification %d and later %d", n.Seq, id, d.N))
	}
	if seq, ok := s.idSeq[d.N]; ok && seq != n.Seq {
		// A duplicate no device can drop by seq: the broker queued it twice.
		s.seqReused = append(s.seqReused, fmt.Sprintf("notification %d came as seq %d and as seq %d", d.N, seq, n.Seq))
	}
	s.seqID[n.Seq], s.idSeq[d.N] = d.N, n.Seq
	if n.Seq <= s.ackedUpto {
		s.consume(d.N) // an ack covering it is confirmed already
	}
	if s.received[d.N] {
		return
	}
	s.received[d.N] = true
	s.sim.delivered.Add(1)
	s.sim.lat.notify.Add(now.Sub(time.Unix(0, d.T)))
}

// ackedUpTo records that the broker confirmed the session acked up to
// upto (an ack's reply, a begin's acked seq): every notification a device
// got under those seqs is consumed. Only that counts as delivered: one a
// device got and died before acking must come again to a later begin, and
// a broker that dropped it instead is caught.
func (s *slot) ackedUpTo(upto uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seq := s.ackedUpto + 1; seq <= upto; seq++ {
		if id, ok := s.seqID[seq]; ok {
			s.consume(id)
		}
	}
	s.ackedUpto = max(s.ackedUpto, upto)
}

// consume marks notification id consumed; s.mu is held.
func (s *slot) consume(id int64) {
	if s.consumed[id] {
		return
	}
	s.consumed[id] = true
	if s.notified[id] {
		s.pending--
		s.sim.pending.Add(-1)
	}
}

// gotPUBACK records that the broker acknowledged notification id.
func (s *slot) gotPUBACK(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notified[id] {
		return
	}
	s.notified[id] = true
	if !s.consumed[id] {
		s.pending++
		s.sim.pending.Add(1)
	}
}

func (s *slot) pendingNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// ok notes a successful exchange with the broker, for the reconnect time.
func (s *slot) ok() {
	if s.waitReconnect.CompareAndSwap(true, false) {
		s.sim.lat.reconnect.Add(time.Since(time.Unix(0, s.sim.restartedAt.Load())))
	}
}

func (s *slot) unexpectedf(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unexpectedLocked(format, a...)
}

func (s *slot) unexpectedLocked(format string, a ...any) {
	s.nUnexpected++
	s.sim.unexpected.Add(1)
	if len(s.unexpected) < 5 {
		s.unexpected = append(s.unexpected, s.user+"/"+s.session+": "+fmt.Sprintf(format, a...))
	}
}
