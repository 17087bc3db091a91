package persistence_test

import (
	"sync/atomic"
	"testing"

	"github.com/f47fa0da/tether/persistence"
)

// benchValue is about the size of a queued message.
var benchValue = make([]byte, 256)

// BenchmarkUpdate is one durable (fsynced) commit after another: the cost a
// single writer pays per acknowledged write.
func BenchmarkUpdate(b *testing.B) {
	s := openStore(b) // SyncWrites is on in DefaultConfig
	prefix := persistence.Prefix("bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(benchValue)))
	var n uint64
	for b.Loop() {
		n++
		if err := s.Update(func(tx persistence.Txn) error {
			return tx.Set(persistence.Uint64Key(prefix, n), benchValue)
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateParallel is many writers committing durably at once. Badger
// writes the commits that queue up behind one fsync together (group commit),
// so ns/op (wall time per commit) should be well below BenchmarkUpdate's.
func BenchmarkUpdateParallel(b *testing.B) {
	s := openStore(b)
	prefix := persistence.Prefix("bench")
	var n atomic.Uint64
	b.ReportAllocs()
	b.SetBytes(int64(len(benchValue)))
	b.SetParallelism(16) // 16 writers per CPU: commits are I/O bound, not CPU bound
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := persistence.Uint64Key(prefix, n.Add(1))
			if err := s.Update(func(tx persistence.Txn) error { return tx.Set(key, benchValue) }); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
