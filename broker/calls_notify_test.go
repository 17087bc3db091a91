package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

// orderArgs are the arguments of the "order" handler below: notify each
// session of To, then fail if Fail; a refused notification aborts the
// call unless Skip.
type orderArgs struct {
	To   []string `json:"to"`
	Fail bool     `json:"fail"`
	Skip bool     `json:"skip"`
}

func order(_ context.Context, c *nonce.Call) (any, error) {
	var args orderArgs
	if err := json.Unmarshal(c.Args, &args); err != nil {
		return nil, err
	}
	seqs := []uint64{}
	for _, to := range args.To {
		seq, err := c.Notify(to, map[string]any{"from": c.Session, "call": c.Seq})
		if err != nil && !args.Skip {
			return nil, err
		}
		if err == nil {
			seqs = append(seqs, seq)
		}
	}
	if args.Fail {
		return nil, errors.New("out of stock")
	}
	return seqs, nil
}

// queued returns the data of user/session's queued entries.
func queued(t *testing.T, b *broker.Broker, user, session string) []string {
	t.Helper()
	out, err := b.Outq(user, session, 0)
	require.NoError(t, err)
	data := []string{}
	for _, e := range out {
		data = append(data, string(e.Data))
	}
	return data
}

// TestCallNotifiesWithItsCommit: a handler's Call.Notify to its own
// session, another attached one and a new one commits with the call and is
// delivered after it; a call that fails, or whose notification is
// refused, leaves no notification and creates no session; drops it causes
// are journaled like any other.
func TestCallNotifiesWithItsCommit(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.QueueRules = []broker.QueueRule{
		{Pattern: "full", Limits: queues.Limits{MaxMessages: 1, MaxBytes: 1 << 20, Policy: queues.Reject}},
		{Pattern: "tiny", Limits: queues.Limits{MaxMessages: 1, MaxBytes: 1 << 20, Policy: queues.DropOldest}},
	}
	b, _, token := startShop(t, cfg)
	b.Handle("order", order)
	url := "tcp://" + b.Addrs().MQTT
	kitchen := device(t, url, "alice", token, "kitchen")
	_, err := kitchen.Begin(ctx(t))
	require.NoError(t, err)
	hall := device(t, url, "alice", token, "hall")
	_, err = hall.Begin(ctx(t))
	require.NoError(t, err)
	call := func(args orderArgs) ([]uint64, error) {
		raw, err := kitchen.Call(ctx(t), "order", args, nil)
		if err != nil {
			return nil, err
		}
		return decode[[]uint64](t, raw), nil
	}

	seqs, err := call(orderArgs{To: []string{"kitchen", "hall", "new-room"}})
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 1, 1}, seqs)
	want := []string{`{"call":1,"from":"kitchen"}`}
	for _, d := range []*client.Client{kitchen, hall} {
		got, data := receive(t, d, 1)
		require.Equal(t, []uint64{1}, got)
		require.Equal(t, want, data)
	}
	require.Equal(t, want, queued(t, b, "alice", "new-room"))

	_, err = call(orderArgs{To: []string{"kitchen", "hall", "other-room"}, Fail: true})
	require.Equal(t, wire.CodeBadRequest, wireCode(t, err))

	_, err = b.Notify("alice", "full", "filled")
	require.NoError(t, err)
	_, err = call(orderArgs{To: []string{"hall", "full"}})
	require.Equal(t, wire.CodeQueueFull, wireCode(t, err), "the handler returned the refusal")

	for _, s := range []string{"kitchen", "hall"} {
		require.Equal(t, want, queued(t, b, "alice", s), "%s: nothing from the aborted calls", s)
	}
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.NotContains(t, names, "other-room", "an aborted call creates no session")

	seqs, err = call(orderArgs{To: []string{"hall", "full"}, Skip: true})
	require.NoError(t, err)
	require.Equal(t, []uint64{2}, seqs, "the refused notification skipped, the rest committed")
	got, _ := receive(t, hall, 1)
	require.Equal(t, []uint64{2}, got)
	require.Equal(t, []string{`"filled"`}, queued(t, b, "alice", "full"))

	for range 2 {
		_, err = call(orderArgs{To: []string{"tiny"}})
		require.NoError(t, err)
	}
	require.Equal(t, []string{`{"call":6,"from":"kitchen"}`}, queued(t, b, "alice", "tiny"))
	require.Equal(t, []string{"drop:overflow_oldest"}, journal(t, b, "alice", "tiny"), "the overflow is journaled")
	qi, err := b.Admin().QueueInfo("alice", "tiny")
	require.NoError(t, err)
	require.Equal(t, uint64(1), qi.Dropped[queues.ReasonOverflowOldest])
}

// TestCallNotifiesAcrossSessions: sessions of one user notify each other
// from their calls, all at once, while the application notifies them too;
// nothing deadlocks, and every notification is queued once.
func TestCallNotifiesAcrossSessions(t *testing.T) {
	const each = 30
	b, _, token := startShop(t, brokertest.Config(t))
	b.Handle("order", order)
	url := "tcp://" + b.Addrs().MQTT
	names := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	errs := make(chan error, len(names)*each*2)
	for i, name := range names {
		d := device(t, url, "alice", token, name)
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		next := names[(i+1)%len(names)]
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := d.Call(ctx(t), "order", orderArgs{To: []string{next, name}}, nil); err != nil {
					errs <- err
				}
			}
		}()
		go func() {
			defer wg.Done()
			for k := range each {
				if _, err := b.Notify("alice", name, fmt.Sprintf("app%d", k)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, name := range names {
		out, err := b.Outq("alice", name, 0)
		require.NoError(t, err)
		require.Len(t, out, 3*each, "%s: its own calls, its neighbour's and the application's", name)
		seqs := make([]uint64, len(out))
		for i, e := range out {
			seqs[i] = e.Seq
		}
		require.True(t, slices.IsSorted(seqs) && seqs[0] == 1 && seqs[len(seqs)-1] == 3*each, "%s: seqs %v", name, seqs)
	}
}

// TestCallNotifyAfterItsCall: Call.Notify used after the call committed
// (from AfterCommit) fails and changes nothing; the session it named is
// not left locked.
func TestCallNotifyAfterItsCall(t *testing.T) {
	b, _, token := startShop(t, brokertest.Config(t))
	late := make(chan error, 1)
	b.Handle("late", func(_ context.Context, c *nonce.Call) (any, error) {
		c.AfterCommit(func() {
			_, err := c.Notify("hall", "late")
			late <- err
		})
		return "ok", nil
	})
	kitchen := begun(t, b, token, "kitchen")
	_, err := kitchen.Call(ctx(t), "late", nil, nil)
	require.NoError(t, err)
	require.ErrorIs(t, <-late, sessions.ErrJointEnded)

	done := make(chan error, 1)
	go func() {
		_, err := b.Notify("alice", "hall", "after")
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("alice/hall was left locked")
	}
	require.Equal(t, []string{`"after"`}, queued(t, b, "alice", "hall"))
}

// TestCallNotifyNewSessionOverCap: a Call.Notify that would create a
// session past the user's cap fails at once (forbidden), and a handler
// that goes on without it commits the rest.
func TestCallNotifyNewSessionOverCap(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.MaxSessionsPerUser = 2
	b, _, token := startShop(t, cfg)
	b.Handle("order", order)
	kitchen := begun(t, b, token, "kitchen")
	_, err := b.Notify("alice", "hall", "existing")
	require.NoError(t, err)

	_, err = kitchen.Call(ctx(t), "order", orderArgs{To: []string{"hall", "third-room"}}, nil)
	require.Equal(t, wire.CodeForbidden, wireCode(t, err))
	raw, err := kitchen.Call(ctx(t), "order", orderArgs{To: []string{"third-room", "hall"}, Skip: true}, nil)
	require.NoError(t, err)
	require.Equal(t, []uint64{2}, decode[[]uint64](t, raw), "hall's, the new session skipped")
	names, err := b.Sessions().Names("alice")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"kitchen", "hall"}, names)
}
