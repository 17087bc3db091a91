package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/sessions"
)

// device dials the session user/name at url with fast timings; the test
// drives pings itself.
func device(t *testing.T, url, user, token, name string) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = url, user, token, name
	cfg.KeepAlive = 2 * time.Second
	cfg.ManualPing = true
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

// journal returns the session's journal kinds in order.
func journal(t *testing.T, b *broker.Broker, user, name string) []string {
	t.Helper()
	events, err := b.Sessions().Log(user, name, 0, 0)
	require.NoError(t, err)
	var kinds []string
	for _, e := range events {
		k := e.Kind
		if r, ok := e.Detail["reason"].(string); ok {
			k += ":" + r
		}
		kinds = append(kinds, k)
	}
	return kinds
}

func state(t *testing.T, b *broker.Broker, user, name string) sessions.State {
	s, err := b.Sessions().Get(user, name)
	require.NoError(t, err)
	return s.State
}

func TestBeginRememberEnd(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)

	d := device(t, url, "alice", token, "kitchen")
	got, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.Len(t, got.Nonce, 32)
	require.False(t, got.Crashed)
	require.JSONEq(t, "null", string(got.Memento))
	require.Equal(t, "active", got.State)
	phase := "demo_started"
	require.NoError(t, d.Remember(ctx(t), map[string]int{"step": 5}, &phase))
	d.Close() // no End: the instance stays current, as after a crash
	// The journal below tells the disconnect before the next begin: wait
	// for it (a begin from another connection may otherwise overtake it).
	brokertest.WaitFor(t, 5*time.Second, "the disconnect detaches the session", func() bool {
		return state(t, b, "alice", "kitchen") == sessions.StateDetached
	})

	// Another device resumes the session where the first left off.
	d2 := device(t, url, "alice", token, "kitchen")
	again, err := d2.Begin(ctx(t))
	require.NoError(t, err)
	require.True(t, again.Crashed, "the previous instance never ended")
	require.NotEqual(t, got.Nonce, again.Nonce)
	require.JSONEq(t, `{"step":5}`, string(again.Memento))
	require.Equal(t, "demo_started", again.Phase)

	require.NoError(t, d2.End(ctx(t)))
	require.NoError(t, d2.End(ctx(t)), "a second end is harmless")
	require.Equal(t, sessions.StateEnded, state(t, b, "alice", "kitchen"))
	fresh, err := d2.Begin(ctx(t))
	require.NoError(t, err)
	require.False(t, fresh.Crashed)
	require.JSONEq(t, "null", string(fresh.Memento), "end clears the memento")
	require.Equal(t, []string{
		"begin", "presence:begin", "remember", "presence:disconnect",
		"begin", "presence:begin", "end", "presence:end", "begin", "presence:begin",
	}, journal(t, b, "alice", "kitchen"))
}

func TestTakeover(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	a := device(t, url, "alice", token, "tv")
	_, err := a.Begin(ctx(t))
	require.NoError(t, err)
	bdev := device(t, url, "alice", token, "tv")
	_, err = bdev.Begin(ctx(t))
	require.NoError(t, err, "takeover: the newest begin wins")

	_, err = a.Ping(ctx(t))
	require.ErrorIs(t, err, client.ErrStaleNonce)
	require.ErrorIs(t, a.Remember(ctx(t), 1, nil), client.ErrStaleNonce)
	_, err = bdev.Ping(ctx(t))
	require.NoError(t, err)
	s, err := b.Sessions().Get("alice", "tv")
	require.NoError(t, err)
	require.JSONEq(t, "null", string(orNull(s.Memento)), "the stale remember changed nothing")

	// The journal tells the takeover: a second instance on another
	// connection while the session stayed online (so no second presence
	// event), reporting the first as crashed since it never ended; the
	// stale requests left no trace.
	events, err := b.Sessions().Log("alice", "tv", 0, 0)
	require.NoError(t, err)
	require.Equal(t, []string{"begin", "presence:begin", "begin"}, journal(t, b, "alice", "tv"))
	require.Equal(t, false, events[0].Detail["crashed"])
	require.Equal(t, true, events[2].Detail["crashed"], "the taken-over instance never ended")
	require.Equal(t, json.Number("2"), events[2].Detail["instance"])
	require.Equal(t, "takeover", events[2].Detail["policy"])
	require.NotEqual(t, events[0].Detail["conn"], events[2].Detail["conn"], "each begin names its connection")
	require.NotEqual(t, events[0].Detail["nonce"], events[2].Detail["nonce"])
}

func orNull(m json.RawMessage) json.RawMessage {
	if m == nil {
		return json.RawMessage("null")
	}
	return m
}

func exclusiveConfig(t *testing.T) broker.Config {
	cfg := brokertest.Config(t)
	cfg.Sessions.Rules = []sessions.Rule{{Pattern: "quiz*", Policy: sessions.Policy{Mode: sessions.Exclusive, Liveness: time.Minute}}}
	return cfg
}

// TestExclusiveUntilSocketCut is the judging scenario: two devices
// begin alice/quiz under exclusive; the second is refused until the first's
// socket is cut, then succeeds within keepalive×1.5 and sees crashed:true.
func TestExclusiveUntilSocketCut(t *testing.T) {
	b := brokertest.Start(t, exclusiveConfig(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	proxy := brokertest.NewProxy(t, b.Addrs().MQTT)

	first := device(t, "tcp://"+proxy.Addr(), "alice", token, "quiz")
	_, err := first.Begin(ctx(t))
	require.NoError(t, err)
	second := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "quiz")
	_, err = second.Begin(ctx(t))
	require.ErrorIs(t, err, client.ErrSessionBusy)

	proxy.Close() // the first device's socket dies, no DISCONNECT; it cannot come back
	cut := time.Now()
	var got client.Begun
	brokertest.WaitFor(t, 3*time.Second, "begin to succeed after the cut", func() bool {
		got, err = second.Begin(ctx(t))
		return err == nil
	})
	require.Less(t, time.Since(cut), 3*time.Second, "within keepalive×1.5")
	require.True(t, got.Crashed)
	var kinds []string // with repeated refusals (the retries above) folded into one
	for _, k := range journal(t, b, "alice", "quiz") {
		if len(kinds) == 0 || k != "busy" || kinds[len(kinds)-1] != "busy" {
			kinds = append(kinds, k)
		}
	}
	require.Equal(t, []string{"begin", "presence:begin", "busy", "presence:will", "begin", "presence:begin"}, kinds)
}

// TestFrozenSocketDetectedByKeepalive: a half-open connection (no FIN) is
// noticed by the keepalive and marked offline within keepalive×1.5.
func TestFrozenSocketDetectedByKeepalive(t *testing.T) {
	b := brokertest.Start(t, exclusiveConfig(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	watcher := brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token))
	presence := brokertest.NewMessages(8)
	require.NoError(t, brokertest.Wait(watcher.Subscribe("sessions/alice/quiz/presence", 1, presence.Handler)))
	proxy := brokertest.NewProxy(t, b.Addrs().MQTT)
	d := device(t, "tcp://"+proxy.Addr(), "alice", token, "quiz")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	var p struct {
		State string `json:"state"`
		Since int64  `json:"since"`
	}
	require.NoError(t, json.Unmarshal(presence.Next(t, 2*time.Second).Payload(), &p))
	require.Equal(t, "online", p.State)

	proxy.Freeze()
	frozen := time.Now()
	// What subscribers see, not only the stored state: the retained presence
	// turns offline within keepalive 2s × 1.5 (+ slack).
	msg := presence.Next(t, 5*time.Second)
	require.Less(t, time.Since(frozen), 2*time.Second*3/2+500*time.Millisecond, "keepalive 2s × 1.5 (+ slack)")
	require.NoError(t, json.Unmarshal(msg.Payload(), &p))
	require.Equal(t, "offline", p.State)
	require.InDelta(t, time.Now().UnixMilli(), p.Since, 1000)
	require.Equal(t, sessions.StateDetached, state(t, b, "alice", "quiz"))
	k := journal(t, b, "alice", "quiz")
	require.Equal(t, "presence:will", k[len(k)-1], "the keepalive timeout fires the will")

	// A new subscriber gets the offline presence retained.
	late := brokertest.NewMessages(2)
	lateSub := brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token))
	require.NoError(t, brokertest.Wait(lateSub.Subscribe("sessions/alice/quiz/presence", 1, late.Handler)))
	msg = late.Next(t, 2*time.Second)
	require.True(t, msg.Retained())
	require.Contains(t, string(msg.Payload()), `"state":"offline"`)
}

func TestStaleWillIgnored(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	proxy := brokertest.NewProxy(t, b.Addrs().MQTT)
	old := device(t, "tcp://"+proxy.Addr(), "alice", token, "car")
	_, err := old.Begin(ctx(t))
	require.NoError(t, err)
	current := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "car")
	_, err = current.Begin(ctx(t))
	require.NoError(t, err)

	proxy.Close() // the old connection dies; its will names the session
	brokertest.WaitFor(t, 3*time.Second, "the stale will to be journaled", func() bool {
		k := journal(t, b, "alice", "car")
		return k[len(k)-1] == "will_ignored"
	})
	require.Equal(t, sessions.StateActive, state(t, b, "alice", "car"), "the new instance stays online")
	_, err = current.Ping(ctx(t))
	require.NoError(t, err)
}

// TestWillsOnBrokerTopicsDropped: a will on a session's req topic or on a
// notify topic is dropped, not forwarded raw to subscribers (mochi sends
// wills past the publish hooks) nor taken as a notification.
func TestWillsOnBrokerTopicsDropped(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	for _, tt := range []struct{ user, role, topic, payload, watcher, watch string }{
		{"alice", "device", "sessions/alice/car/req", `{"id":1,"op":"begin"}`, "alice", "sessions/alice/#"},
		{"app", "service", "tether/notify/alice/car", `{"data":"from a will"}`, "ops", "tether/#"},
	} {
		heard := brokertest.NewMessages(4)
		role := map[string]auth.Role{"alice": auth.RoleDevice, "ops": auth.RoleService}[tt.watcher]
		watcher := brokertest.MustConnect(t, brokertest.ClientOptions(url, tt.watcher, brokertest.Token(t, b, tt.watcher, role)))
		require.NoError(t, brokertest.Wait(watcher.Subscribe(tt.watch, 1, heard.Handler)))
		proxy := brokertest.NewProxy(t, b.Addrs().MQTT)
		brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+proxy.Addr(), tt.user, brokertest.Token(t, b, tt.user, auth.Role(tt.role))).
			SetWill(tt.topic, tt.payload, 1, false))
		proxy.Close() // no DISCONNECT: the will is due
		heard.None(t, 300*time.Millisecond)
		out, err := b.Outq("alice", "car", 0)
		require.NoError(t, err)
		require.Empty(t, out, tt.topic)
	}
}

func TestPresenceRetained(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	watcher := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token))
	seen := brokertest.NewMessages(16)
	require.NoError(t, brokertest.Wait(watcher.Subscribe("sessions/alice/+/presence", 1, seen.Handler)))

	d := device(t, url, "alice", token, "lamp")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	var p struct {
		State string `json:"state"`
		Since int64  `json:"since"`
	}
	msg := seen.Next(t, 2*time.Second)
	require.NoError(t, json.Unmarshal(msg.Payload(), &p))
	require.Equal(t, "online", p.State)
	d.Close()
	msg = seen.Next(t, 2*time.Second)
	require.NoError(t, json.Unmarshal(msg.Payload(), &p))
	require.Equal(t, "offline", p.State)
	require.InDelta(t, time.Now().UnixMilli(), p.Since, 5000)

	// A device may not forge presence.
	forger := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token))
	require.NoError(t, brokertest.Wait(forger.Publish("sessions/alice/lamp/presence", 1, true, `{"state":"online"}`)))
	seen.None(t, 200*time.Millisecond)
}

func TestSweepDetachesSilentSessions(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.SweepInterval = 50 * time.Millisecond
	cfg.Sessions.DefaultPolicy.Liveness = time.Second
	b := brokertest.Start(t, cfg)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "sensor")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	// The device stays connected but sends no request.
	brokertest.WaitFor(t, 3*time.Second, "the sweep", func() bool {
		return state(t, b, "alice", "sensor") == sessions.StateDetached
	})
	k := journal(t, b, "alice", "sensor")
	require.Equal(t, "presence:sweep", k[len(k)-1])
	// A ping from the same device re-attaches it.
	_, err = d.Ping(ctx(t))
	require.NoError(t, err)
	require.Equal(t, sessions.StateActive, state(t, b, "alice", "sensor"))
	require.Equal(t, "presence:resume", journal(t, b, "alice", "sensor")[len(k)])
}

func TestDeadline(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.TickInterval = 100 * time.Millisecond
	cfg.Sessions.Rules = []sessions.Rule{{Pattern: "exam", Policy: sessions.Policy{Mode: sessions.Exclusive, Window: 1500 * time.Millisecond, Liveness: time.Minute}}}
	b := brokertest.Start(t, cfg)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "exam")
	got, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.NotNil(t, got.RemainingMs)
	require.InDelta(t, 1500, *got.RemainingMs, 200)

	var last client.Tick
	var remaining []int64
	deadline := time.After(5 * time.Second)
	for last.State != "expired" {
		select {
		case last = <-d.Ticks():
			if r, ok := last.Remaining(); ok {
				remaining = append(remaining, r.Milliseconds())
			}
		case <-deadline:
			t.Fatalf("no final tick; last %+v", last)
		}
	}
	require.Greater(t, len(remaining), 5, "ticks every 100ms")
	for i := 1; i < len(remaining); i++ {
		require.LessOrEqual(t, remaining[i], remaining[i-1], "time left never goes up")
	}
	require.Zero(t, remaining[len(remaining)-1])
	_, err = d.Ping(ctx(t))
	require.ErrorIs(t, err, client.ErrExpired)
	_, err = d.Begin(ctx(t))
	require.ErrorIs(t, err, client.ErrExpired)
	require.Equal(t, sessions.StateExpired, state(t, b, "alice", "exam"))
	require.Contains(t, journal(t, b, "alice", "exam"), "expired")

	// It expired attached; once its device has gone it is offline too.
	d.Close()
	brokertest.WaitFor(t, 3*time.Second, "presence offline after the device left", func() bool {
		k := journal(t, b, "alice", "exam")
		return strings.HasPrefix(k[len(k)-1], "presence:")
	})
	require.Equal(t, sessions.StateExpired, state(t, b, "alice", "exam"))
	late := brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token))
	seen := brokertest.NewMessages(4)
	require.NoError(t, brokertest.Wait(late.Subscribe("sessions/alice/exam/presence", 1, seen.Handler)))
	var p struct {
		State string `json:"state"`
	}
	// The retained presence, or (if the subscription won the race with the
	// publish after the journal entry) the live one right after it.
	require.NoError(t, json.Unmarshal(seen.Next(t, 2*time.Second).Payload(), &p))
	if p.State != "offline" {
		require.NoError(t, json.Unmarshal(seen.Next(t, 2*time.Second).Payload(), &p))
	}
	require.Equal(t, "offline", p.State, "the retained presence")
}

func TestRestartKeepsSessionsAndLoadsLazily(t *testing.T) {
	cfg := brokertest.Config(t)
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	first, err := d.Begin(ctx(t))
	require.NoError(t, err)
	phase := "test_started"
	require.NoError(t, d.Remember(ctx(t), []int{1, 2, 3}, &phase))
	require.NoError(t, b.Close())

	b = brokertest.Start(t, cfg)
	require.Zero(t, b.Sessions().Loaded(), "start-up loads no session")
	s, err := b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.Equal(t, first.Nonce, s.Nonce)
	require.Equal(t, "test_started", s.Phase)
	require.Zero(t, b.Sessions().Loaded(), "inspection does not load either")

	d2 := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	again, err := d2.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, 1, b.Sessions().Loaded())
	require.True(t, again.Crashed)
	require.JSONEq(t, "[1,2,3]", string(again.Memento))
	require.Equal(t, "test_started", again.Phase)

	// The journal survived the restart and goes on where it stopped: seqs
	// continue, and the begin after the restart reports the crash. The
	// device's connection ended with the first broker, which marked it
	// offline: by its will, or (when mochi's read loop sees the shutdown
	// before a read error, and so sends no will) by the disconnect.
	events, err := b.Sessions().Log("alice", "shop", 0, 0)
	require.NoError(t, err)
	kinds := journal(t, b, "alice", "shop")
	require.Len(t, kinds, 6)
	require.Contains(t, []string{"presence:will", "presence:disconnect"}, kinds[3])
	kinds[3] = "offline"
	require.Equal(t, []string{"begin", "presence:begin", "remember", "offline", "begin", "presence:begin"}, kinds)
	for i, e := range events {
		require.Equal(t, uint64(i+1), e.Seq)
	}
	require.Equal(t, first.Nonce[:8], events[0].Detail["nonce"])
	require.Equal(t, "test_started", events[2].Detail["phase"])
	require.Equal(t, true, events[4].Detail["crashed"])
	require.Equal(t, again.Nonce[:8], events[4].Detail["nonce"])
}

// TestPingCursorJournaled: a ping's cursor (what the user is looking at) is
// journaled as it was sent; a ping without one journals nothing.
func TestPingCursorJournaled(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "quiz")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	_, err = d.Ping(ctx(t))
	require.NoError(t, err)
	require.Equal(t, []string{"begin", "presence:begin"}, journal(t, b, "alice", "quiz"), "no cursor, no event")

	for _, q := range []int{7, 8} {
		require.NoError(t, d.SetCursor(map[string]any{"question": q, "big": uint64(1) << 60}))
		_, err = d.Ping(ctx(t))
		require.NoError(t, err)
	}
	events, err := b.Sessions().Log("alice", "quiz", 2, 0)
	require.NoError(t, err)
	require.Len(t, events, 2)
	for i, e := range events {
		require.Equal(t, "ping", e.Kind)
		cursor, err := json.Marshal(e.Detail["cursor"])
		require.NoError(t, err)
		require.JSONEq(t, fmt.Sprintf(`{"question":%d,"big":1152921504606846976}`, 7+i), string(cursor), "every digit kept")
	}
	require.Contains(t, events[1].String(), `ping cursor={"big":1152921504606846976,"question":8}`)
}

// TestJournalRetention: the journal keeps at most MaxEvents, the newest,
// and drops events older than MaxAge as new ones arrive; seqs go on.
func TestJournalRetention(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		cfg := brokertest.Config(t)
		cfg.Sessions.Retention.MaxEvents = 5
		b := brokertest.Start(t, cfg)
		d := device(t, "tcp://"+b.Addrs().MQTT, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "box")
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		for i := 1; i <= 10; i++ {
			require.NoError(t, d.SetCursor(i))
			_, err := d.Ping(ctx(t))
			require.NoError(t, err)
		}
		events, err := b.Sessions().Log("alice", "box", 0, 0)
		require.NoError(t, err)
		require.Len(t, events, 5)
		for i, e := range events {
			require.Equal(t, uint64(8+i), e.Seq, "the newest five of twelve")
			require.Equal(t, json.Number(fmt.Sprint(6+i)), e.Detail["cursor"])
		}
		s, err := b.Sessions().Get("alice", "box")
		require.NoError(t, err)
		require.Equal(t, sessions.JournalRange{First: 8, Next: 13}, s.Journal)
	})
	t.Run("age", func(t *testing.T) {
		cfg := brokertest.Config(t)
		cfg.Sessions.Retention.MaxAge = 700 * time.Millisecond
		b := brokertest.Start(t, cfg)
		d := device(t, "tcp://"+b.Addrs().MQTT, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "box")
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		require.NoError(t, d.SetCursor("old"))
		_, err = d.Ping(ctx(t))
		require.NoError(t, err)
		require.Equal(t, []string{"begin", "presence:begin", "ping"}, journal(t, b, "alice", "box"), "young events stay")

		time.Sleep(900 * time.Millisecond)
		require.NoError(t, d.SetCursor("new"))
		_, err = d.Ping(ctx(t))
		require.NoError(t, err)
		events, err := b.Sessions().Log("alice", "box", 0, 0)
		require.NoError(t, err)
		require.Len(t, events, 1, "the events older than 700ms went with the next append")
		require.Equal(t, uint64(4), events[0].Seq)
		require.Equal(t, "new", events[0].Detail["cursor"])
	})
}

func TestMalformedRequests(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	d := device(t, url, "alice", token, "box")
	begun, err := d.Begin(ctx(t))
	require.NoError(t, err)
	raw := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token))
	replies := brokertest.NewMessages(32)
	require.NoError(t, brokertest.Wait(raw.Subscribe("sessions/alice/+/res", 1, replies.Handler)))
	before, err := b.Sessions().Get("alice", "box")
	require.NoError(t, err)

	tests := []struct {
		name, payload string
		code          string
		id            string
	}{
		{"not json", `hello`, "bad_request", "null"},
		{"array", `[1,2]`, "bad_request", "null"},
		{"missing id", `{"op":"begin"}`, "bad_request", "null"},
		{"object id", `{"id":{"a":1},"op":"begin"}`, "bad_request", "null"},
		{"missing op", `{"id":1}`, "bad_request", "1"},
		{"unknown op", `{"id":"x","op":"explode"}`, "bad_request", `"x"`},
		{"unknown field", `{"id":2,"op":"ping","nonce":"n","colour":"red"}`, "bad_request", "2"},
		{"ping without nonce", `{"id":3,"op":"ping"}`, "bad_request", "3"},
		{"remember without memento", `{"id":4,"op":"remember","nonce":"` + begun.Nonce + `"}`, "bad_request", "4"},
		{"stale nonce", `{"id":5,"op":"remember","nonce":"feed","memento":1}`, "stale_nonce", "5"},
		{"trailing data", `{"id":6,"op":"begin"} {"id":7}`, "bad_request", "6"},
		{"oversize", `{"id":8,"op":"ping","nonce":"` + strings.Repeat("a", 70<<10) + `"}`, "too_large", "null"},
		{"memento too large", `{"id":9,"op":"remember","nonce":"` + begun.Nonce + `","memento":"` + strings.Repeat("m", 20<<10) + `"}`, "too_large", "9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, brokertest.Wait(raw.Publish("sessions/alice/box/req", 1, false, tc.payload)))
			msg := replies.Next(t, 2*time.Second)
			var res struct {
				ID    json.RawMessage
				Error struct{ Code, Message string }
			}
			require.NoError(t, json.Unmarshal(msg.Payload(), &res), "%s", msg.Payload())
			require.Equal(t, tc.code, res.Error.Code, res.Error.Message)
			require.NotEmpty(t, res.Error.Message)
			require.JSONEq(t, tc.id, string(res.ID))
		})
	}
	after, err := b.Sessions().Get("alice", "box")
	require.NoError(t, err)
	require.Equal(t, before.Nonce, after.Nonce)
	require.Equal(t, before.Memento, after.Memento)
	require.Equal(t, before.Journal, after.Journal, "nothing journaled, nothing changed")

	// Names that are not names never reach the registry.
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.Equal(t, []string{"box"}, names)
}

// TestRequestsOnInvalidNames: a request on sessions/U/<not a name>/req is
// answered bad_request on the same topic with res for req (or on its MQTT 5
// response topic), MQTT 5 publishers also get PUBACK 0x90, and nothing is
// stored. A topic with + or # is not a topic: MQTT forbids it in a PUBLISH
// and the broker closes the connection, so there is nowhere to reply;
// both are counted.
func TestRequestsOnInvalidNames(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	raw := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token))
	seen := brokertest.NewMessages(32)
	require.NoError(t, brokertest.Wait(raw.Subscribe("sessions/alice/#", 1, seen.Handler)))
	long := strings.Repeat("n", 65)

	for i, name := range []string{"x/y", "bad$name", long, "", "a b"} {
		t.Run("v3 "+name, func(t *testing.T) {
			id := fmt.Sprint(i)
			require.NoError(t, brokertest.Wait(raw.Publish("sessions/alice/"+name+"/req", 1, false, `{"id":`+id+`,"op":"begin"}`)))
			msg := seen.Next(t, 2*time.Second)
			require.Equal(t, "sessions/alice/"+name+"/res", msg.Topic())
			var res struct {
				ID    json.RawMessage
				Error struct{ Code, Message string }
			}
			require.NoError(t, json.Unmarshal(msg.Payload(), &res), "%s", msg.Payload())
			require.Equal(t, "bad_request", res.Error.Code)
			require.Contains(t, res.Error.Message, "not a name")
			require.JSONEq(t, id, string(res.ID))
		})
	}
	require.True(t, raw.IsConnectionOpen())

	host, port, _ := strings.Cut(b.Addrs().MQTT, ":")
	base := []string{"-h", host, "-p", port, "-u", "alice", "-P", token}
	t.Run("v5 puback", func(t *testing.T) {
		out, _ := exec.Command("mosquitto_pub", append(base, "-V", "5", "-q", "1", "-t", "sessions/alice/x/y/req", "-m", `{"id":"v5","op":"begin"}`)...).CombinedOutput()
		require.Contains(t, strings.ToLower(string(out)), "topic name invalid")
		require.Equal(t, "sessions/alice/x/y/res", seen.Next(t, 2*time.Second).Topic())
	})
	t.Run("v5 response topic", func(t *testing.T) {
		out, err := exec.Command("mosquitto_rr", append(base, "-t", "sessions/alice/bad$name/req", "-e", "sessions/alice/rr", "-W", "5",
			"-m", `{"id":"rr","op":"begin"}`)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), `"id":"rr","error":{"code":"bad_request"`)
		require.Equal(t, "sessions/alice/rr", seen.Next(t, 2*time.Second).Topic())
	})
	require.Equal(t, 7.0, metric(t, b.Addrs().HTTP, `tether_request_bad_topic_total{reason="session_name"}`))

	t.Run("wildcard", func(t *testing.T) {
		lost := make(chan error, 1)
		c := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token).
			SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
		c.Publish("sessions/alice/+/req", 1, false, `{"id":1,"op":"begin"}`)
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Fatal("a PUBLISH with a wildcard topic did not close the connection")
		}
		seen.None(t, 300*time.Millisecond)
		require.Equal(t, 1.0, metric(t, b.Addrs().HTTP, `tether_request_bad_topic_total{reason="wildcard"}`))
	})
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.Empty(t, names, "no session was created")
}

func TestOtherUsersSessionIsNotReachable(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	mallory := brokertest.MustConnect(t, brokertest.ClientOptions(url, "mallory", brokertest.Token(t, b, "mallory", auth.RoleDevice)))
	require.NoError(t, brokertest.Wait(mallory.Publish("sessions/alice/box/req", 1, false, `{"id":1,"op":"begin"}`)))
	time.Sleep(100 * time.Millisecond)
	_, err := b.Sessions().Get("alice", "box")
	require.True(t, errors.Is(err, sessions.ErrNotFound), "no session was created: %v", err)
}

func TestSessionsPerUserCap(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.MaxSessionsPerUser = 2
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	for _, name := range []string{"one", "two"} {
		_, err := device(t, url, "alice", token, name).Begin(ctx(t))
		require.NoError(t, err)
	}
	_, err := device(t, url, "alice", token, "three").Begin(ctx(t))
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "forbidden", string(ce.Code))
	require.Contains(t, ce.Message, "limit")
	_, err = device(t, url, "alice", token, "one").Begin(ctx(t))
	require.NoError(t, err, "existing sessions are not affected")
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.Equal(t, []string{"one", "two"}, names)
}
