package queues_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// TestLargeQueue puts 100,000 entries in one queue, pages through them 500
// at a time, and acknowledges them all, checking that no call's result or
// retained memory grows with the queue.
func TestLargeQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 entries")
	}
	const total, perTxn, page = 100_000, 2_000, 500
	s := openStore(t)
	lim := limits(total, 1<<30, queues.Reject) // reject: nothing may be dropped
	pad := fmt.Sprintf("%0200d", 0)
	data := func(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, pad)) }
	for first := 1; first <= total; first += perTxn {
		update(t, s, func(tx persistence.Txn) error {
			for i := first; i < first+perTxn; i++ {
				e, drops, err := queues.Enqueue(tx, user, sess, queues.Message{Data: data(i)}, lim, t0)
				if err != nil {
					return err
				}
				require.Equal(t, uint64(i), e.Seq)
				require.Empty(t, drops)
			}
			return nil
		})
	}
	m := getMeta(t, s)
	require.Equal(t, total, m.Count)
	require.Equal(t, uint64(total+1), m.NextSeq)
	entrySize := len(data(1))

	// Page through, holding one page at a time; the heap kept after a page
	// must stay far below what the whole queue takes. A raw scan that keeps
	// nothing warms Badger's block cache first, so that its growth is not
	// counted against Read.
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		return tx.Scan(persistence.Prefix("queue", user, sess, "e"), nil, func(_, _ []byte) (bool, error) { return true, nil })
	}))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	after, n := uint64(0), 0
	for {
		var got []queues.Entry
		require.NoError(t, s.View(func(tx persistence.Txn) error {
			var err error
			got, err = queues.Read(tx, user, sess, after, page, t0)
			return err
		}))
		if len(got) == 0 {
			break
		}
		require.LessOrEqual(t, len(got), page)
		require.LessOrEqual(t, cap(got), 2*page, "a page never holds room for more than a page")
		for _, e := range got {
			n++
			require.Equal(t, uint64(n), e.Seq)
		}
		require.Equal(t, data(n), got[len(got)-1].Data)
		after = got[len(got)-1].Seq
		if n%(20*page) == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	require.Equal(t, total, n)
	growth := int64(peak) - int64(base)
	t.Logf("heap: %d KiB at start, peak growth %d KiB while paging; the queue holds %d KiB of data",
		base>>10, growth>>10, total*entrySize>>10)
	require.Less(t, growth, int64(total*entrySize/4), "paging must not keep the queue in memory")

	// Acknowledge everything, MaxBatch per commit.
	commits := 0
	for more := true; more; commits++ {
		update(t, s, func(tx persistence.Txn) error {
			var err error
			_, _, more, err = queues.Ack(tx, user, sess, total, 0, time.Now())
			return err
		})
	}
	require.Equal(t, total/queues.MaxBatch, commits)
	require.Equal(t, queues.Meta{NextSeq: total + 1, Acked: total}, getMeta(t, s))
	checkInvariants(t, s)
}
