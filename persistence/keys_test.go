package persistence_test

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
)

func TestKeyAndPrefix(t *testing.T) {
	require.Equal(t, []byte("queue/alice/s1"), persistence.Key("queue", "alice", "s1"))
	require.Equal(t, []byte("queue/alice/"), persistence.Prefix("queue", "alice"))
	require.Equal(t, []byte("solo"), persistence.Key("solo"))
	require.Equal(t, []byte("solo/"), persistence.Prefix("solo"))
}

func TestUint64KeySortsNumerically(t *testing.T) {
	prefix := persistence.Prefix("queue", "alice", "s1")
	nums := []uint64{256, 2, math.MaxUint64, 10, 0, 1 << 32, 255, 1}
	keys := make([][]byte, len(nums))
	for i, n := range nums {
		keys[i] = persistence.Uint64Key(prefix, n)
		require.Len(t, keys[i], len(prefix)+8)
		require.True(t, bytes.HasPrefix(keys[i], prefix))
	}
	slices.SortFunc(keys, bytes.Compare)
	got := make([]uint64, len(keys))
	for i, k := range keys {
		n, err := persistence.Uint64Suffix(k)
		require.NoError(t, err)
		got[i] = n
	}
	require.Equal(t, []uint64{0, 1, 2, 10, 255, 256, 1 << 32, math.MaxUint64}, got)

	// The case the brief names: 2 < 10 < 256, which as decimal strings would sort "10" < "2" < "256".
	k2, k10, k256 := persistence.Uint64Key(prefix, 2), persistence.Uint64Key(prefix, 10), persistence.Uint64Key(prefix, 256)
	require.Negative(t, bytes.Compare(k2, k10))
	require.Negative(t, bytes.Compare(k10, k256))
}

func TestUint64KeyDoesNotAliasPrefix(t *testing.T) {
	buf := make([]byte, 3, 64) // spare capacity that a careless append would share
	copy(buf, "ab/")
	k1 := persistence.Uint64Key(buf, 1)
	k2 := persistence.Uint64Key(buf, 2)
	n1, err := persistence.Uint64Suffix(k1)
	require.NoError(t, err)
	require.Equal(t, uint64(1), n1)
	n2, err := persistence.Uint64Suffix(k2)
	require.NoError(t, err)
	require.Equal(t, uint64(2), n2)
	require.Equal(t, []byte("ab/"), buf)
}

func TestUint64Suffix(t *testing.T) {
	for _, n := range []uint64{0, 1, 2, 10, 256, 1<<63 + 5, math.MaxUint64} {
		for _, prefix := range [][]byte{nil, {}, []byte("x/"), persistence.Prefix("a", "b", "c")} {
			got, err := persistence.Uint64Suffix(persistence.Uint64Key(prefix, n))
			require.NoError(t, err)
			require.Equal(t, n, got)
		}
	}
	for _, short := range []string{"", "a", "1234567"} {
		t.Run("short "+short, func(t *testing.T) {
			_, err := persistence.Uint64Suffix([]byte(short))
			require.ErrorContains(t, err, "too short")
		})
	}
}
