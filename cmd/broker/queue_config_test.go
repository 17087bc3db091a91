package main

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/queues"
)

// TestServeAppliesQueueSettings opens a broker from serve's flags, as `go
// run ./cmd/broker --queue-max 3 --queue-rules …` does, and notifies five
// times: a session matching a rule gets the rule's limits (first match
// wins), every other one the defaults given.
func TestServeAppliesQueueSettings(t *testing.T) {
	b := startServeConfig(t, []string{"--queue-max", "3", "--queue-rules", "gps*=1,inbox*=2/1048576/reject,in*=4"}, env{})

	for i := 1; i <= 5; i++ {
		for _, s := range []string{"gps1", "other", "inside"} {
			_, err := b.Notify("alice", s, i)
			require.NoError(t, err, "%s #%d", s, i)
		}
		_, err := b.Notify("alice", "inbox", i)
		if i <= 2 {
			require.NoError(t, err, "inbox #%d", i)
		} else {
			require.ErrorIs(t, err, queues.ErrFull, "inbox #%d: the reject rule refuses it", i)
		}
	}
	queued := func(session string) string {
		entries, err := b.Outq("alice", session, 0)
		require.NoError(t, err)
		var data []string
		for _, e := range entries {
			data = append(data, string(e.Data))
		}
		return fmt.Sprint(data)
	}
	require.Equal(t, "[5]", queued("gps1"), "gps*=1 keeps only the latest")
	require.Equal(t, "[3 4 5]", queued("other"), "--queue-max 3, drop_oldest")
	require.Equal(t, "[1 2]", queued("inbox"), "inbox*=2/…/reject keeps the first two")
	require.Equal(t, "[2 3 4 5]", queued("inside"), "in*=4")
}
