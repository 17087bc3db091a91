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
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
	"github.com/f47fa0da/tether/wire"
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
	return snapDeviceAs(t, b, "alice", token, session, blob, keep)
}

func snapDeviceAs(t *testing.T, b *broker.Broker, user, token, session, blob string, keep *blobKeeper) *client.Client {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session, cfg.ManualPing = "tcp://"+b.Addrs().MQTT, user, token, session, true
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
	bobKeep := &blobKeeper{}
	bob := snapDeviceAs(t, b, "bob", brokertest.Token(t, b, "bob", auth.RoleDevice), "src", "", bobKeep)
	_, err = bob.Begin(ctx(t))
	require.NoError(t, err)
	bobBlob, n := bobKeep.get()
	require.Equal(t, 1, n, "bob's begin sent bob a snapshot")
	tests := []struct {
		name, session, blob string
		on                  *broker.Broker
		want, notWant       string
	}{
		{"another session", "dst", blob, b, "another user or session", "authenticate"},
		{"another user", "src", bobBlob, b, "another user or session", "authenticate"},
		{"tampered", "src", tampered, b, "does not authenticate", "another user"},
		{"tampered, another session", "dst", tampered, b, "does not authenticate", "another user"},
		{"unknown key", "src", blob, other, "unknown key id", "authenticate"},
		{"garbage", "src", "hello", b, "malformed", "authenticate"},
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
			require.NotContains(t, ce.Message, tc.notWant)
			after, _ := tc.on.Sessions().Get("alice", tc.session)
			require.Equal(t, before.Nonce, after.Nonce, "nothing began")
			require.Equal(t, before.Version, after.Version, "nothing changed")
		})
	}

	t.Run("no keys", func(t *testing.T) {
		plain := brokertest.Start(t, brokertest.Config(t))
		k := &blobKeeper{}
		dev := snapDevice(t, plain, brokertest.Token(t, plain, "alice", auth.RoleDevice), "src", blob, k)
		_, err := dev.Begin(ctx(t))
		require.ErrorContains(t, err, "no snapshot keys")
		// The refused blob is not presented again (the application keeps
		// its copy: a broker with the key may take it), so the next begin
		// goes without it.
		require.Empty(t, dev.Snapshot())
		require.Zero(t, k.n, "OnSnapshot is not told to drop it")
		_, err = dev.Begin(ctx(t))
		require.NoError(t, err)
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
		_, err = dev2.Begin(ctx(t))
		require.NoError(t, err, "the expired blob is not presented again")
	})
}

// openBlob opens a blob the test's broker sealed.
func openBlob(t *testing.T, key snapshot.Key, blob, user, session string) snapshot.Snapshot {
	t.Helper()
	s, err := snapshot.NewSealer([]snapshot.Key{key}, time.Hour)
	require.NoError(t, err)
	snap, err := s.Open(blob, user, session)
	require.NoError(t, err)
	return snap
}

func version(t *testing.T, b *broker.Broker, user, name string) uint64 {
	t.Helper()
	s, err := b.Sessions().Get(user, name)
	require.NoError(t, err)
	return s.Version
}

// A snapshot goes out only when what it seals changed, to the device whose
// request succeeded, once. Snapshots are written before the reply on the
// same connection and the client handles messages in order, so each
// request's count is final when it returns; a stray snapshot would also
// show as one too many at the next request that does send one.
func TestSnapshotOnlyWhenSealedStateChanges(t *testing.T) {
	key := testKey(t, "k1")
	cfg := snapshotConfig(t, key)
	cfg.Sessions.Rules = []sessions.Rule{{Pattern: "excl", Policy: sessions.Policy{Mode: sessions.Exclusive, Liveness: time.Minute}}}
	b := brokertest.Start(t, cfg)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	count := func(k *blobKeeper) int { _, n := k.get(); return n }

	t.Run("ping, cursor, remember", func(t *testing.T) {
		keep := &blobKeeper{}
		d := snapDevice(t, b, token, "cart", "", keep)
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		require.Equal(t, 1, count(keep), "begin: new nonce")

		_, err = d.Ping(ctx(t))
		require.NoError(t, err)
		require.Equal(t, 1, count(keep), "a bare ping changes nothing")

		v := version(t, b, "alice", "cart")
		require.NoError(t, d.SetCursor(map[string]int{"screen": 2}))
		_, err = d.Ping(ctx(t))
		require.NoError(t, err)
		require.Greater(t, version(t, b, "alice", "cart"), v, "the cursor is journaled: the record changed")
		require.Equal(t, 1, count(keep), "a ping with a cursor changes nothing a blob carries")

		phase := "pay"
		require.NoError(t, d.Remember(ctx(t), map[string]int{"step": 1}, &phase))
		blob, n := keep.get()
		require.Equal(t, 2, n, "remember: exactly one")
		snap := openBlob(t, key, blob, "alice", "cart")
		require.JSONEq(t, `{"step":1}`, string(snap.State.Memento))
		require.Equal(t, "pay", snap.State.Phase)

		require.NoError(t, d.Remember(ctx(t), map[string]int{"step": 1}, &phase))
		require.Equal(t, 2, count(keep), "the same memento and phase again seal the same state")
		require.NoError(t, d.Remember(ctx(t), map[string]int{"step": 2}, nil))
		require.Equal(t, 3, count(keep))

		// Taken over: the old instance's requests fail and get nothing.
		keep2 := &blobKeeper{}
		d2 := snapDevice(t, b, token, "cart", "", keep2)
		_, err = d2.Begin(ctx(t))
		require.NoError(t, err)
		require.Equal(t, 1, count(keep2))
		require.ErrorIs(t, d.Remember(ctx(t), map[string]int{"step": 9}, nil), client.ErrStaleNonce)
		require.Equal(t, 3, count(keep), "a refused request sends no snapshot")
	})

	t.Run("busy begin", func(t *testing.T) {
		holder, other := &blobKeeper{}, &blobKeeper{}
		d := snapDevice(t, b, token, "excl", "", holder)
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		require.Equal(t, 1, count(holder))

		v := version(t, b, "alice", "excl")
		d2 := snapDevice(t, b, token, "excl", "", other)
		_, err = d2.Begin(ctx(t))
		var ce *client.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "session_busy", string(ce.Code))
		require.Greater(t, version(t, b, "alice", "excl"), v, "the refusal is journaled: the record changed")
		require.Equal(t, 0, count(other), "a device refused the session gets no snapshot (it would carry the holder's nonce)")

		require.NoError(t, d.Remember(ctx(t), "m", nil))
		require.Equal(t, 2, count(holder), "the holder's next change still sends exactly one")
		require.Equal(t, 0, count(other))
	})
}

// Restoring over a record this broker already holds: the blob wins only
// when the record is older, and then wholly (an ended or expired local
// record does not stay so); it never replaces a live exclusive instance.
func TestSnapshotRestoreOverLocalRecord(t *testing.T) {
	key := testKey(t, "k1")
	// work begins on b, remembers mementos and makes calls; it returns the
	// device's latest blob.
	work := func(t *testing.T, b *broker.Broker, session string, mementos []string, calls int) string {
		t.Helper()
		keep := &blobKeeper{}
		d := snapDevice(t, b, brokertest.Token(t, b, "alice", auth.RoleDevice), session, "", keep)
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		for _, m := range mementos {
			phase := "at-" + m
			require.NoError(t, d.Remember(ctx(t), m, &phase))
		}
		for i := range calls {
			_, err := d.Call(ctx(t), "add", nil, i)
			require.NoError(t, err)
		}
		blob, _ := keep.get()
		require.NotEmpty(t, blob)
		return blob
	}
	begin := func(t *testing.T, b *broker.Broker, session, blob string) (client.Begun, *blobKeeper, error) {
		keep := &blobKeeper{}
		d := snapDevice(t, b, brokertest.Token(t, b, "alice", auth.RoleDevice), session, blob, keep)
		got, err := d.Begin(ctx(t))
		return got, keep, err
	}
	restoredFrom := func(t *testing.T, b *broker.Broker, session string) []string {
		events, err := b.Sessions().Log("alice", session, 0, 0)
		require.NoError(t, err)
		var from []string
		for _, e := range events {
			if e.Kind == "restored" {
				f, _ := e.Detail["from"].(string)
				from = append(from, f)
			}
		}
		return from
	}

	t.Run("equal version is ignored", func(t *testing.T) {
		a, b := brokertest.Start(t, snapshotConfig(t, key)), brokertest.Start(t, snapshotConfig(t, key))
		blob := work(t, a, "cart", []string{"A"}, 0)
		work(t, b, "cart", []string{"B"}, 0) // the same requests: the same version, another state
		require.Equal(t, openBlob(t, key, blob, "alice", "cart").Version, version(t, b, "alice", "cart"))

		got, _, err := begin(t, b, "cart", blob)
		require.NoError(t, err)
		require.JSONEq(t, `"B"`, string(got.Memento), "this broker's record stays")
		require.Equal(t, "at-B", got.Phase)
		require.Empty(t, restoredFrom(t, b, "cart"))
	})

	t.Run("older ended record: the blob wins", func(t *testing.T) {
		a, b := brokertest.Start(t, snapshotConfig(t, key)), brokertest.Start(t, snapshotConfig(t, key))
		local := snapDevice(t, b, brokertest.Token(t, b, "alice", auth.RoleDevice), "cart", "", &blobKeeper{})
		_, err := local.Begin(ctx(t))
		require.NoError(t, err)
		require.NoError(t, local.End(ctx(t)))
		blob := work(t, a, "cart", []string{"A1", "A2"}, 2)
		require.Greater(t, openBlob(t, key, blob, "alice", "cart").Version, version(t, b, "alice", "cart"))

		got, keep, err := begin(t, b, "cart", blob)
		require.NoError(t, err)
		require.JSONEq(t, "1", string(got.Memento), "the last call's memento")
		require.Equal(t, "at-A2", got.Phase)
		require.True(t, got.Crashed, "the blob's instance never ended")
		require.Equal(t, uint64(3), got.NextSeq)
		require.Equal(t, []string{"ended"}, restoredFrom(t, b, "cart"))
		_, n := keep.get()
		require.Equal(t, 1, n, "the begin after the restore sends one snapshot")
	})

	t.Run("older expired record: the blob wins", func(t *testing.T) {
		a, b := brokertest.Start(t, snapshotConfig(t, key)), brokertest.Start(t, snapshotConfig(t, key))
		require.NoError(t, b.Sessions().SetPolicy("alice", "cart", &sessions.Policy{Mode: sessions.Takeover, Window: 50 * time.Millisecond, Liveness: time.Minute}))
		_, _, err := begin(t, b, "cart", "")
		require.NoError(t, err)
		brokertest.WaitFor(t, 5*time.Second, "the local record to expire", func() bool {
			s, err := b.Sessions().Get("alice", "cart")
			return err == nil && s.State == sessions.StateExpired
		})
		blob := work(t, a, "cart", []string{"A1", "A2", "A3", "A4"}, 0)
		require.Greater(t, openBlob(t, key, blob, "alice", "cart").Version, version(t, b, "alice", "cart"))

		got, _, err := begin(t, b, "cart", blob)
		require.NoError(t, err, "the blob (no window) is newer than the expired record")
		require.JSONEq(t, `"A4"`, string(got.Memento))
		require.Equal(t, "at-A4", got.Phase)
		require.Nil(t, got.RemainingMs, "the blob's policy (none) replaced the local window")
		require.Equal(t, []string{"expired"}, restoredFrom(t, b, "cart"))
	})

	t.Run("a blob past its deadline restores an expired session", func(t *testing.T) {
		cfg := snapshotConfig(t, key)
		cfg.Sessions.Rules = []sessions.Rule{{Pattern: "timed", Policy: sessions.Policy{Mode: sessions.Takeover, Window: 200 * time.Millisecond, Liveness: time.Minute}}}
		a, b := brokertest.Start(t, cfg), brokertest.Start(t, snapshotConfig(t, key))
		blob := work(t, a, "timed", []string{"A"}, 0)
		require.False(t, openBlob(t, key, blob, "alice", "timed").State.Deadline.IsZero())
		time.Sleep(300 * time.Millisecond) // past the blob's deadline

		_, keep, err := begin(t, b, "timed", blob)
		var ce *client.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "session_expired", string(ce.Code))
		s, err := b.Sessions().Get("alice", "timed")
		require.NoError(t, err)
		require.Equal(t, sessions.StateExpired, s.State)
		require.JSONEq(t, `"A"`, string(s.Memento), "restored, then expired")
		_, n := keep.get()
		require.Equal(t, 0, n, "a refused begin sends no snapshot")
	})

	t.Run("a live exclusive instance is not replaced", func(t *testing.T) {
		cfg := snapshotConfig(t, key)
		cfg.Sessions.Rules = []sessions.Rule{{Pattern: "excl", Policy: sessions.Policy{Mode: sessions.Exclusive, Liveness: time.Minute}}}
		a, b := brokertest.Start(t, snapshotConfig(t, key)), brokertest.Start(t, cfg)
		holder := snapDevice(t, b, brokertest.Token(t, b, "alice", auth.RoleDevice), "excl", "", &blobKeeper{})
		held, err := holder.Begin(ctx(t))
		require.NoError(t, err)
		blob := work(t, a, "excl", []string{"A1", "A2", "A3"}, 0)
		require.Greater(t, openBlob(t, key, blob, "alice", "excl").Version, version(t, b, "alice", "excl"))

		_, keep, err := begin(t, b, "excl", blob)
		var ce *client.Error
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "session_busy", string(ce.Code))
		s, err := b.Sessions().Get("alice", "excl")
		require.NoError(t, err)
		require.Equal(t, held.Nonce, s.Nonce, "the live instance stays current")
		require.Empty(t, s.Memento)
		require.Empty(t, restoredFrom(t, b, "excl"))
		_, n := keep.get()
		require.Equal(t, 0, n)
	})
}

// TestSnapshotRestoreHeldToSessionCap: a blob for a session this broker
// has never seen is a new session here, held to the per-user cap.
func TestSnapshotRestoreHeldToSessionCap(t *testing.T) {
	key := testKey(t, "k1")
	a := brokertest.Start(t, snapshotConfig(t, key))
	keep := &blobKeeper{}
	d := snapDevice(t, a, brokertest.Token(t, a, "alice", auth.RoleDevice), "cart", "", keep)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.NoError(t, d.Remember(ctx(t), "kettle", nil))
	blob, _ := keep.get()
	require.NotEmpty(t, blob)

	cfg := snapshotConfig(t, key)
	cfg.Sessions.MaxSessionsPerUser = 1
	b := brokertest.Start(t, cfg)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	_, err = snapDevice(t, b, token, "other", "", &blobKeeper{}).Begin(ctx(t))
	require.NoError(t, err)
	_, err = snapDevice(t, b, token, "cart", blob, &blobKeeper{}).Begin(ctx(t))
	require.Equal(t, wire.CodeForbidden, wireCode(t, err))
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.Equal(t, []string{"other"}, names)
}
