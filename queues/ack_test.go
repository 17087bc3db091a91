package queues_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// ack acknowledges up to upto in its own transaction.
func ack(t testing.TB, s *persistence.Store, upto uint64, max int) (int, bool, error) {
	t.Helper()
	var removed int
	var more bool
	err := s.Update(func(tx persistence.Txn) error {
		var err error
		removed, _, more, err = queues.Ack(tx, user, sess, upto, max, time.Now())
		return err
	})
	return removed, more, err
}

func TestAckCumulative(t *testing.T) {
	s := openStore(t)
	for i := range 10 {
		enqueue(t, s, msg(i), queues.DefaultLimits(), t0)
	}
	removed, more, err := ack(t, s, 4, 0)
	require.NoError(t, err)
	require.Equal(t, 4, removed)
	require.False(t, more)
	require.Equal(t, []uint64{5, 6, 7, 8, 9, 10}, seqs(readAll(t, s, t0)))
	m := getMeta(t, s)
	require.Equal(t, uint64(4), m.Acked)
	require.Equal(t, 6, m.Count)
	require.Empty(t, m.Dropped, "acknowledged entries are not drops")
	checkInvariants(t, s)

	t.Run("idempotent", func(t *testing.T) {
		before := dump(t, s)
		for _, upto := range []uint64{0, 1, 3, 4} {
			removed, more, err := ack(t, s, upto, 0)
			require.NoError(t, err)
			require.Zero(t, removed)
			require.False(t, more)
			require.Equal(t, before, dump(t, s), "ack %d", upto)
		}
	})
	t.Run("beyond the last seq is refused and changes nothing", func(t *testing.T) {
		before := dump(t, s)
		for _, upto := range []uint64{11, 1 << 40, ^uint64(0)} {
			_, _, err := ack(t, s, upto, 0)
			require.ErrorIs(t, err, queues.ErrInvalid)
			require.ErrorContains(t, err, "the last seq assigned is 10")
			require.Equal(t, before, dump(t, s))
		}
	})
	t.Run("up to the last seq empties the queue", func(t *testing.T) {
		removed, _, err := ack(t, s, 10, 0)
		require.NoError(t, err)
		require.Equal(t, 6, removed)
		require.Equal(t, queues.Meta{NextSeq: 11, Acked: 10}, getMeta(t, s))
		require.Empty(t, readAll(t, s, t0))
		checkInvariants(t, s)
	})
}

// TestAckOverGaps acknowledges seqs whose entries were dropped: Acked still
// moves to upto, and only the entries still stored count as removed.
func TestAckOverGaps(t *testing.T) {
	s := openStore(t)
	lim := limits(2, 1<<20, queues.DropOldest)
	for i := range 6 { // 1-4 dropped, 5 and 6 stored
		enqueue(t, s, msg(i), lim, t0)
	}
	removed, _, err := ack(t, s, 3, 0)
	require.NoError(t, err)
	require.Zero(t, removed)
	require.Equal(t, uint64(3), getMeta(t, s).Acked)
	removed, _, err = ack(t, s, 5, 0)
	require.NoError(t, err)
	require.Equal(t, 1, removed)
	require.Equal(t, []uint64{6}, seqs(readAll(t, s, t0)))
	checkInvariants(t, s)
}

// TestAckInBatches: one call removes at most max entries and raises Acked
// only past what it removed.
func TestAckInBatches(t *testing.T) {
	s := openStore(t)
	lim := limits(100, 1<<20, queues.DropOldest)
	for i := range 10 {
		enqueue(t, s, msg(i), lim, t0)
	}
	removed, more, err := ack(t, s, 9, 3)
	require.NoError(t, err)
	require.Equal(t, 3, removed)
	require.True(t, more)
	require.Equal(t, uint64(3), getMeta(t, s).Acked, "up to just below the first entry left")
	require.Equal(t, []uint64{4, 5, 6, 7, 8, 9, 10}, seqs(readAll(t, s, t0)))

	removed, more, err = ack(t, s, 9, 3)
	require.NoError(t, err)
	require.Equal(t, 3, removed)
	require.True(t, more)
	require.Equal(t, uint64(6), getMeta(t, s).Acked)

	removed, more, err = ack(t, s, 9, 3) // exactly the last ones: nothing left below upto
	require.NoError(t, err)
	require.Equal(t, 3, removed)
	require.False(t, more)
	require.Equal(t, uint64(9), getMeta(t, s).Acked)
	require.Equal(t, []uint64{10}, seqs(readAll(t, s, t0)))
	checkInvariants(t, s)
}

func TestAckOnEmptyQueue(t *testing.T) {
	s := openStore(t)
	removed, more, err := ack(t, s, 0, 0)
	require.NoError(t, err)
	require.Zero(t, removed)
	require.False(t, more)
	_, _, err = ack(t, s, 1, 0)
	require.ErrorIs(t, err, queues.ErrInvalid)
	require.Empty(t, dump(t, s))
}

// TestReadWindowKeepsAtMostWindowUnacked reads as a deliverer does: never
// more than window entries past the acked seq, from the acked seq on when
// what it sent before was acknowledged or forgotten.
func TestReadWindowKeepsAtMostWindowUnacked(t *testing.T) {
	s := openStore(t)
	for i := range 10 {
		enqueue(t, s, msg(i), queues.DefaultLimits(), t0)
	}
	acked := uint64(0)
	window := func(sent uint64) (uint64, []uint64) {
		t.Helper()
		var es []queues.Entry
		require.NoError(t, s.View(func(tx persistence.Txn) error {
			var err error
			sent, acked, es, _, err = queues.ReadWindow(tx, user, sess, sent, 4, t0)
			return err
		}))
		return sent, seqs(es)
	}
	_, _, err := ack(t, s, 3, 0)
	require.NoError(t, err)

	sent, got := window(0) // sent nothing yet: starts after acked
	require.Equal(t, uint64(3), sent)
	require.Equal(t, uint64(3), acked)
	require.Equal(t, []uint64{4, 5, 6, 7}, got)
	sent, got = window(7) // four in flight: no room
	require.Equal(t, uint64(7), sent)
	require.Empty(t, got)

	_, _, err = ack(t, s, 5, 0)
	require.NoError(t, err)
	sent, got = window(7) // two acked: room for two
	require.Equal(t, uint64(7), sent)
	require.Equal(t, uint64(5), acked)
	require.Equal(t, []uint64{8, 9}, got)
	sent, got = window(9) // the end of the queue
	require.Equal(t, uint64(9), sent)
	require.Empty(t, got)
}

// TestAckPastAnExpiredEntryDropsIt: an entry whose TTL passed before it
// was delivered (reads skip it) is removed by a cumulative ack past it as
// expired, counted and returned as a drop, not as acknowledged.
func TestAckPastAnExpiredEntryDropsIt(t *testing.T) {
	s := openStore(t)
	def := queues.DefaultLimits()
	m1 := msg(1)
	m1.TTL = time.Second
	enqueue(t, s, m1, def, t0)
	enqueue(t, s, msg(2), def, t0)
	later := t0.Add(2 * time.Second)
	var got []queues.Entry
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		var err error
		var expired int
		_, _, got, expired, err = queues.ReadWindow(tx, user, sess, 0, 64, later)
		require.Equal(t, 1, expired)
		return err
	}))
	require.Len(t, got, 1)
	require.EqualValues(t, 2, got[0].Seq, "seq 1 expired before it was read")
	var (
		removed int
		drops   []queues.Drop
	)
	update(t, s, func(tx persistence.Txn) error {
		var err error
		removed, drops, _, err = queues.Ack(tx, user, sess, 2, 0, later)
		return err
	})
	require.Equal(t, 1, removed)
	require.Equal(t, []queues.Drop{{Seq: 1, Reason: queues.ReasonExpired}}, drops)
	m := getMeta(t, s)
	require.Zero(t, m.Count)
	require.EqualValues(t, 2, m.Acked)
	require.Equal(t, map[queues.Reason]uint64{queues.ReasonExpired: 1}, m.Dropped)
}
