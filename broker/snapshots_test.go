package broker_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/snapshot"
)

func snapshotConfig(t *testing.T, keys ...snapshot.Key) broker.Config {
	cfg := brokertest.Config(t)
	cfg.SnapshotKeys = keys
	cfg.Handlers = map[string]nonce.Handler{"add": func(_ context.Context, c *nonce.Call) (any, error) {
		var n int
		if _, err := c.State.GetJSON("n", &n); err != nil {
			return nil, err
		}
		n++
		return n, c.State.SetJSON("n", n)
	}}
	return cfg
}

func testKey(t *testing.T, id string) snapshot.Key {
	line, err := snapshot.NewKeyLine(id)
	require.NoError(t, err)
	keys, err := snapshot.ParseKeys(strings.NewReader(line))
	require.NoError(t, err)
	return keys[0]
}

// blobKeeper records the latest snapshot a device is sent.
type blobKeeper struct {
	mu   sync.Mutex
	blob string
	n    int
}

func (k *blobKeeper) keep(b string) { k.mu.Lock(); k.blob, k.n = b, k.n+1; k.mu.Unlock() }
func (k *blobKeeper) get() (string, int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.blob, k.n
}

func snapDevice(t *testing.T, b *broker.Broker, token, session, blob string, keep *blobKeeper) *client.Client {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session, cfg.ManualPing = "tcp://"+b.Addrs().MQTT, "alice", token, session, true
	cfg.Snapshot, cfg.OnSnapshot = blob, keep.keep
	c, err := client.Dial(ctx(t), cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestSnapshotMovesSessionToAnotherBroker(t *testing.T) {
	key := testKey(t, "k1")
	first := brokertest.Start(t, snapshotConfig(t, key))
	keep := &blobKeeper{}
	d := snapDevice(t, first, brokertest.Token(t, first, "alice", auth.RoleDevice), "cart", "", keep)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	phase := "checkout"
	require.NoError(t, d.Remember(ctx(t), []string{"kettle"}, &phase))
	for i := 1; i <= 3; i++ {
		_, err := d.Call(ctx(t), "add", nil, i)
		require.NoError(t, err)
	}
	brokertest.WaitFor(t, 5*time.Second, "the snapshot of the last call", func() bool { _, n := keep.get(); return n >= 5 })
	blob, sent := keep.get()
	require.Equal(t, 5, sent, "one snapshot per request that changed something: begin, remember, 3 calls")
	require.NoError(t, first.Close()) // the first broker is gone, with everything it stored

	second := brokertest.Start(t, snapshotConfig(t, key))
	keep2 := &blobKeeper{}
	d2 := snapDevice(t, second, brokertest.Token(t, second, "alice", auth.RoleDevice), "cart", blob, keep2)
	got, err := d2.Begin(ctx(t))
	require.NoError(t, err)
	require.True(t, got.Crashed, "the instance on the first broker never ended")
	require.Equal(t, "checkout", got.Phase)
	require.JSONEq(t, "3", string(got.Memento))
	require.Equal(t, uint64(4), got.NextSeq, "calls continue after the last committed one")
	// A replayed call from before the move cannot run again: its seq is spent.
	raw, err := d2.Call(ctx(t), "add", nil, 4)
	require.NoError(t, err)
	require.JSONEq(t, "1", string(raw), "the second broker's own state starts empty; the call ran once")
	journalKinds := journal(t, second, "alice", "cart")
	require.Contains(t, journalKinds, "restored")

	t.Run("an older blob is ignored", func(t *testing.T) {
		d3 := snapDevice(t, second, brokertest.Token(t, second, "alice", auth.RoleDevice), "cart", blob, &blobKeeper{})
		again, err := d3.Begin(ctx(t))
		require.NoError(t, err)
		require.JSONEq(t, "4", string(again.Memento), "the newer state on this broker wins")
	})
}

func TestSnapshotRefusals(t *testing.T) {
	key := testKey(t, "k1")
	b := brokertest.Start(t, snapshotConfig(t, key))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	keep := &blobKeeper{}
	d := snapDevice(t, b, token, "src", "", keep)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	brokertest.WaitFor(t, 5*time.Second, "a snapshot", func() bool { _, n := keep.get(); return n >= 1 })
	blob, _ := keep.get()

	other := brokertest.Start(t, snapshotConfig(t, testKey(t, "k2")))
	// One character in the middle (ciphertext): the last one carries padding bits.
	mid := len(blob) / 2
	flipped := byte('A')
	if blob[mid] == 'A' {
		flipped = 'B'
	}
	tampered := blob[:mid] + string(flipped) + blob[mid+1:]
	tests := []struct {
		name, session, blob string
		on                  *broker.Broker
		want                string
	}{
		{"another session", "dst", blob, b, "another user or session"},
		{"tampered", "src", tampered, b, "does not authenticate"},
		{"unknown key", "src", blob, other, "unknown key id"},
		{"garbage", "src", "hello", b, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := tc.on.Sessions().Get("alice", tc.session)
			tok := brokertest.Token(t, tc.on, "alice", auth.RoleDevice)
			dev := snapDevice(t, tc.on, tok, tc.session, tc.blob, &blobKeeper{})
			_, err := dev.Begin(ctx(t))
			var ce *client.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "bad_request", string(ce.Code))
			require.Contains(t, ce.Message, tc.want)
			after, _ := tc.on.Sessions().Get("alice", tc.session)
			require.Equal(t, before.Nonce, after.Nonce, "nothing began")
			require.Equal(t, before.Version, after.Version, "nothing changed")
		})
	}

	t.Run("no keys", func(t *testing.T) {
		plain := brokertest.Start(t, brokertest.Config(t))
		dev := snapDevice(t, plain, brokertest.Token(t, plain, "alice", auth.RoleDevice), "src", blob, &blobKeeper{})
		_, err := dev.Begin(ctx(t))
		require.ErrorContains(t, err, "no snapshot keys")
	})
	t.Run("expired", func(t *testing.T) {
		cfg := snapshotConfig(t, key)
		cfg.SnapshotTTL = 50 * time.Millisecond
		short := brokertest.Start(t, cfg)
		tok := brokertest.Token(t, short, "alice", auth.RoleDevice)
		k := &blobKeeper{}
		dev := snapDevice(t, short, tok, "src", "", k)
		_, err := dev.Begin(ctx(t))
		require.NoError(t, err)
		brokertest.WaitFor(t, 5*time.Second, "a snapshot", func() bool { _, n := k.get(); return n >= 1 })
		old, _ := k.get()
		time.Sleep(100 * time.Millisecond)
		dev2 := snapDevice(t, short, tok, "src", old, &blobKeeper{})
		_, err = dev2.Begin(ctx(t))
		require.ErrorContains(t, err, "expired")
	})
}
