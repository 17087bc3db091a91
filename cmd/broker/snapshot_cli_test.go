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
