package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
)

// BenchmarkCalls measures durable exactly-once calls end to end: SDK
// devices over loopback MQTT, each in its own session making sequential
// calls of a handler that writes one app state key; every call is fsynced
// before its reply. Compare calls/s with BenchmarkFsync's fsyncs/s from the
// same run: one session is bounded by the disk's fsync rate, concurrent
// sessions share fsyncs (group commit).
//
// In users=1 every session belongs to one user, whose application state
// the calls share: they are serialised up to their commit (not their
// fsync). In users=N each session has a user of its own, as a fleet of
// devices would.
func BenchmarkCalls(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("sessions=%d/users=1", n), func(b *testing.B) { benchmarkCalls(b, n, false) })
		if n > 1 {
			b.Run(fmt.Sprintf("sessions=%d/users=%d", n, n), func(b *testing.B) { benchmarkCalls(b, n, true) })
		}
	}
}

func benchmarkCalls(b *testing.B, sessions int, userEach bool) {
	cfg := brokertest.Config(b)
	cfg.Logger = slog.New(slog.DiscardHandler) // the tests' debug logging is not what a broker pays
	br := brokertest.Start(b, cfg)
	br.Handle("tick", func(_ context.Context, c *nonce.Call) (any, error) {
		return c.Seq, c.State.SetJSON("tick/"+c.Session, c.Seq)
	})
	devs := make([]*client.Client, sessions)
	tokens := map[string]string{}
	for i := range devs {
		user := "bench"
		if userEach {
			user = fmt.Sprintf("bench%d", i)
		}
		if tokens[user] == "" {
			tokens[user] = brokertest.Token(b, br, user, auth.RoleDevice)
		}
		cfg := client.DefaultConfig()
		cfg.URL, cfg.User, cfg.Token, cfg.Session = "tcp://"+br.Addrs().MQTT, user, tokens[user], fmt.Sprintf("s%d", i)
		cfg.ManualPing = true // no pings in the measurement
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := client.Dial(ctx, cfg)
		if err == nil {
			_, err = d.Begin(ctx)
		}
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(d.Close)
		devs[i] = d
	}

	var (
		next    atomic.Int64
		failed  atomic.Value
		wg      sync.WaitGroup
		latency = make([][]time.Duration, sessions)
	)
	b.ReportAllocs()
	c0, s0 := br.StoreStats()
	b.ResetTimer()
	start := time.Now()
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := d.Call(context.Background(), "tick", nil, nil); err != nil {
					failed.Store(err)
					return
				}
				latency[i] = append(latency[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	c1, s1 := br.StoreStats()
	b.ReportMetric(float64(s1-s0)/elapsed.Seconds(), "syncs/s")
	b.ReportMetric(float64(c1-c0)/float64(max(1, s1-s0)), "commits/sync")
	all := slices.Concat(latency...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "calls/s")
	b.ReportMetric(percentile(all, 0.50).Seconds()*1e3, "p50-ms")
	b.ReportMetric(percentile(all, 0.99).Seconds()*1e3, "p99-ms")
}

// percentile returns the p-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// BenchmarkFsync is the raw fsync rate of the disk the broker benchmarks
// use (b.TempDir): append 4 KiB, fsync, repeat.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "fsync"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
}
