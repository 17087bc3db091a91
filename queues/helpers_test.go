package queues_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

const user, sess = "alice", "kitchen"

// t0 is the tests' clock; entries carry times derived from it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func storeConfig(dir string) persistence.Config {
	cfg := persistence.DefaultConfig() // SyncWrites: durable commits, as in production
	cfg.Dir = dir
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// openStore opens a real store in a fresh temp dir, closed when the test ends.
func openStore(t testing.TB) *persistence.Store {
	t.Helper()
	s, err := persistence.Open(storeConfig(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func update(t testing.TB, s *persistence.Store, fn func(tx persistence.Txn) error) {
	t.Helper()
	require.NoError(t, s.Update(fn))
}

// msg is a small message whose data names n.
func msg(n int) queues.Message {
	return queues.Message{Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// sized is a message whose compacted data is exactly size bytes (size >= 2).
func sized(size int) queues.Message {
	return queues.Message{Data: json.RawMessage(`"` + string(bytes.Repeat([]byte("x"), size-2)) + `"`)}
}

func limits(n, b int, p queues.Policy) queues.Limits {
	return queues.Limits{MaxMessages: n, MaxBytes: b, Policy: p}
}

// enqueue enqueues m in its own transaction.
func enqueue(t testing.TB, s *persistence.Store, m queues.Message, def queues.Limits, now time.Time) (queues.Entry, []queues.Drop) {
	t.Helper()
	var e queues.Entry
	var drops []queues.Drop
	update(t, s, func(tx persistence.Txn) error {
		var err error
		e, drops, err = queues.Enqueue(tx, user, sess, m, def, now)
		return err
	})
	return e, drops
}

func getMeta(t testing.TB, s *persistence.Store) queues.Meta {
	t.Helper()
	var m queues.Meta
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		var err error
		m, err = queues.GetMeta(tx, user, sess)
		return err
	}))
	return m
}

// readAll pages through the whole queue as a reader would.
func readAll(t testing.TB, s *persistence.Store, now time.Time) []queues.Entry {
	t.Helper()
	var all []queues.Entry
	after := uint64(0)
	for {
		var page []queues.Entry
		require.NoError(t, s.View(func(tx persistence.Txn) error {
			var err error
			page, err = queues.Read(tx, user, sess, after, 7, now)
			return err
		}))
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
}

func seqs(es []queues.Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func dropSeqs(ds []queues.Drop) []uint64 {
	out := make([]uint64, len(ds))
	for i, d := range ds {
		out[i] = d.Seq
	}
	return out
}

// dump is every key and value of the queue, to prove that nothing changed.
func dump(t testing.TB, s *persistence.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		return tx.Scan(persistence.Prefix("queue", user, sess), nil, func(k, v []byte) (bool, error) {
			out[string(k)] = string(v)
			return true, nil
		})
	}))
	return out
}

// checkInvariants reads the whole queue (tests only) and checks that Meta
// is exact and the index rows match the entries one to one.
func checkInvariants(t testing.TB, s *persistence.Store) {
	t.Helper()
	m := getMeta(t, s)
	// The scan starts kept beside Meta in the meta row.
	var hints struct{ First, ExpiryFrom uint64 }
	if raw, ok := dump(t, s)[string(persistence.Key("queue", user, sess, "meta"))]; ok {
		stored, first, expiryFrom, err := queues.DecodeStateRow([]byte(raw))
		require.NoError(t, err)
		require.Equal(t, m, stored)
		hints.First, hints.ExpiryFrom = first, expiryFrom
	}
	require.LessOrEqual(t, hints.First, m.NextSeq)
	count, size := 0, 0
	keys := map[string]uint64{}
	expiring := map[uint64]time.Time{}
	last := m.Acked
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		if err := tx.Scan(persistence.Prefix("queue", user, sess, "e"), nil, func(k, v []byte) (bool, error) {
			e, err := queues.DecodeEntryRow(binary.BigEndian.Uint64(k[len(k)-8:]), v)
			require.NoError(t, err)
			require.Greater(t, e.Seq, last, "entries in seq order, above Acked %d", m.Acked)
			require.Less(t, e.Seq, m.NextSeq)
			require.GreaterOrEqual(t, e.Seq, hints.First, "entries at or above the scan start")
			last = e.Seq
			count++
			size += len(e.Data)
			if e.Key != "" {
				_, dup := keys[e.Key]
				require.False(t, dup, "two entries hold key %q", e.Key)
				keys[e.Key] = e.Seq
			}
			if !e.Expires.IsZero() {
				expiring[e.Seq] = e.Expires
			}
			return true, nil
		}); err != nil {
			return err
		}
		kp := persistence.Prefix("queue", user, sess, "k")
		nk := 0
		if err := tx.Scan(kp, nil, func(k, v []byte) (bool, error) {
			nk++
			require.Equal(t, keys[string(k[len(kp):])], binary.BigEndian.Uint64(v), "k row %q", k)
			return true, nil
		}); err != nil {
			return err
		}
		require.Equal(t, len(keys), nk, "k rows")
		xp := persistence.Prefix("queue", user, sess, "x")
		nx := 0
		if err := tx.Scan(xp, nil, func(k, _ []byte) (bool, error) {
			nx++
			require.Len(t, k, len(xp)+16)
			seq := binary.BigEndian.Uint64(k[len(k)-8:])
			exp, ok := expiring[seq]
			require.True(t, ok, "x row for entry %d without TTL", seq)
			stamp := binary.BigEndian.Uint64(k[len(xp):])
			require.Equal(t, uint64(exp.UnixNano())^1<<63, stamp)
			require.GreaterOrEqual(t, stamp, hints.ExpiryFrom, "expiry rows at or above the scan start")
			return true, nil
		}); err != nil {
			return err
		}
		require.Equal(t, len(expiring), nx, "x rows")
		return nil
	}))
	require.Equal(t, count, m.Count, "Meta.Count")
	require.Equal(t, size, m.Bytes, "Meta.Bytes")
}
