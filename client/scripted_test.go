package client_test

// Protocol edges the real broker cannot be made to show on cue (a broker
// that fails an ack, another broker's numbering at a begin): a scripted
// broker, plain mochi answering requests as each test says, so that the
// answers and their order are the test's to choose.

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/wire"
)

type scriptedReq struct {
	wire.Request
	raw []byte
}

type scriptedBroker struct {
	srv  *mqtt.Server
	addr string
	mu   sync.Mutex
	reqs []scriptedReq
	// answer returns the reply's ok (or error) for a request, and what to
	// publish on notify after it.
	answer func(r scriptedReq) (ok any, werr *wire.Error, after []wire.Notification)
}

func startScripted(t *testing.T, answer func(r scriptedReq) (any, *wire.Error, []wire.Notification)) *scriptedBroker {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	f := &scriptedBroker{srv: mqtt.New(&mqtt.Options{InlineClient: true}), addr: addr, answer: answer}
	require.NoError(t, f.srv.AddHook(new(auth.AllowHook), nil))
	require.NoError(t, f.srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})))
	in := make(chan []byte, 100)
	require.NoError(t, f.srv.Subscribe("sessions/alice/lamp/req", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		in <- append([]byte(nil), pk.Payload...)
	}))
	go func() {
		for p := range in {
			var r scriptedReq
			_ = json.Unmarshal(p, &r.Request)
			r.raw = p
			f.mu.Lock()
			f.reqs = append(f.reqs, r)
			f.mu.Unlock()
			ok, werr, after := f.answer(r)
			res := map[string]any{"id": r.ID}
			if werr != nil {
				res["error"] = werr
			} else {
				res["ok"] = ok
			}
			b, _ := json.Marshal(res)
			_ = f.srv.Publish("sessions/alice/lamp/res", b, false, 0)
			for _, n := range after {
				_ = f.srv.Publish("sessions/alice/lamp/notify", n.AppendJSON(nil), false, 1)
			}
		}
	}()
	go func() { _ = f.srv.Serve() }()
	t.Cleanup(func() { _ = f.srv.Close() })
	time.Sleep(50 * time.Millisecond)
	return f
}

func (f *scriptedBroker) acks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.reqs {
		if r.Op == wire.OpAck {
			out = append(out, fmt.Sprintf("%s:%d", r.Nonce, *r.Upto))
		}
	}
	return out
}

func scriptedDial(t *testing.T, f *scriptedBroker, delay time.Duration) *client.Client {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session, cfg.Token = "tcp://"+f.addr, "alice", "lamp", "x"
	cfg.ManualPing, cfg.AckDelay = true, delay
	d, err := client.Dial(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

func notes(from, to uint64) []wire.Notification {
	var out []wire.Notification
	for s := from; s <= to; s++ {
		out = append(out, wire.Notification{Seq: s, Prev: s - 1, Data: json.RawMessage(`1`), TS: 1})
	}
	return out
}

// An ack the broker answers with internal (a store failure: nothing was
// committed) is sent again: with the window full, no further notification
// would come to kick the acker, and delivery would stall.
func TestAckRefusedWithInternalIsSentAgain(t *testing.T) {
	var mu sync.Mutex
	acks := 0
	f := startScripted(t, func(r scriptedReq) (any, *wire.Error, []wire.Notification) {
		switch r.Op {
		case wire.OpBegin:
			return map[string]any{"nonce": "n1", "next_seq": 1, "acked": 0, "window": 1, "tick_interval_ms": 5000, "liveness_ms": 60000}, nil, notes(1, 1)
		case wire.OpAck:
			mu.Lock()
			defer mu.Unlock()
			if acks++; acks == 1 {
				return nil, wire.Errorf(wire.CodeInternal, "the broker failed; nothing was committed"), nil
			}
			return map[string]any{"acked": *r.Upto}, nil, nil
		}
		return map[string]any{}, nil, nil
	})
	d := scriptedDial(t, f, 0)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	n := <-d.Notifications()
	d.Ack(n.Seq)
	ok := false
	for i := 0; i < 150 && !ok; i++ {
		time.Sleep(20 * time.Millisecond)
		ok = len(f.acks()) >= 2
	}
	require.True(t, ok, "the ack refused with internal is sent again (acks: %v)", f.acks())
}

// After a renumbering Begin (another broker: acked 3), an Ack of the old
// instance's seq 51 is ignored: it must not remove the new broker's seq 4,
// which the application has not got yet.
func TestAckOfAnOlderNumberingIsIgnored(t *testing.T) {
	begins := 0
	f := startScripted(t, func(r scriptedReq) (any, *wire.Error, []wire.Notification) {
		switch r.Op {
		case wire.OpBegin:
			if begins++; begins == 1 {
				return map[string]any{"nonce": "n1", "next_seq": 1, "acked": 0, "window": 100}, nil, notes(1, 51)
			}
			return map[string]any{"nonce": "n2", "next_seq": 1, "acked": 3, "window": 100}, nil, notes(4, 4)
		case wire.OpAck:
			return map[string]any{"acked": *r.Upto}, nil, nil
		}
		return map[string]any{}, nil, nil
	})
	d := scriptedDial(t, f, 0)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	var last client.Notification
	for i := 0; i < 51; i++ {
		last = <-d.Notifications() // handled; acks held back by the application
	}
	require.Equal(t, uint64(51), last.Seq)
	_, err = d.Begin(ctx(t)) // the application begins again while it handles 51
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // deliver() now waits to hand over the new seq 4
	d.Ack(last.Seq)                    // the old 51 is done
	time.Sleep(300 * time.Millisecond)
	t.Logf("acks: %v", f.acks())
	for _, a := range f.acks() {
		var nonce string
		var upto uint64
		_, err := fmt.Sscanf(strings.Replace(a, ":", " ", 1), "%s %d", &nonce, &upto)
		require.NoError(t, err)
		require.False(t, nonce == "n2" && upto > 3, "the new broker's entries acked unseen (acks %v)", f.acks())
	}
}

// A notification deliver() was already offering when a Begin came is not
// handed to fn: the new instance gets it again, so fn sees each seq once
// per instance, in order.
func TestNotificationOfferedBeforeABeginIsDropped(t *testing.T) {
	f := startScripted(t, func(r scriptedReq) (any, *wire.Error, []wire.Notification) {
		switch r.Op {
		case wire.OpBegin:
			return map[string]any{"nonce": fmt.Sprintf("n%d", len(r.raw)), "next_seq": 1, "acked": 0, "window": 100}, nil, notes(1, 2)
		}
		return map[string]any{"acked": 0}, nil, nil
	})
	d := scriptedDial(t, f, 0)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []uint64
	go func() {
		_ = d.HandleNotifications(ctx(t), func(n client.Notification) error {
			mu.Lock()
			seen = append(seen, n.Seq)
			first := len(seen) == 1
			mu.Unlock()
			if first {
				<-release // the application begins again meanwhile
			}
			return nil
		})
	}()
	time.Sleep(200 * time.Millisecond)
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	close(release)
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []uint64{1, 1, 2}, seen, "1 of the first instance; then the new instance's 1 and 2, not the first's 2")
}

// The same through Notifications(): what deliver() was offering when a
// Begin came is withdrawn, so a reader of the channel gets the new
// instance's notifications from its first one, never the old instance's.
func TestOfferWithdrawnAtABegin(t *testing.T) {
	f := startScripted(t, func(r scriptedReq) (any, *wire.Error, []wire.Notification) {
		if r.Op == wire.OpBegin {
			return map[string]any{"nonce": fmt.Sprintf("n%d", len(r.raw)), "next_seq": 1, "acked": 0, "window": 100}, nil, notes(1, 2)
		}
		return map[string]any{"acked": 0}, nil, nil
	})
	d := scriptedDial(t, f, 0)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, uint64(1), (<-d.Notifications()).Seq)
	time.Sleep(200 * time.Millisecond) // deliver() now offers seq 2 of the first instance
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	for _, want := range []uint64{1, 2} {
		select {
		case n := <-d.Notifications():
			require.Equal(t, want, n.Seq, "the new instance's, from its first")
		case <-time.After(2 * time.Second):
			t.Fatalf("no seq %d from the new instance", want)
		}
	}
}
