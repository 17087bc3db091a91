package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/sessions"
)

// driveSession begins user/name as a device, remembers memento (with phase,
// if not nil), and disconnects cleanly; it returns once the broker has
// detached the session.
func driveSession(t *testing.T, b *broker.Broker, user, token, name string, memento any, phase *string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = "tcp://"+b.Addrs().MQTT, user, token, name
	c, err := client.Dial(ctx, cfg)
	require.NoError(t, err)
	begun, err := c.Begin(ctx)
	require.NoError(t, err)
	require.False(t, begun.Crashed)
	if memento != nil {
		require.NoError(t, c.Remember(ctx, memento, phase))
	}
	c.Close() // a clean disconnect: the session is detached, not ended
	brokertest.WaitFor(t, 5*time.Second, user+"/"+name+" to be detached", func() bool {
		s, err := b.Sessions().Get(user, name)
		return err == nil && s.State == sessions.StateDetached
	})
}

// showFields runs `sessions show` and returns its "key: value" lines as a map.
func showFields(t *testing.T, dir, key string) map[string]string {
	t.Helper()
	out := mustRun(t, "sessions", "show", key, "--data-dir", dir)
	fields := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(l, ":")
		require.True(t, ok, "a key: value line: %q", l)
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

var logLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+)( |$)`)

// logKinds checks every line of `sessions log` starts with its time and
// returns the event kinds in order.
func logKinds(t *testing.T, out string) []string {
	t.Helper()
	var kinds []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := logLine.FindStringSubmatch(l)
		require.NotNil(t, m, "a log line starts with the time, then the kind: %q", l)
		kinds = append(kinds, m[1])
	}
	return kinds
}

// checkSessions runs list, show and log on dir and checks what
// TestSessionsCLI stored there. It returns the plain log of alice/kitchen.
func checkSessions(t *testing.T, dir string) string {
	// list: an aligned table, in name order.
	out := mustRun(t, "sessions", "list", "--data-dir", dir)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 3, out)
	require.Equal(t, []string{"USER", "SESSION", "STATE", "PHASE", "INSTANCES", "LAST", "SEEN", "DEADLINE"}, strings.Fields(lines[0]))
	stampRE := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
	require.Regexp(t, `^alice +kitchen +detached +demo_started +1 +`+stampRE+` +-$`, lines[1])
	require.Regexp(t, `^alice +quiz-1 +detached +- +1 +`+stampRE+` +`+stampRE+`$`, lines[2])
	col := strings.Index(lines[0], "LAST SEEN")
	for _, l := range lines[1:] {
		require.Regexp(t, `^`+stampRE, l[col:], "columns are aligned: %q", out)
	}
	require.Equal(t, out, mustRun(t, "sessions", "list", "--user", "alice", "--data-dir", dir))
	require.Equal(t, []string{"USER", "SESSION", "STATE", "PHASE", "INSTANCES", "LAST", "SEEN", "DEADLINE"},
		strings.Fields(mustRun(t, "sessions", "list", "--user", "bob", "--data-dir", dir)), "a header and no rows")

	var list []sessions.Session
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "sessions", "list", "--json", "--data-dir", dir)), &list))
	require.Len(t, list, 2)
	require.Equal(t, "kitchen", list[0].Name)
	require.Equal(t, "demo_started", list[0].Phase)
	require.JSONEq(t, "3", string(list[0].Memento))
	require.Equal(t, "quiz-1", list[1].Name)
	require.Equal(t, "[]\n", mustRun(t, "sessions", "list", "--json", "--user", "bob", "--data-dir", dir), "a list, never null")

	// show: key: value lines.
	f := showFields(t, dir, "alice/kitchen")
	require.Equal(t, "alice", f["user"])
	require.Equal(t, "kitchen", f["session"])
	require.Equal(t, "detached", f["state"])
	require.Equal(t, "demo_started", f["phase"])
	require.Equal(t, "3", f["memento"])
	require.Equal(t, "1", f["instances"])
	require.Regexp(t, `^[0-9a-f]{8}…$`, f["nonce"], "the nonce is shortened")
	require.Regexp(t, `^`+stampRE+` \(\d+s ago\)$`, f["since"])
	require.Regexp(t, `^`+stampRE+` \(\d+s ago\)$`, f["first begin"])
	require.Regexp(t, `^`+stampRE+` \(\d+s ago\)$`, f["last seen"])
	require.Equal(t, "- (no time window)", f["deadline"])
	require.Equal(t, "none (the configured rules apply)", f["policy override"])
	require.Equal(t, "seq 1-4 (4 events)", f["journal"])
	// The queue: never notified (queue_cli_test.go covers a busy one).
	require.Equal(t, "0 (0 bytes)", f["queued"])
	require.Equal(t, "none", f["acked"])
	require.Equal(t, "1", f["next seq"])
	require.Equal(t, "none", f["dropped"])
	require.Equal(t, "1000 messages, 1048576 bytes, drop_oldest", f["queue limits"])
	require.Len(t, f, 18)

	q := showFields(t, dir, "alice/quiz-1")
	require.Equal(t, "-", q["phase"])
	require.Equal(t, `{"id":12345678901234567890}`, q["memento"])
	require.Equal(t, "exclusive, window 1h0m0s, liveness 1m0s", q["policy override"])
	require.Regexp(t, `^`+stampRE+` \((59m\d+s|1h0m0s) left\)$`, q["deadline"])

	// Flags may follow U/S.
	var s sessions.Session
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "sessions", "show", "alice/quiz-1", "--data-dir", dir, "--json")), &s))
	require.Equal(t, "quiz-1", s.Name)
	require.Equal(t, sessions.Exclusive, s.Policy.Mode)
	require.WithinDuration(t, s.FirstBegin.Add(time.Hour), s.Deadline, 0)
	require.Len(t, s.Nonce, 32, "--json shows the whole nonce")

	// log: one line per event, time first, oldest first.
	logOut := mustRun(t, "sessions", "log", "alice/kitchen", "--data-dir", dir)
	require.Equal(t, []string{"begin", "presence", "remember", "presence"}, logKinds(t, logOut))
	logLines := strings.Split(strings.TrimSuffix(logOut, "\n"), "\n")
	require.Contains(t, logLines[0], " begin ")
	require.Contains(t, logLines[0], " crashed=false ")
	require.Contains(t, logLines[1], " reason=begin ")
	require.Contains(t, logLines[2], " remember memento=3 phase=demo_started")
	require.Contains(t, logLines[3], " reason=disconnect ")
	require.Contains(t, logLines[3], " state=offline")

	var events []sessions.Event
	require.NoError(t, json.Unmarshal([]byte(mustRun(t, "sessions", "log", "--json", "--data-dir", dir, "alice/kitchen")), &events))
	require.Len(t, events, 4)
	for i, e := range events {
		require.Equal(t, uint64(i+1), e.Seq)
		require.Equal(t, logLines[i], e.String(), "the plain log is Event.String")
	}

	stdout, stderr, err := runCmd(t, "sessions", "log", "alice/kitchen", "--limit", "2", "--data-dir", dir)
	require.NoError(t, err, stderr)
	require.Equal(t, strings.Join(logLines[:2], "\n")+"\n", stdout)
	require.Contains(t, stderr, "--after 2", "a full page says where the next starts")
	stdout, stderr, err = runCmd(t, "sessions", "log", "--after", "2", "alice/kitchen", "--data-dir", dir, "--limit", "5")
	require.NoError(t, err, stderr)
	require.Equal(t, strings.Join(logLines[2:], "\n")+"\n", stdout)
	require.Empty(t, stderr, "a short page is the last")
	require.Empty(t, mustRun(t, "sessions", "log", "alice/kitchen", "--after", "4", "--data-dir", dir))
	require.Equal(t, "[]\n", mustRun(t, "sessions", "log", "alice/kitchen", "--after", "4", "--json", "--data-dir", dir), "a list, never null")

	quizLog := mustRun(t, "sessions", "log", "alice/quiz-1", "--data-dir", dir)
	require.Equal(t, []string{"policy", "begin", "presence", "remember", "presence"}, logKinds(t, quizLog))
	t.Run("numbers keep every digit", func(t *testing.T) {
		// sessions.readJournal decodes Detail into map[string]any, so a
		// number past 2^53 comes back rounded (12345678901234567000); the
		// CLI already decodes with UseNumber. Drop the skip once
		// readJournal decodes with UseNumber too.
		require.Contains(t, quizLog, ` remember memento={"id":12345678901234567890}`+"\n")
		require.Contains(t, mustRun(t, "sessions", "log", "alice/quiz-1", "--json", "--data-dir", dir), `"id": 12345678901234567890`)
	})

	// Unknown sessions.
	for _, args := range [][]string{
		{"sessions", "show", "alice/nope"},
		{"sessions", "show", "bob/kitchen", "--json"},
		{"sessions", "log", "alice/nope"},
	} {
		stdout, _, err := runCmd(t, append(args, "--data-dir", dir)...)
		require.Error(t, err, "%q", args)
		require.EqualError(t, err, "no such session "+args[2])
		require.ErrorIs(t, err, sessions.ErrNotFound)
		require.False(t, errors.As(err, new(usageError)), "not a usage error (exit 1, not 2)")
		require.Empty(t, stdout)
	}
	return logOut
}

// TestSessionsCLI drives two sessions with the device SDK, then inspects
// them with `broker sessions` through the running broker and, after it
// stops, by opening the data directory.
func TestSessionsCLI(t *testing.T) {
	cfg := brokertest.Config(t)
	b := brokertest.Start(t, cfg)
	dir := cfg.DataDir
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)

	phase := "demo_started"
	driveSession(t, b, "alice", token, "kitchen", 3, &phase)
	require.NoError(t, b.Sessions().SetPolicy("alice", "quiz-1",
		&sessions.Policy{Mode: sessions.Exclusive, Window: time.Hour, Liveness: time.Minute}))
	driveSession(t, b, "alice", token, "quiz-1", json.RawMessage(`{"id":12345678901234567890}`), nil)

	var remote, local string
	t.Run("through the running broker", func(t *testing.T) {
		require.FileExists(t, filepath.Join(dir, "admin.json"), "a broker runs: the CLI goes through it")
		remote = checkSessions(t, dir)
	})
	require.NoError(t, b.Close())
	t.Run("offline", func(t *testing.T) {
		require.NoFileExists(t, filepath.Join(dir, "admin.json"), "no broker: the CLI opens the directory")
		local = checkSessions(t, dir)
	})
	require.NotEmpty(t, remote)
	require.Equal(t, remote, local, "the same journal either way")
}

func TestSessionsUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"sessions"}, "missing subcommand"},
		{"unknown subcommand", []string{"sessions", "frob"}, `unknown subcommand "frob"`},
		{"list argument", []string{"sessions", "list", "alice"}, "use --user"},
		{"list bad user", []string{"sessions", "list", "--user", "al ice"}, `invalid user name "al ice"`},
		{"list unknown flag", []string{"sessions", "list", "--bogus"}, "bogus"},
		{"show nothing", []string{"sessions", "show"}, "exactly one session"},
		{"show two", []string{"sessions", "show", "alice/a", "alice/b"}, "exactly one session"},
		{"show no slash", []string{"sessions", "show", "alice"}, "want USER/SESSION"},
		{"show two slashes", []string{"sessions", "show", "alice/kitchen/x"}, "want USER/SESSION"},
		{"show no user", []string{"sessions", "show", "/kitchen"}, "invalid user name"},
		{"show no session", []string{"sessions", "show", "alice/"}, "invalid session name"},
		{"show bad session", []string{"sessions", "show", "alice/kit+chen"}, `invalid session name "kit+chen"`},
		{"show long user", []string{"sessions", "show", strings.Repeat("a", 65) + "/kitchen"}, "invalid user name"},
		{"show unknown flag after", []string{"sessions", "show", "alice/kitchen", "--bogus"}, "bogus"},
		{"log nothing", []string{"sessions", "log", "--limit", "3"}, "exactly one session"},
		{"log negative limit", []string{"sessions", "log", "alice/kitchen", "--limit", "-1"}, "--limit"},
		{"log bad after", []string{"sessions", "log", "alice/kitchen", "--after", "soon"}, "after"},
		{"log bad key", []string{"sessions", "log", "alice\\kitchen"}, "want USER/SESSION"},
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

// TestSessionsMissingDataDir: reading sessions never creates a data directory.
func TestSessionsMissingDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	for _, args := range [][]string{
		{"sessions", "list"},
		{"sessions", "show", "alice/kitchen"},
		{"sessions", "log", "alice/kitchen"},
	} {
		_, _, err := runCmd(t, append(args, "--data-dir", dir)...)
		require.ErrorContains(t, err, "data directory "+dir, "%q", args)
		require.NoDirExists(t, dir)
	}
}

// TestSessionsEmptyDataDir: a data directory without sessions lists none.
func TestSessionsEmptyDataDir(t *testing.T) {
	dir := t.TempDir()
	require.Equal(t, "[]\n", mustRun(t, "sessions", "list", "--json", "--data-dir", dir))
	require.Equal(t, []string{"USER", "SESSION", "STATE", "PHASE", "INSTANCES", "LAST", "SEEN", "DEADLINE"},
		strings.Fields(mustRun(t, "sessions", "list", "--data-dir", dir)))
	_, _, err := runCmd(t, "sessions", "show", "alice/kitchen", "--data-dir", dir)
	require.EqualError(t, err, "no such session alice/kitchen")
}
