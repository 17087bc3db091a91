package broker_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
)

// TestAdminQueueOps covers the queue ops' arguments; cmd/broker's tests
// drive them through the CLI, online and offline.
func TestAdminQueueOps(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	a := b.Admin()
	for i := 1; i <= 3; i++ {
		_, err := b.Notify("alice", "kitchen", i)
		require.NoError(t, err)
	}

	res, err := a.Call("queue.peek", json.RawMessage(`{"user":"alice","session":"kitchen","after":1,"limit":1}`))
	require.NoError(t, err)
	var entries []queues.Entry
	require.NoError(t, json.Unmarshal(res, &entries))
	require.Len(t, entries, 1)
	require.Equal(t, uint64(2), entries[0].Seq)
	require.JSONEq(t, "2", string(entries[0].Data))

	res, err = a.Call("queue.limit", json.RawMessage(`{"user":"alice","session":"kitchen","max":2,"max_bytes":100,"policy":"drop_newest"}`))
	require.NoError(t, err)
	var d broker.SessionDetail
	require.NoError(t, json.Unmarshal(res, &d))
	require.Equal(t, "kitchen", d.Name)
	require.Equal(t, queues.Limits{MaxMessages: 2, MaxBytes: 100, Policy: queues.DropNewest}, d.Queue.Limits)
	require.Equal(t, 3, d.Queue.Depth)

	seq, err := b.Notify("alice", "kitchen", 4)
	require.NoError(t, err)
	require.Zero(t, seq, "drop_newest dropped it")
	res, err = a.Call("sessions.show", json.RawMessage(`{"user":"alice","session":"kitchen"}`))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(res, &d))
	require.Equal(t, map[queues.Reason]uint64{queues.ReasonOverflowNewest: 1}, d.Queue.Dropped)
	require.Equal(t, uint64(5), d.Queue.NextSeq)

	res, err = a.Call("queue.limit", json.RawMessage(`{"user":"alice","session":"kitchen","reset":true}`))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(res, &d))
	require.Equal(t, queues.DefaultLimits(), d.Queue.Limits)

	for _, tt := range []struct{ op, args, want string }{
		{"queue.peek", `{"user":"alice","session":"kitchen","limit":-1}`, "limit -1"},
		{"queue.peek", `{"user":"alice","session":"nope"}`, sessions.ErrNotFound.Error()},
		{"queue.peek", `{"user":"alice","session":"kitchen","bogus":1}`, "bogus"},
		{"queue.limit", `{"user":"alice","session":"kitchen","max":0,"max_bytes":10}`, "max messages 0"},
		{"queue.limit", `{"user":"alice","session":"kitchen","max":1,"max_bytes":10,"policy":"drop_random"}`, "drop_random"},
		{"queue.limit", `{"user":"alice","session":"kitchen","reset":true,"max":3}`, "reset takes no limits"},
		{"queue.limit", `{"user":"alice","session":"bad name","max":3,"max_bytes":10}`, "invalid"},
		{"sessions.show", `{"user":"alice","session":"nope"}`, sessions.ErrNotFound.Error()},
	} {
		_, err := a.Call(tt.op, json.RawMessage(tt.args))
		require.ErrorContains(t, err, tt.want, "%s %s", tt.op, tt.args)
	}
	_, err = b.Sessions().Get("alice", "bad name")
	require.Error(t, err)
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.Equal(t, []string{"kitchen"}, names, "refused limits create no session")
}
