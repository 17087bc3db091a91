package broker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/wire"
)

// notifier is a service-role paho client.
func notifier(t *testing.T, url, token string) paho.Client {
	return brokertest.MustConnect(t, brokertest.ClientOptions(url, "app", token))
}

func notifyMQTT(t *testing.T, n paho.Client, topic string, data any) {
	t.Helper()
	payload, err := json.Marshal(map[string]any{"data": data})
	require.NoError(t, err)
	require.NoError(t, brokertest.Wait(n.Publish(topic, 1, false, payload)))
}

// receive reads n notifications from d and returns their seqs and data.
func receive(t *testing.T, d *client.Client, n int) (seqs []uint64, data []string) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case note := <-d.Notifications():
			seqs = append(seqs, note.Seq)
			data = append(data, string(note.Data))
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d notifications: %v", i, n, seqs)
		}
	}
	return seqs, data
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestNotifyDeliverAck(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	app := notifier(t, url, brokertest.Token(t, b, "app", auth.RoleService))
	for i := 1; i <= 5; i++ { // queued before any device exists: creates the session
		notifyMQTT(t, app, "tether/notify/alice/kitchen", i)
	}
	out, err := b.Outq("alice", "kitchen", 0)
	require.NoError(t, err)
	require.Len(t, out, 5, "acknowledged means stored")

	d := device(t, url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "kitchen")
	begun, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, 5, begun.Queued)
	seqs, data := receive(t, d, 5)
	require.Equal(t, seqRange(1, 5), seqs)
	require.Equal(t, []string{"1", "2", "3", "4", "5"}, data)
	d.Ack(5)
	brokertest.WaitFor(t, 5*time.Second, "the acked entries to leave the queue", func() bool {
		out, err := b.Outq("alice", "kitchen", 0)
		return err == nil && len(out) == 0
	})

	// Live: a new notification reaches the attached device at once.
	seq, err := b.Notify("alice", "kitchen", map[string]string{"hello": "world"})
	require.NoError(t, err)
	require.Equal(t, uint64(6), seq)
	seqs, data = receive(t, d, 1)
	require.Equal(t, []uint64{6}, seqs)
	require.JSONEq(t, `{"hello":"world"}`, data[0])

	// Other users' sessions are not a device's to notify.
	dev := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice)))
	notifyMQTT(t, dev, "tether/notify/alice/kitchen", "forged")
	out, err = b.Outq("alice", "kitchen", 0)
	require.NoError(t, err)
	require.Len(t, out, 1, "only seq 6, not the forged one")
}

func TestSwitchDevicesMidQueue(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	for i := 1; i <= 10; i++ {
		_, err := b.Notify("alice", "tv", i)
		require.NoError(t, err)
	}
	proxy := brokertest.NewProxy(t, b.Addrs().MQTT)
	a := device(t, "tcp://"+proxy.Addr(), "alice", token, "tv")
	_, err := a.Begin(ctx(t))
	require.NoError(t, err)
	seqs, _ := receive(t, a, 10)
	require.Equal(t, seqRange(1, 10), seqs)
	a.Ack(5)
	brokertest.WaitFor(t, 5*time.Second, "ack of 1..5", func() bool {
		out, err := b.Outq("alice", "tv", 0)
		return err == nil && len(out) == 5
	})
	proxy.Close() // device A dies with 6..10 received but not acknowledged

	bdev := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "tv")
	begun, err := bdev.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, uint64(5), begun.Acked)
	seqs, data := receive(t, bdev, 5)
	require.Equal(t, seqRange(6, 10), seqs, "device B continues after the last acked seq")
	require.Equal(t, []string{"6", "7", "8", "9", "10"}, data)
}

// A notification lost on its way (never reaching the device) must not be
// acked past: the next one's prev shows the gap, the device asks for a
// resend, and every seq arrives in order. Holes the queue made (a
// collapse) are not gaps.
func TestGapInTransitIsResent(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	var lost atomic.Int32
	b.LoseInTransit(func(seq uint64) bool { return seq == 3 && lost.Add(1) == 1 })
	for i := 1; i <= 6; i++ {
		_, err := b.Enqueue("alice", "tv", queues.Message{Data: json.RawMessage(strconv.Itoa(i)), Key: map[int]string{5: "k", 6: "k"}[i]})
		require.NoError(t, err)
	}
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "tv")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	seqs, data := receive(t, d, 5)
	require.Equal(t, []uint64{1, 2, 3, 4, 6}, seqs, "3 sent again after the gap; 5 collapsed into 6")
	require.Equal(t, []string{"1", "2", "3", "4", "6"}, data)
	require.Equal(t, int32(2), lost.Load(), "3 was sent twice: lost, then resent")
	d.Ack(6)
	brokertest.WaitFor(t, 5*time.Second, "the queue to drain", func() bool {
		out, err := b.Outq("alice", "tv", 0)
		return err == nil && len(out) == 0
	})
	select {
	case n := <-d.Notifications():
		t.Fatalf("unexpected notification %d", n.Seq)
	case <-time.After(200 * time.Millisecond):
	}
}

// A begin holds delivery until its reply is out, and only that begin ends
// the hold: a request from the device it took over from, answered
// meanwhile, must not let a notification reach the new device before the
// reply (it would drop it, and with no later notification to show the
// gap, never get it).
func TestBeginHoldSurvivesOtherDevicesRequests(t *testing.T) {
	var begins atomic.Int32
	paused, resume := make(chan struct{}), make(chan struct{})
	restore := broker.SetAfterBegin(func(user, session string) {
		if session == "tv" && begins.Add(1) == 2 {
			close(paused)
			<-resume
		}
	})
	b := brokertest.Start(t, brokertest.Config(t))
	t.Cleanup(func() { b.Close(); restore() })
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	url := "tcp://" + b.Addrs().MQTT
	a := device(t, url, "alice", token, "tv")
	_, err := a.Begin(ctx(t))
	require.NoError(t, err)

	bdev := device(t, url, "alice", token, "tv")
	begun := make(chan error, 1)
	go func() { _, err := bdev.Begin(ctx(t)); begun <- err }()
	<-paused // B is attached; its reply is not out
	_, err = a.Ping(ctx(t))
	require.ErrorIs(t, err, client.ErrStaleNonce, "A was taken over")
	_, err = b.Notify("alice", "tv", "after the takeover")
	require.NoError(t, err)
	close(resume)
	require.NoError(t, <-begun)
	seqs, data := receive(t, bdev, 1)
	require.Equal(t, []uint64{1}, seqs)
	require.Equal(t, []string{`"after the takeover"`}, data)
}

// A run of pipelined notifies to one session commits in one transaction:
// each message the queue refuses gets its own error and changes nothing,
// the others are queued in order, and a run refused whole stores nothing,
// not even a new session.
func TestNotifyRunCommitsTogether(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.QueueRules = []broker.QueueRule{{Pattern: "strict*", Limits: queues.Limits{MaxMessages: 3, MaxBytes: 64, Policy: queues.Reject}}}
	b := brokertest.Start(t, cfg)
	msg := func(data string) queues.Message { return queues.Message{Data: json.RawMessage(data)} }
	big := msg(`"` + strings.Repeat("x", 100) + `"`)

	entries, errs, err := b.CommitBatch("alice", "strict", []queues.Message{msg("1"), big, msg("2"), msg("3"), msg("4")})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 0, 2, 3, 0}, []uint64{entries[0].Seq, entries[1].Seq, entries[2].Seq, entries[3].Seq, entries[4].Seq})
	require.ErrorIs(t, errs[1], queues.ErrTooLarge)
	require.ErrorIs(t, errs[4], queues.ErrFull)
	require.NoError(t, errors.Join(errs[0], errs[2], errs[3]))
	out, err := b.Outq("alice", "strict", 0)
	require.NoError(t, err)
	require.Len(t, out, 3)
	for i, e := range out {
		require.Equal(t, uint64(i+1), e.Seq)
		require.Equal(t, strconv.Itoa(i+1), string(e.Data))
	}

	_, errs, err = b.CommitBatch("alice", "strict-new", []queues.Message{big, big})
	require.NoError(t, err)
	require.ErrorIs(t, errs[0], queues.ErrTooLarge)
	require.ErrorIs(t, errs[1], queues.ErrTooLarge)
	list, err := b.SessionsOf("alice")
	require.NoError(t, err)
	require.Len(t, list, 1, "the refused run created no session: %v", list)
}

// A notify whose payload is not a notification is refused, queues nothing,
// and is counted as bad_request.
func TestMalformedNotifyIsCounted(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	app := notifier(t, "tcp://"+b.Addrs().MQTT, brokertest.Token(t, b, "app", auth.RoleService))
	for _, payload := range []string{`{"data":1,"collapse":"k1"}`, `not json`} {
		require.NoError(t, brokertest.Wait(app.Publish("tether/notify/alice/s", 1, false, payload))) // 3.1.1: acked all the same
	}
	brokertest.WaitFor(t, 3*time.Second, "both refusals counted", func() bool {
		return metric(t, b.Addrs().HTTP, `tether_notifications_rejected_total{code="bad_request"}`) == 2
	})
	out, err := b.Outq("alice", "s", 0)
	require.NoError(t, err)
	require.Empty(t, out)
}

func TestQueuePoliciesEndToEnd(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.QueueRules = []broker.QueueRule{
		{Pattern: "strict-*", Limits: queues.Limits{MaxMessages: 2, MaxBytes: 1 << 20, Policy: queues.Reject}},
		{Pattern: "latest", Limits: queues.Limits{MaxMessages: 1, MaxBytes: 1 << 20, Policy: queues.DropOldest}},
	}
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT
	appToken := brokertest.Token(t, b, "app", auth.RoleService)
	app := notifier(t, url, appToken)

	t.Run("reject", func(t *testing.T) {
		notifyMQTT(t, app, "tether/notify/alice/strict-1", "a")
		notifyMQTT(t, app, "tether/notify/alice/strict-1", "b")
		_, err := b.Notify("alice", "strict-1", "c")
		require.ErrorIs(t, err, queues.ErrFull)
		notifyMQTT(t, app, "tether/notify/alice/strict-1", "d") // MQTT 3.1.1: acked and refused
		out, err := b.Outq("alice", "strict-1", 0)
		require.NoError(t, err)
		require.Len(t, out, 2)
		require.Equal(t, `"a"`, string(out[0].Data))
		require.Equal(t, `"b"`, string(out[1].Data))
		require.GreaterOrEqual(t, metric(t, b.Addrs().HTTP, `tether_notifications_rejected_total{code="queue_full"}`), 2.0)

		host, port, _ := strings.Cut(b.Addrs().MQTT, ":")
		got, _ := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-u", "app", "-P", appToken, "-V", "5", "-q", "1",
			"-t", "tether/notify/alice/strict-1", "-m", `{"data":"e"}`).CombinedOutput()
		require.Contains(t, strings.ToLower(string(got)), "quota exceeded", "MQTT 5 publishers learn queue_full from the PUBACK")
	})
	t.Run("keep latest, drops journaled", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			notifyMQTT(t, app, "tether/notify/alice/latest", i)
		}
		out, err := b.Outq("alice", "latest", 0)
		require.NoError(t, err)
		require.Len(t, out, 1)
		require.Equal(t, uint64(3), out[0].Seq)
		var drops []string
		for _, k := range journal(t, b, "alice", "latest") {
			if strings.HasPrefix(k, "drop") {
				drops = append(drops, k)
			}
		}
		require.Equal(t, []string{"drop:overflow_oldest", "drop:overflow_oldest"}, drops)
		require.GreaterOrEqual(t, metric(t, b.Addrs().HTTP, `tether_notifications_dropped_total{reason="overflow_oldest"}`), 2.0)
		// Every notify above was a durable commit behind some sync round;
		// every round but the first (at open, of what the store held) synced
		// at least one commit.
		syncs := metric(t, b.Addrs().HTTP, `tether_store_syncs_total`)
		require.GreaterOrEqual(t, syncs, 2.0)
		require.GreaterOrEqual(t, metric(t, b.Addrs().HTTP, `tether_store_commits_total`), syncs-1)
	})
	t.Run("bad payload", func(t *testing.T) {
		require.NoError(t, brokertest.Wait(app.Publish("tether/notify/alice/bad", 1, false, `{"dat":1}`)))
		require.NoError(t, brokertest.Wait(app.Publish("tether/notify/alice/bad", 1, false, `not json`)))
		names, err := b.Sessions().Names("alice")
		require.NoError(t, err)
		require.NotContains(t, names, "bad", "nothing was created")
	})
	t.Run("all sessions and patterns", func(t *testing.T) {
		for _, s := range []string{"room-1", "room-2", "hall"} {
			_, err := b.Notify("bob", s, "init")
			require.NoError(t, err)
		}
		notifyMQTT(t, app, "tether/notify/bob/room-*", "rooms")
		notifyMQTT(t, app, "tether/notify/bob", "everyone")
		count := func(s string) int {
			out, err := b.Outq("bob", s, 0)
			require.NoError(t, err)
			return len(out)
		}
		require.Equal(t, 3, count("room-1"))
		require.Equal(t, 3, count("room-2"))
		require.Equal(t, 2, count("hall"))
		infos, err := b.SessionsOf("bob")
		require.NoError(t, err)
		require.Len(t, infos, 3)
		require.Equal(t, "hall", infos[0].Name)
		require.Equal(t, 2, infos[0].Queue.Depth)
	})
}

// TestQueueSurvivesKill9: notifications acknowledged to the notifier (PUBACK)
// survive kill -9 of the broker process; after the restart a device gets
// all of them in order and new ones continue the seqs.
func TestQueueSurvivesKill9(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	cfg := brokertest.Config(t)
	cfg.DataDir = dir
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	appToken := brokertest.Token(t, b, "app", auth.RoleService)
	devToken := brokertest.Token(t, b, "alice", auth.RoleDevice)
	require.NoError(t, b.Close())

	child := startBroker(t, dir, addr)
	app := notifier(t, "tcp://"+addr, appToken)
	for i := 1; i <= 50; i++ {
		notifyMQTT(t, app, "tether/notify/alice/inbox", i)
	}
	require.NoError(t, child.cmd.Process.Signal(syscall.SIGKILL)) // right after the last PUBACK
	require.True(t, killedBy(child.wait(t, 5*time.Second), syscall.SIGKILL))
	app.Disconnect(0)

	startBroker(t, dir, addr)
	d := device(t, "tcp://"+addr, "alice", devToken, "inbox")
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	seqs, data := receive(t, d, 50)
	require.Equal(t, seqRange(1, 50), seqs, "nothing lost, in order")
	require.Equal(t, "50", data[49])
	app2 := notifier(t, "tcp://"+addr, appToken)
	notifyMQTT(t, app2, "tether/notify/alice/inbox", "after")
	seqs, _ = receive(t, d, 1)
	require.Equal(t, []uint64{51}, seqs, "no seq reused")
}

// TestLargeQueueBoundedMemory: a queue of many entries is delivered through
// the window, and the broker's heap does not grow with the queue.
func TestLargeQueueBoundedMemory(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	cfg := brokertest.Config(t)
	cfg.QueueLimits = queues.Limits{MaxMessages: n, MaxBytes: 64 << 20, Policy: queues.DropOldest}
	seedQueue(t, cfg.DataDir, "alice", "big", n, cfg.QueueLimits)
	b := brokertest.Start(t, cfg)
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "big")
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	begun, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, n, begun.Queued)

	var peak uint64
	next := uint64(1)
	deadline := time.After(3 * time.Minute)
	for next <= uint64(n) {
		select {
		case note := <-d.Notifications():
			require.Equal(t, next, note.Seq)
			next++
			if note.Seq%32 == 0 { // well inside the delivery window (64)
				d.Ack(note.Seq)
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		case <-deadline:
			t.Fatalf("delivered %d of %d", next-1, n)
		}
	}
	d.Ack(uint64(n))
	growth := int64(peak) - int64(base.HeapInuse)
	t.Logf("delivered %d entries; heap in use grew at most %d MiB", n, growth>>20)
	require.Less(t, growth, int64(96<<20), "heap must not hold the queue (%d entries ≈ %d MiB stored)", n, n*40>>20)
}

// seedQueue fills user/session's queue with n entries straight into the
// data directory, in large transactions.
func seedQueue(t *testing.T, dir, user, session string, n int, l queues.Limits) {
	pc := persistence.DefaultConfig()
	pc.Dir = dir
	s, err := persistence.Open(pc)
	require.NoError(t, err)
	defer s.Close()
	now := time.Now()
	for i := 0; i < n; i += 2000 {
		require.NoError(t, s.Update(func(tx persistence.Txn) error {
			for j := i; j < i+2000 && j < n; j++ {
				if _, _, err := queues.Enqueue(tx, user, session, queues.Message{Data: json.RawMessage(fmt.Sprint(j + 1))}, l, now); err != nil {
					return err
				}
			}
			return nil
		}))
	}
}

// TestNotifyPipelined has one notifier keep hundreds of publishes in flight
// to one session: the broker commits them in arrival order and acknowledges
// each once durable, so every PUBACK arrives and the queue holds them in
// publish order with seqs 1..n.
func TestNotifyPipelined(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	app := notifier(t, url, brokertest.Token(t, b, "app", auth.RoleService))
	const n = 300
	toks := make([]paho.Token, n)
	for i := range n {
		toks[i] = app.Publish("tether/notify/alice/feed", 1, false, fmt.Sprintf(`{"data":%d}`, i))
	}
	for _, tok := range toks {
		require.NoError(t, brokertest.Wait(tok))
	}
	out, err := b.Outq("alice", "feed", 0)
	require.NoError(t, err)
	require.Len(t, out, n)
	for i, e := range out {
		require.Equal(t, uint64(i+1), e.Seq)
		require.Equal(t, strconv.Itoa(i), string(e.Data))
	}

	d := device(t, url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "feed")
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	window := broker.DefaultConfig().DeliveryWindow
	var seqs []uint64
	for len(seqs) < n {
		more, _ := receive(t, d, min(window, n-len(seqs))) // nothing more comes before an ack
		seqs = append(seqs, more...)
		d.Ack(seqs[len(seqs)-1])
	}
	require.Equal(t, seqRange(1, n), seqs)
}

// A committed run of notifies is sent to a device that has everything
// before it without reading the queue back, and what arrives is still just
// what a read would find: not the entry a later message of the run
// collapsed, never more than the window, the rest after the ack, and the
// next run after that.
func TestOfferedRunsDeliverWhatIsQueued(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.DeliveryWindow = 4
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT
	d := device(t, url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "live")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	msg := func(data, key string) queues.Message { return queues.Message{Data: json.RawMessage(data), Key: key} }

	require.NoError(t, b.NotifyRun("alice", "live", []queues.Message{
		msg(`"old"`, "k"), msg(`"new"`, "k"), msg("3", ""), msg("4", ""), msg("5", ""), msg("6", ""),
	}))
	seqs, data := receive(t, d, 4)
	require.Equal(t, []uint64{2, 3, 4, 5}, seqs, "seq 1 was collapsed by seq 2 in the same run")
	require.Equal(t, []string{`"new"`, "3", "4", "5"}, data)
	select {
	case n := <-d.Notifications():
		t.Fatalf("seq %d arrived with a window of 4 full", n.Seq)
	case <-time.After(300 * time.Millisecond):
	}

	d.Ack(5)
	seqs, _ = receive(t, d, 1)
	require.Equal(t, []uint64{6}, seqs)
	d.Ack(6)
	require.NoError(t, b.NotifyRun("alice", "live", []queues.Message{msg("7", ""), msg("8", "")}))
	seqs, data = receive(t, d, 2)
	require.Equal(t, []uint64{7, 8}, seqs)
	require.Equal(t, []string{"7", "8"}, data)
}

// TestNotifyPipelinedRefusalsInOrder sends MQTT 5 publishes back to back to
// a queue that takes two: the PUBACKs come in publish order, two successes
// and then "quota exceeded" (0x97) for the rest.
func TestNotifyPipelinedRefusalsInOrder(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.QueueRules = []broker.QueueRule{{Pattern: "strict", Limits: queues.Limits{MaxMessages: 2, MaxBytes: 1 << 20, Policy: queues.Reject}}}
	b := brokertest.Start(t, cfg)
	host, port, _ := strings.Cut(b.Addrs().MQTT, ":")
	cmd := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-u", "app", "-P", brokertest.Token(t, b, "app", auth.RoleService),
		"-V", "5", "-q", "1", "-d", "-l", "-t", "tether/notify/alice/strict")
	cmd.Stdin = strings.NewReader(strings.Repeat(`{"data":"x"}`+"\n", 6))
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", got)
	var codes []string
	for _, line := range strings.Split(string(got), "\n") {
		if _, rest, ok := strings.Cut(line, "received PUBACK ("); ok {
			codes = append(codes, rest)
		}
	}
	require.Equal(t, []string{"Mid: 1, RC:0)", "Mid: 2, RC:0)", "Mid: 3, RC:151)", "Mid: 4, RC:151)", "Mid: 5, RC:151)", "Mid: 6, RC:151)"}, codes, "%s", got)
	out, err := b.Outq("alice", "strict", 0)
	require.NoError(t, err)
	require.Len(t, out, 2)
}

// TestPatternNotifyRefusedPartway: a notify to a name pattern that one
// matching session refuses (reject policy, queue full) stays queued for the
// sessions before it, and is delivered to their attached devices at once,
// at QoS 1 (committed by the ack queue) as at QoS 2 (by mochi's handshake).
func TestPatternNotifyRefusedPartway(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.QueueRules = []broker.QueueRule{{Pattern: "z-*", Limits: queues.Limits{MaxMessages: 1, MaxBytes: 1 << 20, Policy: queues.Reject}}}
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT
	_, err := b.Notify("bob", "z-full", "fill")
	require.NoError(t, err)
	d := device(t, url, "bob", brokertest.Token(t, b, "bob", auth.RoleDevice), "a-room")
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	app := notifier(t, url, brokertest.Token(t, b, "app", auth.RoleService))
	for i, qos := range []byte{1, 2} {
		payload := fmt.Sprintf(`{"data":"qos%d"}`, qos)
		require.NoError(t, brokertest.Wait(app.Publish("tether/notify/bob/*", qos, false, payload)))
		seqs, data := receive(t, d, 1)
		require.Equal(t, []uint64{uint64(i + 1)}, seqs)
		require.Equal(t, []string{fmt.Sprintf(`"qos%d"`, qos)}, data)
	}
	out, err := b.Outq("bob", "z-full", 0)
	require.NoError(t, err)
	require.Len(t, out, 1, "the full queue refused both")
}

// TestNotifyQoS2: an exactly-once notify is committed once, in order,
// through mochi's PUBREC/PUBREL handshake.
func TestNotifyQoS2(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	host, port, _ := strings.Cut(b.Addrs().MQTT, ":")
	for _, v := range []string{"mqttv311", "5"} {
		cmd := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-u", "app", "-P", brokertest.Token(t, b, "app", auth.RoleService),
			"-V", v, "-q", "2", "-l", "-t", "tether/notify/alice/exact")
		cmd.Stdin = strings.NewReader(`{"data":1}` + "\n" + `{"data":2}` + "\n")
		got, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", got)
	}
	out, err := b.Outq("alice", "exact", 0)
	require.NoError(t, err)
	var data []string
	for _, e := range out {
		data = append(data, string(e.Data))
	}
	require.Equal(t, []string{"1", "2", "1", "2"}, data)
}

// TestDeliveryWaitsForSubscription: a device that begins (or comes back)
// before it has subscribed to its notify topic gets its queued
// notifications once it subscribes. Sent before, they would reach no one,
// and its next cumulative ack would skip them.
func TestDeliveryWaitsForSubscription(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	app := notifier(t, url, brokertest.Token(t, b, "app", auth.RoleService))
	for i := 1; i <= 3; i++ {
		notifyMQTT(t, app, "tether/notify/alice/late", i)
	}

	// Notifications go to the default handler, as in the client SDK: the
	// broker may send them before the SUBACK [MQTT-3.8.4-4], and paho
	// routes a message to a subscription's own handler only after it.
	notes := brokertest.NewMessages(8)
	opts := brokertest.ClientOptions(url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice)).
		SetDefaultPublishHandler(notes.Handler).SetOrderMatters(true) // in order, as the SDK does
	dev := brokertest.MustConnect(t, opts)
	replies := brokertest.NewMessages(4)
	require.NoError(t, brokertest.Wait(dev.Subscribe("sessions/alice/late/res", 1, replies.Handler)))
	require.NoError(t, brokertest.Wait(dev.Publish("sessions/alice/late/req", 1, false, `{"id":1,"op":"begin"}`)))
	var res wire.Response
	require.NoError(t, json.Unmarshal(replies.Next(t, 5*time.Second).Payload(), &res))
	require.Nil(t, res.Error)

	require.NoError(t, brokertest.Wait(dev.Subscribe("sessions/alice/late/notify", 1, nil)))
	for want := uint64(1); want <= 3; want++ {
		var n wire.Notification
		require.NoError(t, json.Unmarshal(notes.Next(t, 5*time.Second).Payload(), &n))
		require.Equal(t, want, n.Seq, "every queued notification arrives once subscribed, in order")
	}
	notes.None(t, 300*time.Millisecond)
}

// TestSyncDelayReachesTheStore: with Config.SyncDelay, acknowledged
// notifies still wait for their sync round, and rounds start that far
// apart: three notifies one after another take two delays at least.
func TestSyncDelayReachesTheStore(t *testing.T) {
	const delay = 10 * time.Millisecond
	cfg := brokertest.Config(t)
	cfg.SyncDelay = delay
	b := brokertest.Start(t, cfg)
	start := time.Now()
	for i := range 3 {
		seq, err := b.Notify("alice", "kitchen", i)
		require.NoError(t, err)
		require.Equal(t, uint64(i+1), seq)
	}
	require.GreaterOrEqual(t, time.Since(start), 2*delay)
	entries, err := b.Outq("alice", "kitchen", 10)
	require.NoError(t, err)
	require.Len(t, entries, 3)
}

// TestCursorsOfGoneDevicesPruned: the delivery cursors of sessions whose
// devices have gone are dropped by the periodic sweep, so they do not
// pile up with every session ever delivered to.
func TestCursorsOfGoneDevicesPruned(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.SweepInterval = 50 * time.Millisecond
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	var devices []*client.Client
	for i := range 5 {
		name := fmt.Sprintf("s%d", i)
		d := device(t, url, "alice", token, name)
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		_, err = b.Notify("alice", name, i)
		require.NoError(t, err)
		receive(t, d, 1)
		devices = append(devices, d)
	}
	require.Equal(t, 5, b.Cursors())
	devices[0].Close()
	devices[1].Close()
	brokertest.WaitFor(t, 3*time.Second, "the cursors of the two gone devices to go", func() bool { return b.Cursors() == 3 })
	_, err := b.Notify("alice", "s2", "still served")
	require.NoError(t, err)
	_, data := receive(t, devices[2], 1)
	require.Equal(t, []string{`"still served"`}, data)
}

// TestReadPastExpiredEntriesRemovesThem: entries whose TTL passed while
// the device was away are removed (and journaled as expired) as soon as a
// delivery passes over them, not only at the next sweep.
func TestReadPastExpiredEntriesRemovesThem(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.SweepInterval = time.Hour
	b := brokertest.Start(t, cfg)
	for i := range 3 {
		_, err := b.Enqueue("alice", "radio", queues.Message{Data: json.RawMessage(strconv.Itoa(i)), TTL: 50 * time.Millisecond})
		require.NoError(t, err)
	}
	_, err := b.Notify("alice", "radio", "stays")
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // the three expire
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice), "radio")
	_, err = d.Begin(ctx(t))
	require.NoError(t, err)
	seqs, data := receive(t, d, 1)
	require.Equal(t, []uint64{4}, seqs)
	require.Equal(t, []string{`"stays"`}, data)
	drops := func() []string {
		return slices.DeleteFunc(journal(t, b, "alice", "radio"), func(k string) bool { return !strings.HasPrefix(k, "drop") })
	}
	brokertest.WaitFor(t, 3*time.Second, "the expired entries to go", func() bool { return len(drops()) == 3 })
	require.Equal(t, []string{"drop:expired", "drop:expired", "drop:expired"}, drops())
	qi, err := b.Admin().QueueInfo("alice", "radio")
	require.NoError(t, err)
	require.Equal(t, 1, qi.Depth, "only the live entry is stored")
}
