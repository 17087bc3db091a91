package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// runCmd runs a command line in process and returns stdout, stderr and the error.
func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, func() {}, args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// mustRun is runCmd that fails the test on error and returns stdout.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, err := runCmd(t, args...)
	require.NoError(t, err, "%q: %s", args, stderr)
	return stdout
}

// listJSON returns `token list --json` for dir.
func listJSON(t *testing.T, dir string, extra ...string) []auth.Token {
	t.Helper()
	out := mustRun(t, append([]string{"token", "list", "--json", "--data-dir", dir}, extra...)...)
	require.NotContains(t, out, `"hash"`, "list never shows hashes")
	var toks []auth.Token
	require.NoError(t, json.Unmarshal([]byte(out), &toks), out)
	return toks
}

// statusOf returns the STATUS column of token id in `token list`, or "".
func statusOf(t *testing.T, dir, id string) string {
	t.Helper()
	out := mustRun(t, "token", "list", "--data-dir", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.NotEmpty(t, lines)
	require.Equal(t, []string{"ID", "USER", "ROLE", "NAME", "EMAIL", "VALID", "UNTIL", "STATUS"}, strings.Fields(lines[0]))
	for _, l := range lines[1:] {
		if f := strings.Fields(l); f[0] == id {
			return f[len(f)-1]
		}
	}
	return ""
}

func tokenID(t *testing.T, token string) string {
	t.Helper()
	id, _, err := auth.ParseToken(token)
	require.NoError(t, err)
	return id
}

func TestTokenOffline(t *testing.T) {
	dir := t.TempDir()

	stdout, stderr, err := runCmd(t, "token", "add", "--user", "alice", "--data-dir", dir)
	require.NoError(t, err, stderr)
	require.Regexp(t, `^tt1_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n$`, stdout, "stdout is the token alone")
	token := strings.TrimSpace(stdout)
	id := tokenID(t, token)
	require.Contains(t, stderr, "issued token "+id+" for user alice (device)")
	require.NoFileExists(t, filepath.Join(dir, "admin.json"), "no broker: the CLI opened the directory itself")

	require.Equal(t, "valid", statusOf(t, dir, id))
	require.NotContains(t, mustRun(t, "token", "list", "--data-dir", dir), token[len("tt1_")+17:], "list never shows secrets")

	toks := listJSON(t, dir)
	require.Len(t, toks, 1)
	require.Equal(t, id, toks[0].ID)
	require.Equal(t, "alice", toks[0].User)
	require.Equal(t, auth.RoleDevice, toks[0].Role)
	require.WithinDuration(t, time.Now().Add(365*24*time.Hour), toks[0].ValidUntil, time.Minute, "default validity")
	require.True(t, toks[0].Revoked.IsZero())

	out := mustRun(t, "token", "revoke", "--data-dir", dir, id)
	require.Equal(t, "revoked token "+id+" of user alice\n", out)
	require.Equal(t, "revoked", statusOf(t, dir, id))
	toks = listJSON(t, dir)
	require.Len(t, toks, 1)
	require.False(t, toks[0].Revoked.IsZero())

	// Revoking twice is harmless.
	mustRun(t, "token", "revoke", "--data-dir", dir, id)
	_, _, err = runCmd(t, "token", "revoke", "--data-dir", dir, "0000000000000000")
	require.ErrorIs(t, err, auth.ErrUnknown)
}

func TestTokenAddOptions(t *testing.T) {
	until := time.Date(2099, 1, 31, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, tok auth.Token)
	}{
		{"valid-for and role", []string{"--user", "svc", "--role", "service", "--valid-for", "1h"}, func(t *testing.T, tok auth.Token) {
			require.Equal(t, auth.RoleService, tok.Role)
			require.WithinDuration(t, time.Now().Add(time.Hour), tok.ValidUntil, time.Minute)
		}},
		{"valid-until, name and email", []string{"--user", "bob", "--valid-until", until.Format(time.RFC3339), "--name", "Bob B", "--email", "bob@example.com"}, func(t *testing.T, tok auth.Token) {
			require.Equal(t, auth.RoleDevice, tok.Role)
			require.True(t, until.Equal(tok.ValidUntil), "valid until %s", tok.ValidUntil)
			require.Equal(t, "Bob B", tok.Name)
			require.Equal(t, "bob@example.com", tok.Email)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			token := strings.TrimSpace(mustRun(t, append([]string{"token", "add", "--data-dir", dir}, tt.args...)...))
			toks := listJSON(t, dir, "--user", tt.args[1])
			require.Len(t, toks, 1)
			require.Equal(t, tokenID(t, token), toks[0].ID)
			require.Equal(t, tt.args[1], toks[0].User)
			tt.check(t, toks[0])
			require.Empty(t, listJSON(t, dir, "--user", "nobody"))
		})
	}
}

func TestTokenUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"token"}, "missing subcommand"},
		{"unknown subcommand", []string{"token", "frob"}, `unknown subcommand "frob"`},
		{"unknown command", []string{"tokens"}, `unknown command "tokens"`},
		{"add without user", []string{"token", "add"}, "--user is required"},
		{"both expiries", []string{"token", "add", "--user", "alice", "--valid-until", "2099-01-01T00:00:00Z", "--valid-for", "1h"}, "not both"},
		{"bad valid-until", []string{"token", "add", "--user", "alice", "--valid-until", "tomorrow"}, "--valid-until"},
		{"negative valid-for", []string{"token", "add", "--user", "alice", "--valid-for", "-1h"}, "--valid-for"},
		{"bad valid-for", []string{"token", "add", "--user", "alice", "--valid-for", "soon"}, "valid-for"},
		{"unknown flag", []string{"token", "list", "--bogus"}, "bogus"},
		{"revoke without id", []string{"token", "revoke"}, "exactly one token ID"},
		{"revoke two ids", []string{"token", "revoke", "a", "b"}, "exactly one token ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Both default data directories (./data and $TETHER_DATA_DIR) are
			// in a fresh directory, so touching either shows.
			tmp := t.TempDir()
			t.Chdir(tmp)
			t.Setenv("TETHER_DATA_DIR", filepath.Join(tmp, "envdata"))
			_, _, err := runCmd(t, tt.args...)
			require.Error(t, err)
			require.True(t, errors.As(err, new(usageError)), "want a usageError (exit 2), got %T: %v", err, err)
			require.ErrorContains(t, err, tt.want)
			entries, rerr := os.ReadDir(tmp)
			require.NoError(t, rerr)
			require.Empty(t, entries, "a usage error does not touch any data directory")
		})
	}
}

// TestTokenBadValues covers values the token registry rejects.
func TestTokenBadValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad role", []string{"--user", "alice", "--role", "admin"}, `unknown role "admin"`},
		{"bad user", []string{"--user", "al/ice"}, "invalid user name"},
		{"expiry in the past", []string{"--user", "alice", "--valid-until", "2001-01-01T00:00:00Z"}, "not in the future"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			stdout, _, err := runCmd(t, append([]string{"token", "add", "--data-dir", dir}, tt.args...)...)
			require.ErrorContains(t, err, tt.want)
			require.Empty(t, stdout, "no token printed")
			require.Empty(t, listJSON(t, dir), "nothing stored")
		})
	}
}

// TestTokenWithRunningBroker issues and revokes through a broker that holds
// the data directory, so the CLI must use its admin endpoint; a revocation
// cuts a live connection at its next packet.
func TestTokenWithRunningBroker(t *testing.T) {
	cfg := brokertest.Config(t)
	b := brokertest.Start(t, cfg)
	dir := cfg.DataDir
	url := "tcp://" + b.Addrs().MQTT
	require.FileExists(t, filepath.Join(dir, "admin.json"))

	stdout, stderr, err := runCmd(t, "token", "add", "--user", "alice", "--data-dir", dir)
	require.NoError(t, err, stderr)
	require.Regexp(t, `^tt1_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n$`, stdout)
	token := strings.TrimSpace(stdout)
	id := tokenID(t, token)

	// The running broker knows the token at once (its in-memory registry).
	_, err = b.Tokens().Check("alice", token)
	require.NoError(t, err)

	var lost atomic.Bool
	c := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token).
		SetConnectionLostHandler(func(paho.Client, error) { lost.Store(true) }))
	require.NoError(t, brokertest.Wait(c.Publish("sessions/alice/s/req", 1, false, "before")))
	require.Equal(t, "valid", statusOf(t, dir, id))

	require.Equal(t, "revoked token "+id+" of user alice\n", mustRun(t, "token", "revoke", "--data-dir", dir, id))
	require.Equal(t, "revoked", statusOf(t, dir, id))
	require.True(t, c.IsConnectionOpen(), "revocation acts at the next packet, not before")

	c.Publish("sessions/alice/s/req", 1, false, "after") // its outcome is the disconnect
	brokertest.WaitFor(t, 5*time.Second, "the revoked client to be disconnected", func() bool {
		return lost.Load() && !c.IsConnectionOpen()
	})

	_, err = brokertest.Connect(t, brokertest.ClientOptions(url, "alice", token))
	require.Error(t, err, "a revoked token cannot connect")
}

// A word left after the flags is refused, not taken as the end of them:
// an unquoted name would otherwise drop --valid-for and --role and issue a
// device token valid for a year.
func TestTokenCommandsRefuseStrayArguments(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, _, err := runCmd(t, "token", "add", "--data-dir", dir, "--user", "alice", "--name", "Alice", "Smith", "--valid-for", "1h", "--role", "service")
	require.ErrorContains(t, err, `unexpected argument "Smith"`)
	_, _, err = runCmd(t, "token", "list", "--data-dir", dir, "alice")
	require.ErrorContains(t, err, `unexpected argument "alice"`)
	require.NoDirExists(t, dir, "nothing was issued: the data directory was not even made")
}

// --valid-until takes a date too (its start, UTC), and says what it wants
// when it gets neither.
func TestTokenValidUntilDate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	mustRun(t, "token", "add", "--data-dir", dir, "--user", "alice", "--valid-until", "2099-06-01")
	toks := listJSON(t, dir)
	require.Len(t, toks, 1)
	require.Equal(t, time.Date(2099, 6, 1, 0, 0, 0, 0, time.UTC), toks[0].ValidUntil.UTC())
	_, _, err := runCmd(t, "token", "add", "--data-dir", dir, "--user", "alice", "--valid-until", "June 1st")
	require.ErrorContains(t, err, "want RFC 3339 like 2027-01-31T00:00:00Z, or a date like 2027-01-31")
}
