package sessions

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
)

// TestAppendEventTrimsByAge appends events an hour apart under a 150-minute
// MaxAge and checks the journal keeps the last three after every append,
// whether the oldest event's time is remembered across commits (as an
// entry does) or read from the store each time (as after a reload).
func TestAppendEventTrimsByAge(t *testing.T) {
	for _, tt := range []struct {
		name     string
		remember bool
	}{{"remembered head", true}, {"head read each time", false}} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := persistence.DefaultConfig()
			cfg.Dir, cfg.SyncWrites, cfg.Logger = t.TempDir(), false, slog.New(slog.DiscardHandler)
			st, err := persistence.Open(cfg)
			require.NoError(t, err)
			t.Cleanup(func() { _ = st.Close() })

			keep := Retention{MaxEvents: 100, MaxAge: 150 * time.Minute}
			s := Session{User: "u", Name: "s"}
			var head journalHead
			t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := range 8 {
				var (
					ns Session
					h  journalHead
				)
				require.NoError(t, st.Update(func(tx persistence.Txn) error {
					ns, h = s, head
					if !tt.remember {
						h = journalHead{}
					}
					return appendEvent(tx, &ns, Event{Kind: "k", Time: t0.Add(time.Duration(i) * time.Hour)}, keep, &h)
				}))
				s, head = ns, h

				var seqs []uint64
				require.NoError(t, st.View(func(tx persistence.Txn) error {
					evs, err := readJournal(tx, "u", "s", 0, 0)
					for _, e := range evs {
						seqs = append(seqs, e.Seq)
					}
					return err
				}))
				n := uint64(i + 1)
				var want []uint64
				for seq := n - min(n, 3) + 1; seq <= n; seq++ {
					want = append(want, seq)
				}
				require.Equal(t, want, seqs, "after event %d", n)
				require.Equal(t, JournalRange{First: want[0], Next: n + 1}, s.Journal)
			}
		})
	}
}
