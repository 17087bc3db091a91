package snapshot

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCheckLimits(t *testing.T) {
	require.NoError(t, CheckLimits(16<<10, 128), "the sessions registry's defaults fit")

	err := CheckLimits(32<<10, 128)
	require.ErrorIs(t, err, ErrTooLarge)
	m := regexp.MustCompile(`memento limit can be at most (\d+) bytes`).FindStringSubmatch(err.Error())
	require.NotNil(t, m, "the error names the largest memento limit that fits: %v", err)
	most, convErr := strconv.Atoi(m[1])
	require.NoError(t, convErr)
	require.Greater(t, most, 16<<10)
	require.Less(t, most, MaxBlob)
	require.NoError(t, CheckLimits(most, 128), "the limit it names passes")
	require.ErrorIs(t, CheckLimits(most+1, 128), ErrTooLarge, "one byte more fails")

	// A longer phase leaves less room for the memento.
	require.NoError(t, CheckLimits(most-6*100, 228))
	require.ErrorIs(t, CheckLimits(most, 228), ErrTooLarge)

	for _, bad := range [][2]int{{0, 128}, {1, 128}, {-1, 1}, {16 << 10, -1}} {
		require.Error(t, CheckLimits(bad[0], bad[1]), "%v", bad)
	}
}

// What CheckLimits passes, Seal seals: a state at the limits (phase of
// characters JSON escapes six-fold, every other field long) fits.
func TestCheckLimitsMatchesSeal(t *testing.T) {
	const maxPhase = 128
	err := CheckLimits(1<<20, maxPhase)
	most, _ := strconv.Atoi(regexp.MustCompile(`at most (\d+) bytes`).FindStringSubmatch(err.Error())[1])
	s := newTestSealer(t, time.Hour, testKey(strings.Repeat("k", maxKeyID), 1))
	st := fullState()
	st.Memento = json.RawMessage(`"` + strings.Repeat("<", most-2) + `"`)
	st.Phase = strings.Repeat("\x1f", maxPhase)
	long := strings.Repeat("n", maxName)
	text := seal(t, s, long, long, 1<<63, st)
	snap, err := s.Open(text, long, long)
	require.NoError(t, err)
	require.Equal(t, string(st.Memento), string(snap.State.Memento))
}
