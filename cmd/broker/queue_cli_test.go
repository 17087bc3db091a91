package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
)

// longNote is a notification too long for the DATA column of `queue peek`.
var longNote = `{"note":"` + strings.Repeat("x", 80) + `","temp":21.5}`

// receiveAndAck begins user/name as a device, receives want notifications
// (checking their seqs run 1..want), acks up to upto, and disconnects
// cleanly once the broker has the ack.
func receiveAndAck(t *testing.T, b *broker.Broker, user, token, name string, want int, upto uint64) []client.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = "tcp://"+b.Addrs().MQTT, user, token, name
	c, err := client.Dial(ctx, cfg)
	require.NoError(t, err)
	defer c.Close()
	begun, err := c.Begin(ctx)
	require.NoError(t, err)
	require.Equal(t, want, begun.Queued)
	var got []client.Notification
	for len(got) < want {
		select {
		case n := <-c.Notifications():
			require.Equal(t, uint64(len(got)+1), n.Seq, "in seq order, none missing")
			got = append(got, n)
		case <-ctx.Done():
			t.Fatalf("received %d of %d notifications", len(got), want)
		}
	}
	c.Ack(upto)
	brokertest.WaitFor(t, 5*time.Second, "the ack to reach the broker", func() bool {
		return queueOf(t, b, user, name).Acked == upto
	})
	return got
}

// queueOf is user/name's entry in b.SessionsOf.
func queueOf(t *testing.T, b *broker.Broker, user, name string) (q struct {
	Acked   uint64
	Depth   int
	Dropped map[queues.Reason]uint64
}) {
	t.Helper()
	list, err := b.SessionsOf(user)
	require.NoError(t, err)
	for _, s := range list {
		if s.Name == name {
			q.Acked, q.Depth, q.Dropped = s.Queue.Acked, s.Queue.Depth, s.Queue.Dropped
			return q
		}
	}
	t.Fatalf("no session %s/%s", user, name)
	return q
}

// peekSeqs runs `queue peek --json` and returns the seqs listed.
func peekSeqs(t *testing.T, dir, key string) []uint64 {
	t.Helper()
	var entries []queues.Entry
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "queue", "peek", key, "--json", "--data-dir", dir)), &entries))
	seqs := []uint64{}
	for _, e := range entries {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// queueFields is the queue lines of `sessions show`.
func queueFields(t *testing.T, dir, key string) map[string]string {
	t.Helper()
	f := showFields(t, dir, key)
	out := map[string]string{}
	for _, k := range []string{"queued", "acked", "next seq", "dropped", "queue limits"} {
		v, ok := f[k]
		require.True(t, ok, "sessions show has %q", k)
		out[k] = v
	}
	return out
}

// lastEvent is the newest event of user/name's journal, read with `sessions log --json`.
func lastEvent(t *testing.T, dir, key string) sessions.Event {
	t.Helper()
	var events []sessions.Event
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "sessions", "log", key, "--json", "--data-dir", dir)), &events))
	require.NotEmpty(t, events)
	return events[len(events)-1]
}

// checkPeek checks `queue peek` and `sessions show` on alice/kitchen once
// a device has acked 1-3 of the six notifications TestQueueCLI made.
func checkPeek(t *testing.T, dir string) {
	stampRE := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	out := mustRun(t, "queue", "peek", "alice/kitchen", "--data-dir", dir)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 4, out)
	require.Equal(t, []string{"SEQ", "ENQUEUED", "EXPIRES", "KEY", "DATA"}, strings.Fields(lines[0]))
	require.Regexp(t, `^4 +`+stampRE+` +- +- +4$`, lines[1])
	require.Regexp(t, `^5 +`+stampRE+` +- +- +5$`, lines[2])
	require.Regexp(t, `^6 +`+stampRE+` +`+stampRE+` +temp +`, lines[3])
	require.True(t, strings.HasSuffix(lines[3], "  "+longNote[:maxDataShown]+"…"), "data is cut: %q", lines[3])
	col := strings.Index(lines[0], "DATA")
	for _, l := range lines[1:] {
		require.NotEqual(t, ' ', rune(l[col]), "columns are aligned: %q", out)
		require.Equal(t, ' ', rune(l[col-1]), "columns are aligned: %q", out)
	}

	var entries []queues.Entry
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "queue", "peek", "--json", "alice/kitchen", "--data-dir", dir)), &entries))
	require.Len(t, entries, 3)
	for i, e := range entries {
		require.Equal(t, uint64(i+4), e.Seq)
	}
	require.JSONEq(t, "4", string(entries[0].Data))
	require.JSONEq(t, longNote, string(entries[2].Data), "--json shows data whole")
	require.Equal(t, "temp", entries[2].Key)
	require.WithinDuration(t, entries[2].Enqueued.Add(time.Hour), entries[2].Expires, time.Millisecond)

	// Paging (column widths follow each page's rows).
	rows := func(lines ...string) (out [][]string) {
		for _, l := range lines {
			out = append(out, strings.Fields(l))
		}
		return out
	}
	stdout, stderr, err := runCmd(t, "queue", "peek", "alice/kitchen", "--limit", "2", "--data-dir", dir)
	require.NoError(t, err, stderr)
	require.Equal(t, rows(lines[:3]...), rows(strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")...))
	require.Equal(t, "limit reached; for the next entries: --after 5\n", stderr)
	stdout, stderr, err = runCmd(t, "queue", "peek", "--after", "5", "alice/kitchen", "--limit", "2", "--data-dir", dir)
	require.NoError(t, err, stderr)
	require.Equal(t, lines[0]+"\n"+lines[3]+"\n", stdout)
	require.Empty(t, stderr, "a short page is the last")
	require.Equal(t, "[]\n", mustRun(t, "queue", "peek", "alice/kitchen", "--after", "6", "--json", "--data-dir", dir), "a list, never null")

	// sessions show: the queue's lines, and "queue" in its JSON.
	require.Equal(t, map[string]string{
		"queued":       "3 (" + strconv.Itoa(2+len(longNote)) + " bytes)",
		"acked":        "up to seq 3",
		"next seq":     "7",
		"dropped":      "none",
		"queue limits": "1000 messages, 1048576 bytes, drop_oldest",
	}, queueFields(t, dir, "alice/kitchen"))
	var shown struct {
		User  string `json:"user"`
		Name  string `json:"name"`
		Queue struct {
			Acked   uint64 `json:"acked"`
			NextSeq uint64 `json:"next_notify_seq"`
			Depth   int    `json:"queued"`
			Limits  queues.Limits
		} `json:"queue"`
	}
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "sessions", "show", "alice/kitchen", "--json", "--data-dir", dir)), &shown))
	require.Equal(t, "alice", shown.User, "the session's fields stay at the top")
	require.Equal(t, "kitchen", shown.Name)
	require.Equal(t, uint64(3), shown.Queue.Acked)
	require.Equal(t, uint64(7), shown.Queue.NextSeq)
	require.Equal(t, 3, shown.Queue.Depth)
	require.Equal(t, queues.DefaultLimits(), shown.Queue.Limits)

	// Unknown sessions.
	for _, key := range []string{"alice/nope", "bob/kitchen"} {
		stdout, _, err := runCmd(t, "queue", "peek", key, "--data-dir", dir)
		require.EqualError(t, err, "no such session "+key)
		require.ErrorIs(t, err, sessions.ErrNotFound)
		require.False(t, errors.As(err, new(usageError)), "not a usage error (exit 1, not 2)")
		require.Empty(t, stdout)
	}
}

// TestQueueCLI notifies a session through the Go API, lets a device take
// and ack some, then inspects and limits its queue with `broker queue`
// through the running broker and, after it stops, by opening the data
// directory; limits set either way take effect in the broker.
func TestQueueCLI(t *testing.T) {
	cfg := brokertest.Config(t)
	b := brokertest.Start(t, cfg)
	dir := cfg.DataDir
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)

	for i := 1; i <= 5; i++ {
		seq, err := b.Notify("alice", "kitchen", i)
		require.NoError(t, err)
		require.Equal(t, uint64(i), seq)
	}
	e, err := b.Enqueue("alice", "kitchen", queues.Message{Data: json.RawMessage(longNote), TTL: time.Hour, Key: "temp"})
	require.NoError(t, err)
	require.Equal(t, uint64(6), e.Seq)
	got := receiveAndAck(t, b, "alice", token, "kitchen", 6, 3)
	require.JSONEq(t, "1", string(got[0].Data))
	require.JSONEq(t, longNote, string(got[5].Data))

	var online map[string]string
	t.Run("through the running broker", func(t *testing.T) {
		require.FileExists(t, filepath.Join(dir, "admin.json"), "a broker runs: the CLI goes through it")
		checkPeek(t, dir)

		// Lower the limit below the depth: the queue shrinks at the next notification.
		stdout, stderr, err := runCmd(t, "queue", "limit", "alice/kitchen", "--max", "2", "--data-dir", dir)
		require.NoError(t, err, stderr)
		require.Contains(t, stdout, "queue limits: 2 messages, 1048576 bytes, drop_oldest\n")
		require.Regexp(t, `(?m)^queued: +3 \(`, stdout)
		require.Equal(t, "alice/kitchen holds more than its new limits: the oldest entries are dropped as new notifications arrive\n", stderr)
		require.Equal(t, []uint64{4, 5, 6}, peekSeqs(t, dir, "alice/kitchen"), "nothing dropped yet")
		byCLI := lastEvent(t, dir, "alice/kitchen")
		require.Equal(t, "queue_limits", byCLI.Kind)
		require.Contains(t, byCLI.String(), " queue_limits max=2 max_bytes=1048576 policy=drop_oldest")
		require.NoError(t, b.LimitQueue("alice", "other", &queues.Limits{MaxMessages: 2, MaxBytes: 1048576, Policy: queues.DropOldest}))
		byAPI := lastEvent(t, dir, "alice/other")
		require.Equal(t, "queue_limits", byAPI.Kind)
		require.Equal(t, byAPI.Detail, byCLI.Detail, "the CLI and LimitQueue journal the same event")

		seq, err := b.Notify("alice", "kitchen", 7)
		require.NoError(t, err)
		require.Equal(t, uint64(7), seq)
		require.Equal(t, []uint64{6, 7}, peekSeqs(t, dir, "alice/kitchen"), "the oldest went")
		require.Equal(t, map[queues.Reason]uint64{queues.ReasonOverflowOldest: 2}, queueOf(t, b, "alice", "kitchen").Dropped)
		online = queueFields(t, dir, "alice/kitchen")
		require.Equal(t, "overflow_oldest=2", online["dropped"])
		require.Equal(t, "2 messages, 1048576 bytes, drop_oldest", online["queue limits"])
		require.Equal(t, "8", online["next seq"])

	})
	require.NoError(t, b.Close())

	t.Run("offline", func(t *testing.T) {
		require.NoFileExists(t, filepath.Join(dir, "admin.json"), "no broker: the CLI opens the directory")
		require.Equal(t, online, queueFields(t, dir, "alice/kitchen"), "the same queue either way")
		require.Equal(t, []uint64{6, 7}, peekSeqs(t, dir, "alice/kitchen"))

		stdout, stderr, err := runCmd(t, "queue", "limit", "--policy", "reject", "alice/kitchen", "--max", "1", "--max-bytes", "4096", "--data-dir", dir)
		require.NoError(t, err, stderr)
		require.Contains(t, stdout, "queue limits: 1 messages, 4096 bytes, reject\n")
		require.Equal(t, "alice/kitchen holds more than its new limits: new notifications are refused until acks make room\n", stderr)
		require.Equal(t, "1 messages, 4096 bytes, reject", queueFields(t, dir, "alice/kitchen")["queue limits"])
		require.Equal(t, map[string]any{"max": 1.0, "max_bytes": 4096.0, "policy": "reject"}, lastEvent(t, dir, "alice/kitchen").Detail)

		// A new session can be limited before anything reaches it.
		mustRun(t, "queue", "limit", "alice/new", "--max", "5", "--policy", "drop_newest", "--data-dir", dir)
		require.Equal(t, map[string]string{
			"queued": "0 (0 bytes)", "acked": "none", "next seq": "1", "dropped": "none",
			"queue limits": "5 messages, 1048576 bytes, drop_newest",
		}, queueFields(t, dir, "alice/new"))
	})

	t.Run("limits set offline hold after a restart", func(t *testing.T) {
		b := brokertest.Start(t, cfg)
		_, err := b.Notify("alice", "kitchen", 8)
		require.ErrorIs(t, err, queues.ErrFull, "reject, and two queued for a limit of one")

		stdout, stderr, err := runCmd(t, "queue", "limit", "alice/kitchen", "--reset", "--data-dir", dir)
		require.NoError(t, err, stderr)
		require.Contains(t, stdout, "queue limits: 1000 messages, 1048576 bytes, drop_oldest\n")
		require.Empty(t, stderr)
		require.Equal(t, map[string]any{"limits": "configured"}, lastEvent(t, dir, "alice/kitchen").Detail)
		seq, err := b.Notify("alice", "kitchen", 8)
		require.NoError(t, err)
		require.Equal(t, uint64(8), seq, "a rejected message takes no seq")
		require.Equal(t, []uint64{6, 7, 8}, peekSeqs(t, dir, "alice/kitchen"))
	})
}

func TestQueueUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"queue"}, "missing subcommand"},
		{"unknown subcommand", []string{"queue", "drain"}, `unknown subcommand "drain"`},
		{"peek nothing", []string{"queue", "peek"}, "exactly one session"},
		{"peek two", []string{"queue", "peek", "alice/a", "alice/b"}, "exactly one session"},
		{"peek no slash", []string{"queue", "peek", "alice"}, "want USER/SESSION"},
		{"peek bad session", []string{"queue", "peek", "alice/kit+chen"}, `invalid session name "kit+chen"`},
		{"peek zero limit", []string{"queue", "peek", "alice/kitchen", "--limit", "0"}, "--limit must be 1 to 1000"},
		{"peek negative limit", []string{"queue", "peek", "alice/kitchen", "--limit", "-1"}, "--limit must be 1 to 1000"},
		{"peek huge limit", []string{"queue", "peek", "alice/kitchen", "--limit", "1001"}, "--limit must be 1 to 1000"},
		{"peek bad after", []string{"queue", "peek", "alice/kitchen", "--after", "soon"}, "after"},
		{"peek unknown flag", []string{"queue", "peek", "alice/kitchen", "--bogus"}, "bogus"},
		{"limit nothing", []string{"queue", "limit", "--max", "3"}, "exactly one session"},
		{"limit without max", []string{"queue", "limit", "alice/kitchen"}, "--max is required"},
		{"limit only bytes", []string{"queue", "limit", "alice/kitchen", "--max-bytes", "100"}, "--max is required"},
		{"limit zero", []string{"queue", "limit", "alice/kitchen", "--max", "0"}, "--max must be at least 1"},
		{"limit negative", []string{"queue", "limit", "alice/kitchen", "--max", "-5"}, "--max must be at least 1"},
		{"limit not a number", []string{"queue", "limit", "alice/kitchen", "--max", "ten"}, "max"},
		{"limit zero bytes", []string{"queue", "limit", "alice/kitchen", "--max", "3", "--max-bytes", "0"}, "--max-bytes must be at least 1"},
		{"limit bad policy", []string{"queue", "limit", "alice/kitchen", "--max", "3", "--policy", "drop_random"}, `--policy "drop_random": want drop_oldest, drop_newest or reject`},
		{"limit empty policy", []string{"queue", "limit", "alice/kitchen", "--max", "3", "--policy", ""}, `--policy ""`},
		{"reset and max", []string{"queue", "limit", "alice/kitchen", "--reset", "--max", "3"}, "not both"},
		{"reset and policy", []string{"queue", "limit", "--policy", "reject", "alice/kitchen", "--reset"}, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Both default data directories (./data and $TETHER_DATA_DIR) are
			// in a fresh directory, so touching either shows.
			tmp := t.TempDir()
			t.Chdir(tmp)
			t.Setenv("TETHER_DATA_DIR", filepath.Join(tmp, "envdata"))
			stdout, _, err := runCmd(t, tt.args...)
			require.Error(t, err)
			require.True(t, errors.As(err, new(usageError)), "want a usageError (exit 2), got %T: %v", err, err)
			require.ErrorContains(t, err, tt.want)
			require.Empty(t, stdout)
			entries, rerr := os.ReadDir(tmp)
			require.NoError(t, rerr)
			require.Empty(t, entries, "a usage error does not touch any data directory")
		})
	}
}

// TestQueueMissingDataDir: queue commands never create a data directory.
func TestQueueMissingDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	for _, args := range [][]string{
		{"queue", "peek", "alice/kitchen"},
		{"queue", "limit", "alice/kitchen", "--max", "3"},
	} {
		_, _, err := runCmd(t, append(args, "--data-dir", dir)...)
		require.ErrorContains(t, err, "data directory "+dir, "%q", args)
		require.NoDirExists(t, dir)
	}
}

func TestDataCell(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"short", `{"a":1}`, `{"a":1}`},
		{"exactly the limit", `"` + strings.Repeat("a", maxDataShown-2) + `"`, `"` + strings.Repeat("a", maxDataShown-2) + `"`},
		{"cut", `"` + strings.Repeat("a", maxDataShown) + `"`, `"` + strings.Repeat("a", maxDataShown-1) + "…"},
		{"cut on a rune boundary", `"` + strings.Repeat("é", maxDataShown) + `"`, `"` + strings.Repeat("é", (maxDataShown-1)/2) + "…"},
		{"line separator escaped", "\"a\u2028b\"", `"a\u2028b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, dataCell([]byte(tt.data)))
		})
	}
}
