package queues_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// benchData is a typical small notification (~128 bytes).
var benchData = json.RawMessage(fmt.Sprintf(`{"type":"order","id":12345,"status":"shipped","note":"%0080d"}`, 0))

// BenchmarkEnqueue is one durable commit per message: what a notifier waits
// for before its PUBACK.
func BenchmarkEnqueue(b *testing.B) {
	cases := []struct {
		name string
		msg  queues.Message
		lim  queues.Limits
		fill int // messages queued before timing
	}{
		{"append", queues.Message{Data: benchData}, limits(1<<30, 1<<40, queues.DropOldest), 0},
		{"drop_oldest_full", queues.Message{Data: benchData}, limits(100, 1<<40, queues.DropOldest), 100},
		{"collapse", queues.Message{Data: benchData, Key: "status"}, queues.DefaultLimits(), 1},
		{"ttl", queues.Message{Data: benchData, TTL: time.Hour}, limits(1<<30, 1<<40, queues.DropOldest), 0},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := openStore(b)
			now := time.Now()
			update(b, s, func(tx persistence.Txn) error {
				for range tc.fill {
					if _, _, err := queues.Enqueue(tx, user, sess, tc.msg, tc.lim, now); err != nil {
						return err
					}
				}
				return nil
			})
			b.ReportAllocs()
			b.SetBytes(int64(len(benchData)))
			for b.Loop() {
				if err := s.Update(func(tx persistence.Txn) error {
					_, _, err := queues.Enqueue(tx, user, sess, tc.msg, tc.lim, now)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRead reads one page from the middle of a 10,000-entry queue, in
// a View: what a resuming device's redelivery costs per page.
func BenchmarkRead(b *testing.B) {
	const size = 10_000
	s := openStore(b)
	now := time.Now()
	lim := limits(size, 1<<30, queues.Reject)
	for first := 0; first < size; first += 1000 {
		update(b, s, func(tx persistence.Txn) error {
			for range 1000 {
				if _, _, err := queues.Enqueue(tx, user, sess, queues.Message{Data: benchData}, lim, now); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for _, page := range []int{1, 100} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(page * len(benchData)))
			after := uint64(0)
			for b.Loop() {
				after = (after + 997) % (size - uint64(page))
				if err := s.View(func(tx persistence.Txn) error {
					es, err := queues.Read(tx, user, sess, after, page, now)
					if err == nil && len(es) != page {
						err = fmt.Errorf("read %d entries, want %d", len(es), page)
					}
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAck acknowledges one entry per durable commit, as a device that
// acks each notification does.
func BenchmarkAck(b *testing.B) {
	s := openStore(b)
	now := time.Now()
	lim := limits(1<<30, 1<<40, queues.Reject)
	for done := 0; done < b.N; done += 1000 {
		update(b, s, func(tx persistence.Txn) error {
			for range min(1000, b.N-done) {
				if _, _, err := queues.Enqueue(tx, user, sess, queues.Message{Data: benchData}, lim, now); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		if err := s.Update(func(tx persistence.Txn) error {
			removed, _, _, err := queues.Ack(tx, user, sess, uint64(i), 0, time.Now())
			if err == nil && removed != 1 {
				err = fmt.Errorf("ack %d removed %d entries", i, removed)
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}
