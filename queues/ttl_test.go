package queues_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

func expire(t testing.TB, s *persistence.Store, now time.Time, max int) []queues.Drop {
	t.Helper()
	var drops []queues.Drop
	update(t, s, func(tx persistence.Txn) error {
		var err error
		drops, err = queues.Expire(tx, user, sess, now, max)
		return err
	})
	return drops
}

func ttl(n int, d time.Duration) queues.Message {
	m := msg(n)
	m.TTL = d
	return m
}

func TestTTLLazilySkippedThenExpired(t *testing.T) {
	s := openStore(t)
	def := queues.DefaultLimits()
	enqueue(t, s, ttl(1, time.Minute), def, t0)
	enqueue(t, s, msg(2), def, t0)
	enqueue(t, s, ttl(3, 10*time.Second), def, t0) // expires first, though queued later
	enqueue(t, s, ttl(4, time.Hour), def, t0)

	require.Equal(t, []uint64{1, 2, 3, 4}, seqs(readAll(t, s, t0.Add(10*time.Second-1))))
	require.Equal(t, []uint64{1, 2, 4}, seqs(readAll(t, s, t0.Add(10*time.Second))), "expired at exactly its TTL")
	require.Equal(t, []uint64{2, 4}, seqs(readAll(t, s, t0.Add(time.Minute))))
	require.Equal(t, 4, getMeta(t, s).Count, "Read removes nothing")

	require.Empty(t, expire(t, s, t0, 0))
	drops := expire(t, s, t0.Add(2*time.Minute), 0)
	require.Equal(t, []queues.Drop{{Seq: 3, Reason: queues.ReasonExpired}, {Seq: 1, Reason: queues.ReasonExpired}}, drops,
		"soonest expiry first")
	m := getMeta(t, s)
	require.Equal(t, 2, m.Count)
	require.Equal(t, map[queues.Reason]uint64{queues.ReasonExpired: 2}, m.Dropped)
	require.Equal(t, []uint64{2, 4}, seqs(readAll(t, s, t0)), "expired entries are gone at any time")
	checkInvariants(t, s)
}

func TestExpireBounded(t *testing.T) {
	s := openStore(t)
	for i := range 5 {
		enqueue(t, s, ttl(i, time.Duration(i+1)*time.Second), queues.DefaultLimits(), t0)
	}
	later := t0.Add(time.Hour)
	require.Equal(t, []uint64{1, 2}, dropSeqs(expire(t, s, later, 2)))
	require.Equal(t, []uint64{3, 4}, dropSeqs(expire(t, s, later, 2)))
	require.Equal(t, []uint64{5}, dropSeqs(expire(t, s, later, 2)))
	require.Empty(t, expire(t, s, later, 2))
	require.Equal(t, queues.Meta{NextSeq: 6, Dropped: map[queues.Reason]uint64{queues.ReasonExpired: 5}}, getMeta(t, s))
	checkInvariants(t, s)
}

// TestExpiredMakeRoom: when a queue is full, entries already expired leave
// first, under every policy, before any live entry is dropped or refused.
func TestExpiredMakeRoom(t *testing.T) {
	for _, p := range []queues.Policy{queues.DropOldest, queues.DropNewest, queues.Reject} {
		t.Run(string(p), func(t *testing.T) {
			s := openStore(t)
			lim := limits(3, 1<<20, p)
			enqueue(t, s, msg(1), lim, t0)
			enqueue(t, s, ttl(2, time.Second), lim, t0)
			enqueue(t, s, msg(3), lim, t0)
			e, drops := enqueue(t, s, msg(4), lim, t0.Add(time.Second))
			require.Equal(t, uint64(4), e.Seq)
			require.Equal(t, []queues.Drop{{Seq: 2, Reason: queues.ReasonExpired}}, drops)
			require.Equal(t, []uint64{1, 3, 4}, seqs(readAll(t, s, t0)))
			checkInvariants(t, s)
		})
	}
}

// TestExpiredCollapse: an entry replaced by a newer one with the same key
// after its TTL passed is counted as expired, not collapsed.
func TestExpiredCollapse(t *testing.T) {
	s := openStore(t)
	def := queues.DefaultLimits()
	enqueue(t, s, queues.Message{Data: json.RawMessage(`1`), Key: "k", TTL: time.Second}, def, t0)
	_, drops := enqueue(t, s, queues.Message{Data: json.RawMessage(`2`), Key: "k", TTL: time.Second}, def, t0.Add(time.Second))
	require.Equal(t, []queues.Drop{{Seq: 1, Reason: queues.ReasonExpired, Key: "k"}}, drops)
	checkInvariants(t, s)
	// The replacement's expiry row is its own: Expire removes it, and its key.
	require.Equal(t, []queues.Drop{{Seq: 2, Reason: queues.ReasonExpired, Key: "k"}}, expire(t, s, t0.Add(time.Hour), 0))
	checkInvariants(t, s)
	_, drops = enqueue(t, s, queues.Message{Data: json.RawMessage(`3`), Key: "k"}, def, t0)
	require.Empty(t, drops)
}

// TestExpiredSameKeyStaysFindable: drop_newest keeps a same-key entry that
// has already expired when the incoming message does not fit even without
// it; Expire must still find and remove it later.
func TestExpiredSameKeyStaysFindable(t *testing.T) {
	s := openStore(t)
	lim := limits(2, 10, queues.DropNewest)
	enqueue(t, s, queues.Message{Data: json.RawMessage(`1`), Key: "k", TTL: time.Second}, lim, t0)
	enqueue(t, s, queues.Message{Data: json.RawMessage(`"1234567"`)}, lim, t0)
	e, drops := enqueue(t, s, queues.Message{Data: json.RawMessage(`"12345678"`), Key: "k"}, lim, t0.Add(2*time.Second))
	require.Zero(t, e)
	require.Equal(t, []queues.Drop{{Seq: 3, Reason: queues.ReasonOverflowNewest, Key: "k"}}, drops)
	checkInvariants(t, s)
	require.Equal(t, []queues.Drop{{Seq: 1, Reason: queues.ReasonExpired, Key: "k"}}, expire(t, s, t0.Add(3*time.Second), 0))
	checkInvariants(t, s)
}
