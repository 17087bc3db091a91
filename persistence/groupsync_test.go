package persistence

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func openDurable(t *testing.T, dir string) *Store {
	t.Helper()
	return openDurableWith(t, dir, 0)
}

func openDurableWith(t *testing.T, dir string, syncDelay time.Duration) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir, cfg.SyncDelay = dir, syncDelay
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestOpenSyncsWhatTheStoreHeld: opening runs one sync round before
// anything is read, which fsyncs the logs an earlier process may have left
// unsynced (a kill -9 leaves its writes in the page cache).
func TestOpenSyncsWhatTheStoreHeld(t *testing.T) {
	dir := t.TempDir()
	s := openDurable(t, dir)
	require.NoError(t, s.Update(func(tx Txn) error { return tx.Set([]byte("k"), []byte("v")) }))
	require.NoError(t, s.Close())
	again := openDurable(t, dir)
	commits, syncs := again.Stats()
	require.Equal(t, uint64(0), commits)
	require.Equal(t, uint64(1), syncs, "one round at open")
	require.NotEmpty(t, again.logs.open, "the round opened (and synced) the live logs")
}

// TestGroupCommitSharesSyncs has many writers commit at once: every commit
// is counted, and they share sync rounds instead of paying one each.
func TestGroupCommitSharesSyncs(t *testing.T) {
	s := openDurable(t, t.TempDir())
	const writers, each = 32, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Appendf(nil, "w%02d/%03d", w, i)
				if err := s.Update(func(tx Txn) error { return tx.Set(key, []byte("v")) }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	commits, syncs := s.Stats()
	require.Equal(t, uint64(writers*each), commits)
	require.Positive(t, syncs)
	require.Less(t, syncs, commits/2, "commits should share sync rounds")
	t.Logf("%d commits in %d sync rounds", commits, syncs)

	// A read-only Update is not a commit and needs no round.
	require.NoError(t, s.Update(func(tx Txn) error { _, err := tx.Get([]byte("w00/000")); return err }))
	again, _ := s.Stats()
	require.Equal(t, commits, again)
}

// TestSyncDelaySpacesRounds: with a sync delay, rounds start at least that
// far apart, and commits that arrive while the next round waits share it.
func TestSyncDelaySpacesRounds(t *testing.T) {
	const delay = 10 * time.Millisecond
	s := openDurableWith(t, t.TempDir(), delay)
	start := time.Now()
	for i := range 5 {
		require.NoError(t, s.Update(func(tx Txn) error { return tx.Set(fmt.Appendf(nil, "k%d", i), []byte("v")) }))
	}
	// Round 1 ran at open, just before start; the five that followed
	// started delay apart, the first of them delay after round 1.
	require.GreaterOrEqual(t, time.Since(start), 4*delay)
	commits, syncs := s.Stats()
	require.Equal(t, []uint64{5, 6}, []uint64{commits, syncs}, "one round each, after the one at open")

	// Twenty writers at once: the round after the last one waits out the
	// delay, and everything written meanwhile rides it.
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			if err := s.Update(func(tx Txn) error { return tx.Set(fmt.Appendf(nil, "w%d", w), []byte("v")) }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	commits, again := s.Stats()
	require.Equal(t, uint64(25), commits)
	require.LessOrEqual(t, again-syncs, uint64(3), "twenty commits in a few delays' worth of rounds")
}

// writeHeldUnsynced commits k=v1 and holds the sync round that covers it
// open until release is closed: the value is visible in Badger, not yet
// synced. wrote gets Update's result.
func writeHeldUnsynced(t *testing.T, s *Store) (wrote chan error, release chan struct{}) {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	real := s.durable.sync
	s.durable.sync = func() error {
		once.Do(func() { close(entered); <-release })
		return real()
	}
	wrote = make(chan error, 1)
	go func() {
		wrote <- s.Update(func(tx Txn) error { return tx.Set([]byte("k"), []byte("v1")) })
	}()
	<-entered
	return wrote, release
}

// TestReadWaitsForSync holds a sync round open after a commit and checks
// that neither the writer nor a reader that sees the new value returns
// before the round finishes: nothing unsynced leaves the store.
func TestReadWaitsForSync(t *testing.T) {
	s := openDurable(t, t.TempDir())
	wrote, release := writeHeldUnsynced(t, s)

	read := make(chan []byte, 1)
	go func() {
		var v []byte
		err := s.View(func(tx Txn) error {
			var err error
			v, err = tx.Get([]byte("k"))
			return err
		})
		if err != nil {
			v = []byte(err.Error())
		}
		read <- v
	}()
	select {
	case v := <-read:
		t.Fatalf("read returned %q before its data was synced", v)
	case err := <-wrote:
		t.Fatalf("write returned %v before it was synced", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-wrote)
	require.Equal(t, "v1", string(<-read))
}

// TestPeekDoesNotWaitForSync: Peek sees a committed value while the sync
// round that covers it is still held open, and returns a Durable that is
// done only with that round; View, in the same state, waits.
func TestPeekDoesNotWaitForSync(t *testing.T) {
	s := openDurable(t, t.TempDir())
	wrote, release := writeHeldUnsynced(t, s)

	var v []byte
	d, err := s.Peek(func(tx Txn) error {
		var err error
		v, err = tx.Get([]byte("k"))
		return err
	})
	require.NoError(t, err)
	require.Equal(t, "v1", string(v), "Peek returned during the sync round")
	waited := make(chan error, 1)
	go func() { waited <- d.Wait() }()
	viewed := make(chan error, 1)
	go func() { viewed <- s.View(func(tx Txn) error { _, err := tx.Get([]byte("k")); return err }) }()
	select {
	case err := <-viewed:
		t.Fatalf("View returned %v before the sync round finished", err)
	case err := <-waited:
		t.Fatalf("Peek's Durable was done (%v) before the sync round finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-wrote)
	require.NoError(t, <-viewed)
	require.NoError(t, <-waited)
}

// TestSyncFailureIsSticky: after a failed sync nothing is known to be on
// disk, so the commit and every later read and write report it.
func TestSyncFailureIsSticky(t *testing.T) {
	s := openDurable(t, t.TempDir())
	boom := errors.New("disk on fire")
	s.durable.sync = func() error { return boom }
	err := s.Update(func(tx Txn) error { return tx.Set([]byte("k"), []byte("v")) })
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "persistence: sync failed")
	err = s.Update(func(tx Txn) error { return tx.Set([]byte("k2"), []byte("v")) })
	require.ErrorIs(t, err, boom)
	err = s.View(func(tx Txn) error { _, err := tx.Get([]byte("k")); return err })
	require.ErrorIs(t, err, boom)
}

// TestLogFilesSyncsLiveLogs checks which of Badger's logs a round syncs:
// every log at or above the newest of its kind seen by the last round, not
// the ones completed before it, nor other files; a log removed meanwhile
// (flushed by Badger) is no error.
func TestLogFilesSyncsLiveLogs(t *testing.T) {
	dir := t.TempDir()
	touch := func(names ...string) {
		for _, n := range names {
			require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("data"), 0o600))
		}
	}
	held := func(l *logFiles) []string {
		var names []string
		for n := range l.open {
			names = append(names, n)
		}
		slices.Sort(names)
		return names
	}
	touch("00001.mem", "00002.mem", "000001.vlog", "000004.sst", "MANIFEST", "x.mem", "7.vlog.tmp")
	l := &logFiles{dir: dir}
	t.Cleanup(l.close)

	require.NoError(t, l.sync()) // first round: every log
	require.Equal(t, []string{"000001.vlog", "00002.mem"}, held(l), "only the newest log of each kind stays open")
	require.Equal(t, [2]uint64{2, 1}, l.lastTop)

	touch("00003.mem")                                             // a memtable rotation
	require.NoError(t, os.Remove(filepath.Join(dir, "00001.mem"))) // flushed
	require.NoError(t, l.sync())
	require.Equal(t, []string{"000001.vlog", "00003.mem"}, held(l))
	require.Equal(t, [2]uint64{3, 1}, l.lastTop)

	require.NoError(t, l.sync()) // nothing new: the same handles
	require.Equal(t, []string{"000001.vlog", "00003.mem"}, held(l))

	require.NoError(t, os.Chmod(dir, 0o000))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if os.Geteuid() != 0 { // root opens anything
		l.close()
		require.Error(t, l.sync())
	}
}

// TestLogFilesSyncsValueLogsOnlyWhenWritten checks that a round skips a
// value log an earlier round synced unless a large value or a value-log GC
// may have written to it since, and always syncs a new one.
func TestLogFilesSyncsValueLogsOnlyWhenWritten(t *testing.T) {
	dir := t.TempDir()
	touch := func(names ...string) {
		for _, n := range names {
			require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("data"), 0o600))
		}
	}
	touch("00001.mem", "000001.vlog")
	var synced []string
	l := &logFiles{dir: dir, synced: func(n string) { synced = append(synced, n) }}
	t.Cleanup(l.close)
	round := func() []string {
		t.Helper()
		synced = nil
		require.NoError(t, l.sync())
		slices.Sort(synced)
		return synced
	}

	tests := []struct {
		name   string
		before func()
		want   []string
	}{
		{"first round: every log", func() {}, []string{"000001.vlog", "00001.mem"}},
		{"nothing noted: memtable log only", func() {}, []string{"00001.mem"}},
		{"large value: value log too", l.noteValueLogged, []string{"000001.vlog", "00001.mem"}},
		{"noted once, synced once", func() {}, []string{"00001.mem"}},
		{"new value log", func() { touch("000002.vlog") }, []string{"000001.vlog", "000002.vlog", "00001.mem"}},
		{"gc running", l.gcStart, []string{"000002.vlog", "00001.mem"}},
		{"gc still running", func() {}, []string{"000002.vlog", "00001.mem"}},
		{"gc done", l.gcDone, []string{"000002.vlog", "00001.mem"}},
		{"after gc", func() {}, []string{"00001.mem"}},
	}
	for _, tt := range tests {
		tt.before()
		require.Equal(t, tt.want, round(), tt.name)
	}
}

// TestStoreNotesLargeValues checks that the round a commit waits for syncs
// the value log when the commit set a value that may go there, and only
// then; and that it does so when another round ran between the value's Set
// and Badger's write of it (the mark, set too early, was consumed by a
// round that could not cover the write).
func TestStoreNotesLargeValues(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	var mu sync.Mutex
	var synced []string
	s.logs.synced = func(n string) {
		mu.Lock()
		synced = append(synced, n)
		mu.Unlock()
	}
	// commit sets a value of size under key k, runs between after the Set
	// (in its own commit and round), and reports whether the value log was
	// synced by the round the commit waits for.
	commit := func(size int, between func()) bool {
		d, err := s.Commit(func(tx Txn) error {
			require.NoError(t, tx.Set([]byte("k"), make([]byte, size)))
			between()
			return nil
		})
		require.NoError(t, err)
		mu.Lock()
		synced = nil
		mu.Unlock()
		require.NoError(t, d.Wait())
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(synced, func(n string) bool { return strings.HasSuffix(n, ".vlog") })
	}
	nothing := func() {}
	otherRound := func() {
		require.NoError(t, s.Update(func(tx Txn) error { return tx.Set([]byte("other"), []byte("x")) }))
	}
	require.True(t, commit(valueThreshold, nothing), "the first large value")
	require.False(t, commit(100, nothing), "a small value leaves the value log alone")
	require.True(t, commit(valueThreshold, nothing), "a large value")
	require.True(t, commit(valueThreshold, otherRound), "a large value with a round between its Set and its write")
	require.False(t, commit(100, otherRound), "a small value with a round between")
}

// TestDurableAcrossMemtableRotation writes far more than one memtable holds,
// so Badger rotates memtables while commits are synced in groups, and checks
// everything reads back after reopening.
func TestDurableAcrossMemtableRotation(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.MemTableSize = 1 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Open(cfg)
	require.NoError(t, err)
	value := make([]byte, 4<<10)
	big := make([]byte, 100<<10) // above the value threshold: goes to the value log
	const n = 1000               // about 5 MiB: several rotations
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				v := value
				if i%100 == 0 {
					v = big
				}
				if err := s.Update(func(tx Txn) error { return tx.Set(Uint64Key(Prefix("r"), uint64(i)), v) }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, s.Close())
	s, err = Open(cfg)
	require.NoError(t, err)
	defer s.Close()
	count := 0
	require.NoError(t, s.View(func(tx Txn) error {
		return tx.Scan(Prefix("r"), nil, func(k, v []byte) (bool, error) {
			i, err := Uint64Suffix(k)
			want := len(value)
			if i%100 == 0 {
				want = len(big)
			}
			if len(v) != want {
				return false, fmt.Errorf("entry %d: %d bytes, want %d", i, len(v), want)
			}
			count++
			return true, err
		})
	}))
	require.Equal(t, n, count)
}
