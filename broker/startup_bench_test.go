package broker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/sessions"
)

// seedSessions stores n detached sessions (with a journal event each)
// straight into the data directory, as a broker that ran them would leave it.
func seedSessions(tb testing.TB, dir string, n int) {
	cfg := persistence.DefaultConfig()
	cfg.Dir, cfg.SyncWrites = dir, false
	s, err := persistence.Open(cfg)
	require.NoError(tb, err)
	defer s.Close()
	now := time.Now()
	for start := 0; start < n; start += 2000 {
		require.NoError(tb, s.Update(func(tx persistence.Txn) error {
			for i := start; i < start+2000 && i < n; i++ {
				user, name := fmt.Sprintf("user%d", i/10), fmt.Sprintf("s%d", i%10)
				rec, _ := json.Marshal(sessions.Session{User: user, Name: name, State: sessions.StateDetached,
					Nonce: "0123456789abcdef0123456789abcdef", Memento: json.RawMessage(`{"step":7}`), Phase: "test_started",
					Created: now, FirstBegin: now, Since: now, Instances: 1, Journal: sessions.JournalRange{First: 1, Next: 2}})
				ev, _ := json.Marshal(sessions.Event{Seq: 1, Time: now, Kind: "begin"})
				if err := tx.Set(persistence.Key("sess", user, name), rec); err != nil {
					return err
				}
				if err := tx.Set(persistence.Uint64Key(persistence.Prefix("journal", user, name), 1), ev); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(tb, s.Sync())
}

// BenchmarkStartup measures broker.Open (store, listeners, hooks, ready)
// on a data directory holding 0 or 100k sessions: start-up must not grow
// with them, since sessions load lazily.
func BenchmarkStartup(b *testing.B) {
	for _, n := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			cfg := brokertest.Config(b)
			seedSessions(b, cfg.DataDir, n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				br, err := broker.Open(cfg)
				require.NoError(b, err)
				b.ReportMetric(float64(time.Since(start).Microseconds())/1000, "ms/open")
				b.StopTimer()
				require.Zero(b, br.Sessions().Loaded())
				require.NoError(b, br.Close())
				b.StartTimer()
			}
		})
	}
}
