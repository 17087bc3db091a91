package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/sessions"
)

// A device whose instance another device took over is told at once: it
// reports EventTakenOver, its Nonce is empty, it hands none of the new
// instance's notifications to its application, and its calls fail with
// ErrStaleNonce. (Manual pings: the broker's notice, not a ping, tells it.)
func TestTakenOverDeviceStops(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	url := "tcp://" + b.Addrs().MQTT
	a := dial(t, url, token, true)
	other := dial(t, url, token, true)
	_, err := a.Begin(ctx(t))
	require.NoError(t, err)
	_, err = other.Begin(ctx(t))
	require.NoError(t, err)

	require.Equal(t, client.EventTakenOver, nextEvent(t, a, 2*time.Second))
	require.Empty(t, a.Nonce())
	_, err = b.Notify("alice", "lamp", "for the new instance")
	require.NoError(t, err)
	select {
	case n := <-other.Notifications():
		require.Equal(t, uint64(1), n.Seq)
	case <-time.After(5 * time.Second):
		t.Fatal("the new instance did not get its notification")
	}
	select {
	case n := <-a.Notifications():
		t.Fatalf("the taken-over device handed seq %d, the new instance's, to its application", n.Seq)
	case <-time.After(500 * time.Millisecond):
	}
	_, err = a.Call(ctx(t), "nothing", nil, nil)
	require.ErrorIs(t, err, client.ErrStaleNonce, "as the broker would answer: the crash discipline sees one error")

	// Begin again: it is the current instance once more, and the other is told.
	_, err = a.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, client.EventTakenOver, nextEvent(t, other, 2*time.Second))
	require.NotEmpty(t, a.Nonce())
}

// A stale_nonce reply tells a device it was taken over even without the
// broker's notice (here: it was disconnected when the other device began).
func TestStaleReplyMeansTakenOver(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	px := brokertest.NewProxy(t, b.Addrs().MQTT)
	a := dial(t, "tcp://"+px.Addr(), token, true)
	_, err := a.Begin(ctx(t))
	require.NoError(t, err)
	px.Cut() // a reconnects by itself
	other := dial(t, "tcp://"+b.Addrs().MQTT, token, true)
	_, err = other.Begin(ctx(t))
	require.NoError(t, err)
	_, err = a.Ping(ctx(t))
	require.ErrorIs(t, err, client.ErrStaleNonce)
	require.Equal(t, client.EventTakenOver, nextEvent(t, a, 2*time.Second))
	require.Empty(t, a.Nonce())
}

// An ack that fails (the link was down for longer than RequestTimeout) is
// sent again once it can be: the broker keeps its delivery window full
// until it arrives, and the handled notifications it redelivers meanwhile
// are duplicates the client drops, so nothing else would send it.
func TestFailedAckIsSentAgain(t *testing.T) {
	bcfg := tickingConfig(t)
	bcfg.DeliveryWindow = 4
	b := brokertest.Start(t, bcfg)
	px := brokertest.NewProxy(t, b.Addrs().MQTT)
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session = "tcp://"+px.Addr(), "alice", "lamp"
	cfg.Token = brokertest.Token(t, b, "alice", auth.RoleDevice)
	cfg.KeepAlive, cfg.TickInterval = time.Second, tick
	cfg.RequestTimeout = 300 * time.Millisecond
	cfg.AckDelay = 0
	d, err := client.Dial(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	for range 4 {
		_, err := b.Notify("alice", "lamp", "x")
		require.NoError(t, err)
	}
	var last uint64
	for range 4 {
		select {
		case n := <-d.Notifications():
			last = n.Seq
		case <-time.After(5 * time.Second):
			t.Fatal("a notification did not arrive")
		}
	}
	px.Down()
	d.Ack(last)                         // handled; the ack cannot get out
	time.Sleep(1500 * time.Millisecond) // past RequestTimeout: the ack request fails
	px.Up()
	_, err = b.Notify("alice", "lamp", "after the outage")
	require.NoError(t, err)
	select {
	case n := <-d.Notifications():
		require.Equal(t, uint64(5), n.Seq)
	case <-time.After(10 * time.Second):
		out, _ := b.Outq("alice", "lamp", 0)
		t.Fatalf("notification 5 never came: %d entries still queued", len(out))
	}
	s, err := b.Sessions().Get("alice", "lamp")
	require.NoError(t, err)
	require.Equal(t, sessions.StateActive, s.State)
}

// A notification whose HandleNotifications handler failed is handed first
// to the next call, so a retry loop never acks past it.
func TestHandlerErrorHoldsTheNotification(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	d := dial(t, "tcp://"+b.Addrs().MQTT, brokertest.Token(t, b, "alice", auth.RoleDevice), true)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	for _, s := range []string{"first", "second"} {
		_, err := b.Notify("alice", "lamp", s)
		require.NoError(t, err)
	}
	failed := errors.New("not now")
	err = d.HandleNotifications(ctx(t), func(client.Notification) error { return failed })
	require.ErrorIs(t, err, failed)
	hctx, cancel := context.WithCancel(ctx(t))
	var handled []uint64
	err = d.HandleNotifications(hctx, func(n client.Notification) error {
		if handled = append(handled, n.Seq); len(handled) == 2 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []uint64{1, 2}, handled, "the failed one first, then the next")
	require.NoError(t, d.End(ctx(t)))
	out, err := b.Outq("alice", "lamp", 0)
	require.NoError(t, err)
	require.Empty(t, out, "both acknowledged")
}

// A connected client without an instance expects no ticks: it reports no
// EventLost before its first Begin or after End.
func TestNoLostEventWithoutInstance(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	d := dial(t, "tcp://"+b.Addrs().MQTT, brokertest.Token(t, b, "alice", auth.RoleDevice), false)
	noEvent(t, d, 6*tick)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	noEvent(t, d, 2*tick)
	require.NoError(t, d.End(ctx(t)))
	noEvent(t, d, 6*tick)
}

// A first SUBSCRIBE left unanswered past RequestTimeout is retried until
// Dial's context ends; Dial then fails (it used to crash the process).
func TestDialWithUnansweredSubscribe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 4096)
				if _, err := conn.Read(buf); err != nil { // CONNECT
					return
				}
				_, _ = conn.Write([]byte{0x20, 0x02, 0x00, 0x00}) // CONNACK, accepted
				for {                                             // SUBSCRIBE, PINGREQ: never answered
					if _, err := conn.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session, cfg.Token = "tcp://"+ln.Addr().String(), "alice", "lamp", "x"
	cfg.RequestTimeout, cfg.KeepAlive = 200*time.Millisecond, 5*time.Second
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = client.Dial(dctx, cfg)
	require.ErrorContains(t, err, "subscribe")
}

// A notification whose handler failed stays with the instance it came in:
// after a Begin (here, while the handler ran) the new instance gets it
// again from the broker, and the application sees it once.
func TestHeldNotificationStaysWithItsInstance(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	d := dial(t, "tcp://"+b.Addrs().MQTT, brokertest.Token(t, b, "alice", auth.RoleDevice), true)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	_, err = b.Notify("alice", "lamp", "first")
	require.NoError(t, err)
	failed := errors.New("instance gone")
	err = d.HandleNotifications(ctx(t), func(client.Notification) error {
		_, err := d.Begin(ctx(t)) // the crash discipline, while the handler runs
		require.NoError(t, err)
		return failed
	})
	require.ErrorIs(t, err, failed)
	hctx, cancel := context.WithTimeout(ctx(t), time.Second)
	defer cancel()
	var handled []uint64
	_ = d.HandleNotifications(hctx, func(n client.Notification) error {
		handled = append(handled, n.Seq)
		return nil
	})
	require.Equal(t, []uint64{1}, handled, "each seq once")
}

// An ack the broker refuses (here session_expired: the session's window
// ended) is not sent again and again: only failures of the link are.
func TestRefusedAckIsNotRetried(t *testing.T) {
	bcfg := tickingConfig(t)
	bcfg.Sessions.DefaultPolicy.Window = 400 * time.Millisecond
	b := brokertest.Start(t, bcfg)
	var acks atomic.Int32
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session = "tcp://"+b.Addrs().MQTT, "alice", "lamp"
	cfg.Token = brokertest.Token(t, b, "alice", auth.RoleDevice)
	cfg.KeepAlive, cfg.TickInterval, cfg.ManualPing, cfg.AckDelay = time.Second, tick, true, 0
	cfg.Logger = slog.New(countingHandler{msg: "ack refused", n: &acks})
	d, err := client.Dial(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	_, err = b.Notify("alice", "lamp", "x")
	require.NoError(t, err)
	n := <-d.Notifications()
	time.Sleep(800 * time.Millisecond) // past the window
	d.Ack(n.Seq)
	brokertest.WaitFor(t, 3*time.Second, "the refusal", func() bool { return acks.Load() >= 1 })
	time.Sleep(1500 * time.Millisecond) // a retry would have gone by now (backoff from 100 ms)
	require.Equal(t, int32(1), acks.Load(), "sent once")
	_, err = b.Sessions().Get("alice", "lamp")
	require.NoError(t, err)
}

// countingHandler counts log records with message msg.
type countingHandler struct {
	msg string
	n   *atomic.Int32
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// A device whose token is revoked is cut off by the broker, and refused on
// reconnect: it reports EventRefused, and its requests fail with
// ErrRefused at once, one already in flight included, instead of waiting
// for a connection that cannot come.
func TestRevokedDeviceIsRefused(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	secret, tok, err := b.Tokens().Add(auth.NewToken{User: "alice", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	d := dial(t, "tcp://"+b.Addrs().MQTT, secret, true)
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	_, err = b.Tokens().Revoke(tok.ID)
	require.NoError(t, err)
	start := time.Now()
	_, err = d.Call(ctx(t), "any", nil, nil) // the packet the broker cuts the connection on
	require.ErrorIs(t, err, client.ErrRefused)
	require.Less(t, time.Since(start), 5*time.Second, "not after RequestTimeout (10 s)")
	waitForEvent(t, d, client.EventRefused, 5*time.Second)
	start = time.Now()
	_, err = d.Ping(ctx(t))
	require.ErrorIs(t, err, client.ErrRefused)
	require.Less(t, time.Since(start), time.Second, "at once")
}

// A refusal that passes (a broker restarted for a moment on the wrong data
// directory, where the token is unknown) does not strand the device: once
// the right broker is back it carries on by itself.
func TestPassingRefusalIsRecovered(t *testing.T) {
	cfg := tickingConfig(t)
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	cfg.MQTTAddr = b.Addrs().MQTT
	d := dial(t, "tcp://"+cfg.MQTTAddr, token, true)
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	require.NoError(t, b.Close())

	wrong := cfg
	wrong.DataDir = t.TempDir()
	b2, err := broker.Open(wrong)
	require.NoError(t, err)
	waitForEvent(t, d, client.EventRefused, 10*time.Second)
	require.NoError(t, b2.Close())
	brokertest.Start(t, cfg) // the right broker again, where the token is valid
	brokertest.WaitFor(t, 10*time.Second, "the device to carry on", func() bool {
		_, err := d.Ping(ctx(t))
		return err == nil
	})
}

// waitForEvent reads c's events until want comes, failing after timeout.
func waitForEvent(t *testing.T, c *client.Client, want client.Event, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-c.Events():
			if e == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %s within %s", want, timeout)
		}
	}
}
