package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSnapshotKeyAndConfig(t *testing.T) {
	var out, errb bytes.Buffer
	require.NoError(t, run(context.Background(), func() {}, []string{"snapshot-key", "k1"}, &out, &errb))
	line := strings.TrimSpace(out.String())
	require.Regexp(t, regexp.MustCompile(`^k1:[0-9a-f]{64}$`), line)
	require.Error(t, run(context.Background(), func() {}, []string{"snapshot-key"}, &out, &errb))

	noEnv := func(string) (string, bool) { return "", false }
	c, err := loadServeConfig([]string{"--snapshot-keys", line}, &errb, noEnv)
	require.NoError(t, err)
	require.Len(t, c.broker.SnapshotKeys, 1)
	require.Equal(t, "k1", c.broker.SnapshotKeys[0].ID)

	file := filepath.Join(t.TempDir(), "keys")
	second := "k2:" + strings.Repeat("ab", 32)
	require.NoError(t, os.WriteFile(file, []byte("# newest first, the rest still open\n"+second+"\n"+line+"\n"), 0o600))
	c, err = loadServeConfig(nil, &errb, func(k string) (string, bool) {
		if k == "TETHER_SNAPSHOT_KEYS" {
			return file, true
		}
		return "", false
	})
	require.NoError(t, err)
	require.Len(t, c.broker.SnapshotKeys, 2)
	require.Equal(t, "k2", c.broker.SnapshotKeys[0].ID, "the first key seals")

	_, err = loadServeConfig([]string{"--snapshot-keys", "k1:zz"}, &errb, noEnv)
	require.ErrorContains(t, err, "snapshot-keys")
	require.NotContains(t, err.Error(), strings.Repeat("ab", 32), "never echo key material")
}

// A key list that does not parse is refused without quoting it, from a
// flag, the environment or a config file: the error must not carry the
// secrets of the keys that did parse (the flag package quotes a refused
// value, and a failed open quoted its path, here the keys themselves).
func TestSnapshotKeysErrorHidesSecrets(t *testing.T) {
	secret := strings.Repeat("ab", 32)
	bad := "k2:" + secret + ",k1:" + strings.Repeat("c", 63) // one digit short
	file := filepath.Join(t.TempDir(), "tether.yaml")
	require.NoError(t, os.WriteFile(file, []byte("snapshot_keys: \""+bad+"\"\n"), 0o600))
	for name, load := range map[string]func(*bytes.Buffer) error{
		"flag": func(out *bytes.Buffer) error {
			_, err := loadServeConfig([]string{"--snapshot-keys", bad}, out, func(string) (string, bool) { return "", false })
			return err
		},
		"environment": func(out *bytes.Buffer) error {
			_, err := loadServeConfig(nil, out, func(k string) (string, bool) { return bad, k == "TETHER_SNAPSHOT_KEYS" })
			return err
		},
		"config file": func(out *bytes.Buffer) error {
			_, err := loadServeConfig([]string{"--config", file}, out, func(string) (string, bool) { return "", false })
			return err
		},
	} {
		var out bytes.Buffer
		err := load(&out)
		require.ErrorContains(t, err, "snapshot-keys", name)
		require.ErrorContains(t, err, "64 hex digits", name)
		require.NotContains(t, err.Error()+out.String(), secret, "%s: the error quotes key material", name)
	}
}

// snapshot-key prints only lines --snapshot-keys reads back: an id over
// 32 bytes, or with a separator in it, is refused.
func TestSnapshotKeyIDs(t *testing.T) {
	var out, errb bytes.Buffer
	longest := strings.Repeat("k", 32)
	require.NoError(t, run(context.Background(), func() {}, []string{"snapshot-key", longest}, &out, &errb))
	c, err := loadServeConfig([]string{"--snapshot-keys", strings.TrimSpace(out.String())}, &errb, func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	require.Equal(t, longest, c.broker.SnapshotKeys[0].ID)
	for _, id := range []string{strings.Repeat("k", 33), "a,b", "a:b", "a b", "#a"} {
		out.Reset()
		err := run(context.Background(), func() {}, []string{"snapshot-key", id}, &out, &errb)
		require.ErrorContains(t, err, "1-32 bytes", "id %q", id)
		require.Empty(t, out.String())
	}
}

// snapshot-key -h explains itself, and an id that looks like a flag is
// refused rather than printed as a key named "--help".
func TestSnapshotKeyHelp(t *testing.T) {
	var out, errb bytes.Buffer
	require.NoError(t, run(context.Background(), func() {}, []string{"snapshot-key", "--help"}, &out, &errb))
	require.Contains(t, out.String(), "print a new snapshot key line")
	require.NotContains(t, out.String(), "--help:")
	out.Reset()
	err := run(context.Background(), func() {}, []string{"snapshot-key", "-k1"}, &out, &errb)
	require.ErrorContains(t, err, "not a flag")
	require.Empty(t, out.String())
}
