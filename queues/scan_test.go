package queues_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// scanRecorder is a Txn that records where each scan starts.
type scanRecorder struct {
	persistence.Txn
	starts map[string][]byte // by prefix
}

func (r *scanRecorder) Scan(prefix, start []byte, fn func(k, v []byte) (bool, error)) error {
	r.starts[string(prefix)] = start
	return r.Txn.Scan(prefix, start, fn)
}

// TestScansSkipRemovedEntries: Badger keeps deleted keys until compaction
// and its iterators step over each one, so a keep-latest queue that has
// dropped many entries must not scan from the start of its keys. Every scan
// starts at the oldest entry that can still be there.
func TestScansSkipRemovedEntries(t *testing.T) {
	s := openStore(t)
	lim := limits(1, 1<<20, queues.DropOldest)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	for i := 1; i <= 50; i++ {
		enqueue(t, s, ttl(i, time.Hour), lim, at(i))
	}
	ePrefix := persistence.Prefix("queue", user, sess, "e")
	xPrefix := persistence.Prefix("queue", user, sess, "x")
	stamp := func(tm time.Time) uint64 { return uint64(tm.UnixNano()) ^ 1<<63 }
	run := func(fn func(tx persistence.Txn) error) map[string][]byte {
		r := &scanRecorder{starts: map[string][]byte{}}
		update(t, s, func(tx persistence.Txn) error {
			r.Txn = tx
			return fn(r)
		})
		return r.starts
	}

	starts := run(func(tx persistence.Txn) error {
		_, drops, err := queues.Enqueue(tx, user, sess, ttl(51, time.Hour), lim, at(51))
		require.Equal(t, []uint64{50}, dropSeqs(drops))
		return err
	})
	require.Equal(t, persistence.Uint64Key(ePrefix, 50), starts[string(ePrefix)], "drop_oldest starts at the one entry left")
	xStart := starts[string(xPrefix)]
	require.NotNil(t, xStart)
	require.GreaterOrEqual(t, bytes.Compare(xStart, persistence.Uint64Key(xPrefix, stamp(at(50)))), 0,
		"the expiry scan starts past the rows removed before")

	starts = run(func(tx persistence.Txn) error {
		es, err := queues.Read(tx, user, sess, 0, 10, at(51))
		require.Equal(t, []uint64{51}, seqs(es))
		return err
	})
	require.Equal(t, persistence.Uint64Key(ePrefix, 51), starts[string(ePrefix)], "Read from 0 starts at the oldest entry")

	starts = run(func(tx persistence.Txn) error {
		drops, err := queues.Expire(tx, user, sess, at(51).Add(2*time.Hour), 0)
		require.Equal(t, []uint64{51}, dropSeqs(drops))
		return err
	})
	require.GreaterOrEqual(t, bytes.Compare(starts[string(xPrefix)], persistence.Uint64Key(xPrefix, stamp(at(51)))), 0)

	enqueue(t, s, msg(52), lim, at(52))
	starts = run(func(tx persistence.Txn) error {
		n, _, _, err := queues.Ack(tx, user, sess, 52, 0, time.Now())
		require.Equal(t, 1, n)
		return err
	})
	require.Equal(t, persistence.Uint64Key(ePrefix, 52), starts[string(ePrefix)], "Ack starts at the oldest entry")
	checkInvariants(t, s)

	// An entry whose expiry lies before the scan start (a clock that went
	// back) moves the start back: it still expires.
	enqueue(t, s, ttl(53, time.Second), lim, t0)
	require.Equal(t, []uint64{53}, dropSeqs(expire(t, s, t0.Add(time.Second), 0)))
	checkInvariants(t, s)
}
