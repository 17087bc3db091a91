package client_test

import (
	"context"
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

const tick = 200 * time.Millisecond

// tickingConfig is a test broker that ticks every 200 ms.
func tickingConfig(t *testing.T) broker.Config {
	cfg := brokertest.Config(t)
	cfg.Sessions.TickInterval = tick
	cfg.Sessions.SweepInterval = 50 * time.Millisecond
	cfg.Sessions.DefaultPolicy.Liveness = 2 * time.Second
	return cfg
}

func dial(t *testing.T, url, token string, manualPing bool) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = url, "alice", token, "lamp"
	cfg.KeepAlive, cfg.TickInterval, cfg.LostAfter = time.Second, tick, 3
	cfg.ManualPing = manualPing
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// nextEvent returns the client's next event, failing after timeout.
func nextEvent(t *testing.T, c *client.Client, timeout time.Duration) client.Event {
	t.Helper()
	select {
	case e := <-c.Events():
		return e
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
		return 0
	}
}

// noEvent asserts the client reports nothing for d while ticks flow.
func noEvent(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	select {
	case e := <-c.Events():
		t.Fatalf("unexpected event %s while ticks flow", e)
	case <-time.After(d):
	}
}

// TestEventsWhenTicksStop: the broker's sweep detaches a device that sends
// nothing, so its ticks stop: the client reports EventLost after LostAfter
// tick intervals, and EventRecovered once a ping re-attaches the instance
// and ticks come again.
func TestEventsWhenTicksStop(t *testing.T) {
	b := brokertest.Start(t, tickingConfig(t))
	c := dial(t, "tcp://"+b.Addrs().MQTT, brokertest.Token(t, b, "alice", auth.RoleDevice), true)
	var lastTick atomic.Int64
	go func() {
		for range c.Ticks() {
			lastTick.Store(time.Now().UnixNano())
		}
	}()
	_, err := c.Begin(ctx(t))
	require.NoError(t, err)
	noEvent(t, c, 1200*time.Millisecond) // ticks every 200 ms: never 3 missed

	brokertest.WaitFor(t, 5*time.Second, "the sweep to detach the silent device", func() bool {
		s, err := b.Sessions().Get("alice", "lamp")
		return err == nil && s.State == sessions.StateDetached
	})
	require.Equal(t, client.EventLost, nextEvent(t, c, 3*time.Second))
	silent := time.Since(time.Unix(0, lastTick.Load()))
	require.GreaterOrEqual(t, silent, 3*tick-50*time.Millisecond, "lost only after LostAfter=3 missed ticks")

	_, err = c.Ping(ctx(t))
	require.NoError(t, err)
	require.Equal(t, client.EventRecovered, nextEvent(t, c, 3*time.Second))
	noEvent(t, c, 800*time.Millisecond)
}

// TestEventsAcrossBrokerRestart: the broker goes away; the device reports
// EventLost while it is gone and EventRecovered when a broker is back on the
// same address and data: the client reconnects, its ping re-attaches the
// instance (loaded lazily from disk), and ticks come again.
func TestEventsAcrossBrokerRestart(t *testing.T) {
	cfg := tickingConfig(t)
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	cfg.MQTTAddr = b.Addrs().MQTT // the restarted broker listens where the device dials
	c := dial(t, "tcp://"+cfg.MQTTAddr, token, false)
	begun, err := c.Begin(ctx(t))
	require.NoError(t, err)
	noEvent(t, c, 800*time.Millisecond)

	require.NoError(t, b.Close())
	require.Equal(t, client.EventLost, nextEvent(t, c, 3*time.Second))
	time.Sleep(500 * time.Millisecond) // down a while longer
	select {
	case e := <-c.Events():
		t.Fatalf("event %s with no broker", e)
	default:
	}

	b = brokertest.Start(t, cfg)
	require.Equal(t, client.EventRecovered, nextEvent(t, c, 10*time.Second))
	s, err := b.Sessions().Get("alice", "lamp")
	require.NoError(t, err)
	require.Equal(t, sessions.StateActive, s.State)
	require.Equal(t, begun.Nonce, c.Nonce(), "the same instance carries on")
	noEvent(t, c, 800*time.Millisecond)
}
