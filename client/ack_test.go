package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// Acks are coalesced: handled notifications wait up to AckDelay for more
// and leave as one ack; half the broker's window unacknowledged sends the
// ack at once; End acknowledges what was handled before it ends.
func TestAcksCoalesce(t *testing.T) {
	bcfg := brokertest.Config(t)
	bcfg.DeliveryWindow = 8
	b := brokertest.Start(t, bcfg)
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session = "tcp://"+b.Addrs().MQTT, "alice", "lamp"
	cfg.Token = brokertest.Token(t, b, "alice", auth.RoleDevice)
	cfg.ManualPing = true
	cfg.AckDelay = time.Second // the longest allowed, so that a held ack is plain to see
	var (
		mu        sync.Mutex
		confirmed []uint64
	)
	cfg.OnAcked = func(upto uint64) { mu.Lock(); confirmed = append(confirmed, upto); mu.Unlock() }
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := client.Dial(dctx, cfg)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	begun, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, 8, begun.Window, "begin tells the delivery window")

	depth := func() int {
		out, err := b.Outq("alice", "lamp", 0)
		require.NoError(t, err)
		return len(out)
	}
	acks := func() int {
		events, err := b.Sessions().Log("alice", "lamp", 0, 0)
		require.NoError(t, err)
		n := 0
		for _, e := range events {
			if e.Kind == "ack" {
				n++
			}
		}
		return n
	}
	handle := func(n int) {
		t.Helper()
		for range n {
			_, err := b.Notify("alice", "lamp", "x")
			require.NoError(t, err)
		}
		for range n {
			select {
			case note := <-d.Notifications():
				d.Ack(note.Seq)
			case <-time.After(5 * time.Second):
				t.Fatal("a notification did not arrive")
			}
		}
	}

	handle(3) // under half the window: held
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 3, depth(), "the ack waits for more (AckDelay)")
	brokertest.WaitFor(t, 3*time.Second, "the held ack to leave", func() bool { return depth() == 0 })
	require.Equal(t, 1, acks(), "one ack for three notifications")

	handle(4) // half the window: no wait
	brokertest.WaitFor(t, 600*time.Millisecond, "the ack at half the window, before AckDelay", func() bool { return depth() == 0 })

	handle(1)
	require.NoError(t, d.End(ctx(t)))
	require.Equal(t, 0, depth(), "End acknowledges what was handled first")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []uint64{3, 7, 8}, confirmed, "OnAcked: each ack the broker confirmed")
}

func TestAckDelayValidated(t *testing.T) {
	for _, delay := range []time.Duration{-time.Millisecond, 2 * time.Second} {
		cfg := client.DefaultConfig()
		cfg.URL, cfg.User, cfg.Session = "tcp://127.0.0.1:1", "alice", "lamp"
		cfg.AckDelay = delay
		_, err := client.Dial(context.Background(), cfg)
		require.ErrorContains(t, err, "AckDelay must be 0..1s", "AckDelay %s", delay)
	}
}
