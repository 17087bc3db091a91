package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/queues"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// QueueInfo is session's entry in b.SessionsOf(user).
func QueueInfo(t *testing.T, b *broker.Broker, user, session string) broker.SessionInfo {
	t.Helper()
	list, err := b.SessionsOf(user)
	require.NoError(t, err)
	for _, s := range list {
		if s.Name == session {
			return s
		}
	}
	t.Fatalf("no session %s/%s", user, session)
	return broker.SessionInfo{}
}

// kept is what a queue of QueueLimit keeping the newest holds after
// ticks pulses notifying every nth: seqs and data (the pulse counters).
func kept(ticks, every int) (seqs []uint64, data []int) {
	notified := ticks / every
	for i := notified - QueueLimit + 1; i <= notified; i++ {
		seqs = append(seqs, uint64(i))
		data = append(data, i*every)
	}
	return seqs, data
}

// runDevice runs the device command for session until the returned stop
// is called; its output is in out.
func runDevice(t *testing.T, url, user, token, session string, out *syncBuffer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"device", "--url", url, "--user", user, "--token", token, "--session", session}, out, out)
	}()
	return func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err, out.String())
		case <-time.After(10 * time.Second):
			t.Fatal("device did not stop")
		}
	}
}

var deviceLine = regexp.MustCompile(`^(client\d): seq (\d+): (.*)$`)

// received parses the device's notification lines for session.
func received(t *testing.T, out, session string) (seqs []uint64, data []int) {
	t.Helper()
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := deviceLine.FindStringSubmatch(l)
		if m == nil || m[1] != session {
			continue
		}
		seq, err := strconv.ParseUint(m[2], 10, 64)
		require.NoError(t, err)
		n, err := strconv.Atoi(m[3])
		require.NoError(t, err, "data is the counter: %q", l)
		seqs, data = append(seqs, seq), append(data, n)
	}
	return seqs, data
}

// TestHelloWorld runs the pulse fast with no device connected: each queue
// keeps its newest 10 notifications, in order, counting the drops. Then a
// device per session receives exactly those, in order, and acks them, and
// the status call shows the queues empty.
func TestHelloWorld(t *testing.T) {
	cfg := brokertest.Config(t)
	b := brokertest.Start(t, cfg)
	registerStatus(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "tcp://" + b.Addrs().MQTT

	const ticks = 61 // client1: 30 notified, client2: 20
	var pulses bytes.Buffer
	p := &Pulse{B: b, User: "alice", Out: &pulses}
	require.NoError(t, p.Init())
	require.NoError(t, p.Run(ctx, time.Millisecond, ticks))
	require.Equal(t, ticks, p.Counter())
	require.Equal(t, 30+20, strings.Count(pulses.String(), "notified"), pulses.String())
	require.Contains(t, pulses.String(), "pulse 60: notified client1 (seq 30)\npulse 60: notified client2 (seq 20)\n")

	sessions := []struct {
		name         string
		every        int
		notified     int
		wantSeqs     []uint64
		wantCounters []int
	}{
		{name: Client1, every: 2, notified: 30},
		{name: Client2, every: 3, notified: 20},
	}
	for i := range sessions {
		s := &sessions[i]
		s.wantSeqs, s.wantCounters = kept(ticks, s.every)
		t.Run(s.name+" keeps its newest 10", func(t *testing.T) {
			entries, err := b.Outq("alice", s.name, 0)
			require.NoError(t, err)
			require.Len(t, entries, QueueLimit)
			for j, e := range entries {
				require.Equal(t, s.wantSeqs[j], e.Seq, "seqs increase, the newest kept")
				require.JSONEq(t, strconv.Itoa(s.wantCounters[j]), string(e.Data), "the counters, in order")
				if j > 0 {
					require.Less(t, entries[j-1].Seq, e.Seq)
					require.False(t, e.Enqueued.Before(entries[j-1].Enqueued))
				}
			}
			info := QueueInfo(t, b, "alice", s.name)
			require.Equal(t, QueueLimit, info.Queue.Depth)
			require.Equal(t, map[queues.Reason]uint64{queues.ReasonOverflowOldest: uint64(s.notified - QueueLimit)}, info.Queue.Dropped)
			require.Equal(t, uint64(s.notified+1), info.Queue.NextSeq)
			require.Equal(t, uint64(0), info.Queue.Acked)
			require.Equal(t, QueueLimit, info.Queue.Limits.MaxMessages)
			require.Equal(t, queues.DropOldest, info.Queue.Limits.Policy)
		})
	}

	var tokOut, tokErr bytes.Buffer
	require.NoError(t, run(ctx, []string{"token", "--data", cfg.DataDir, "--user", "alice"}, &tokOut, &tokErr), tokErr.String())
	token := strings.TrimSpace(tokOut.String())
	ccfg := client.DefaultConfig()
	ccfg.URL, ccfg.User, ccfg.Token = url, "alice", token

	t.Run("status shows every queue", func(t *testing.T) {
		st, err := StatusOf(ctx, ccfg)
		require.NoError(t, err)
		require.Equal(t, StatusSession, st.Current)
		require.ElementsMatch(t, []string{Client1, Client2, StatusSession}, keys(st.Queues))
		for _, s := range sessions {
			entries, err := b.Outq("alice", s.name, 0)
			require.NoError(t, err)
			requireSameEntries(t, entries, st.Queues[s.name])
		}
		require.Empty(t, st.Queues[StatusSession])

		var out, errs bytes.Buffer
		require.NoError(t, run(ctx, []string{"status", "--url", url, "--token", token}, &out, &errs), errs.String())
		var want strings.Builder
		want.WriteString("current: status\n")
		for _, s := range sessions {
			fmt.Fprintf(&want, "%s: 10 queued\n", s.name)
			for j, seq := range s.wantSeqs {
				fmt.Fprintf(&want, "  seq %d: %d\n", seq, s.wantCounters[j])
			}
		}
		want.WriteString("status: 0 queued\n")
		require.Equal(t, want.String(), out.String())
	})

	t.Run("devices get exactly the newest 10, in order", func(t *testing.T) {
		for _, s := range sessions {
			var out syncBuffer
			stop := runDevice(t, url, "alice", token, s.name, &out)
			brokertest.WaitFor(t, 10*time.Second, s.name+" to receive and ack 10", func() bool {
				seqs, _ := received(t, out.String(), s.name)
				return len(seqs) >= QueueLimit && QueueInfo(t, b, "alice", s.name).Queue.Depth == 0
			})
			// The pulse has stopped and the queue is empty: nothing more can come.
			stop()
			seqs, counters := received(t, out.String(), s.name)
			require.Equal(t, s.wantSeqs, seqs, out.String())
			require.Equal(t, s.wantCounters, counters)
			require.True(t, strings.HasPrefix(out.String(), s.name+": begun, 10 queued (acked up to seq 0)\n"), out.String())
			require.Equal(t, s.wantSeqs[QueueLimit-1], QueueInfo(t, b, "alice", s.name).Queue.Acked)
		}
	})

	t.Run("status shows empty queues", func(t *testing.T) {
		st, err := StatusOf(ctx, ccfg)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{Client1, Client2, StatusSession}, keys(st.Queues))
		for name, entries := range st.Queues {
			require.Empty(t, entries, name)
			require.NotNil(t, entries, "%s: [] in JSON, not null", name)
		}
	})
}

func requireSameEntries(t *testing.T, want, got []queues.Entry) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i].Seq, got[i].Seq)
		require.JSONEq(t, string(want[i].Data), string(got[i].Data))
		require.True(t, want[i].Enqueued.Equal(got[i].Enqueued))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestServe runs the serve command with a fast pulse and checks, through
// the status command, that both queues fill up to their limit with the
// newest counters.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serveCtx, stop := context.WithCancel(ctx)
	var out, errs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(serveCtx, []string{"serve", "--data", dir, "--mqtt-addr", "127.0.0.1:0", "--every", "2ms"}, &out, &errs)
	}()
	addr := regexp.MustCompile(`^hello world on (\S+) `)
	var url string
	brokertest.WaitFor(t, 10*time.Second, "serve to start", func() bool {
		m := addr.FindStringSubmatch(out.String())
		if m != nil {
			url = "tcp://" + m[1]
		}
		return m != nil
	})
	brokertest.WaitFor(t, 10*time.Second, "30 pulses", func() bool {
		return strings.Contains(out.String(), "pulse 30: notified client1 (seq 15)\npulse 30: notified client2 (seq 10)\n")
	})

	var tok bytes.Buffer
	require.NoError(t, run(ctx, []string{"token", "--data", dir}, &tok, &errs), "token works while serve runs: %s", errs.String())
	var status bytes.Buffer
	require.NoError(t, run(ctx, []string{"status", "--url", url, "--token", strings.TrimSpace(tok.String()), "--json"}, &status, &errs), errs.String())
	stop()
	require.NoError(t, <-done, errs.String())
	require.NotContains(t, errs.String(), "level=ERROR") // mochi may warn of its closed listener

	var st Status
	require.NoError(t, json.Unmarshal(status.Bytes(), &st), status.String())
	for _, s := range []struct {
		name  string
		every int
	}{{Client1, 2}, {Client2, 3}} {
		entries := st.Queues[s.name]
		require.Len(t, entries, QueueLimit, s.name)
		for j, e := range entries {
			var n int
			require.NoError(t, json.Unmarshal(e.Data, &n))
			require.Zero(t, n%s.every, "%s gets every %dth count", s.name, s.every)
			if j > 0 {
				require.Equal(t, entries[j-1].Seq+1, e.Seq, "the newest 10, none missing between")
				var prev int
				require.NoError(t, json.Unmarshal(entries[j-1].Data, &prev))
				require.Equal(t, prev+s.every, n)
			}
		}
	}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	var out, errs bytes.Buffer
	for _, args := range [][]string{
		{},
		{"pulse"},
		{"serve", "--every", "0s"},
		{"serve", "extra"},
		{"device", "--bogus"},
	} {
		require.ErrorAs(t, run(ctx, args, &out, &errs), new(usageError), "%q", args)
	}
	require.NoError(t, run(ctx, []string{"help"}, &out, &errs))
	require.Contains(t, out.String(), "helloworld serve")
}
