package persistence_test

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
)

// testConfig is DefaultConfig on dir with Badger's log lines dropped.
func testConfig(dir string) persistence.Config {
	cfg := persistence.DefaultConfig()
	cfg.Dir = dir
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// openStore opens a durable store in a fresh temp dir and closes it when the test ends.
func openStore(t testing.TB) *persistence.Store {
	t.Helper()
	s, err := persistence.Open(testConfig(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func set(t testing.TB, s *persistence.Store, kv map[string]string) {
	t.Helper()
	require.NoError(t, s.Update(func(tx persistence.Txn) error {
		for k, v := range kv {
			if err := tx.Set([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}))
}

func get(t testing.TB, s *persistence.Store, key []byte) ([]byte, error) {
	t.Helper()
	var v []byte
	err := s.View(func(tx persistence.Txn) error {
		var err error
		v, err = tx.Get(key)
		return err
	})
	return v, err
}

func TestOpenClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet", "there")
	s, err := persistence.Open(testConfig(dir))
	require.NoError(t, err)
	require.Equal(t, dir, s.Dir())
	require.DirExists(t, dir, "Open creates the data directory")

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "a second Close is harmless")

	err = s.Update(func(tx persistence.Txn) error { return tx.Set([]byte("k"), []byte("v")) })
	require.Error(t, err, "a closed store must not accept writes")
}

func TestOpenRejectsInvalidConfig(t *testing.T) {
	cfg := testConfig(filepath.Join(t.TempDir(), "data"))
	cfg.GCInterval = 0
	_, err := persistence.Open(cfg)
	require.ErrorContains(t, err, "gc interval")
	require.NoDirExists(t, cfg.Dir, "nothing is created for a config that cannot work")
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := persistence.Open(testConfig(dir))
	require.NoError(t, err)
	set(t, s, map[string]string{"a/1": "one", "a/2": "two"})
	require.NoError(t, s.Close())

	s, err = persistence.Open(testConfig(dir))
	require.NoError(t, err)
	defer s.Close()
	v, err := get(t, s, []byte("a/2"))
	require.NoError(t, err)
	require.Equal(t, "two", string(v))
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := persistence.Open(testConfig(dir))
	require.NoError(t, err)

	_, err = persistence.Open(testConfig(dir))
	require.Error(t, err)
	require.ErrorIs(t, err, persistence.ErrLocked)
	require.ErrorContains(t, err, dir, "the error names the directory")

	// The failed Open must leave the first store working and, once it is
	// closed, the directory free again.
	set(t, s, map[string]string{"k": "v"})
	require.NoError(t, s.Close())
	s2, err := persistence.Open(testConfig(dir))
	require.NoError(t, err)
	require.NoError(t, s2.Close())
}

func TestUpdateThenView(t *testing.T) {
	s := openStore(t)
	require.NoError(t, s.Update(func(tx persistence.Txn) error {
		if err := tx.Set([]byte("session/alice/s1"), []byte("hello")); err != nil {
			return err
		}
		// A write is visible to its own transaction before commit.
		v, err := tx.Get([]byte("session/alice/s1"))
		require.NoError(t, err)
		require.Equal(t, "hello", string(v))
		return nil
	}))

	v, err := get(t, s, []byte("session/alice/s1"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(v))

	// Get returns a copy: changing it must not change what is stored.
	v[0] = 'J'
	v2, err := get(t, s, []byte("session/alice/s1"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(v2))

	// Overwrite, then delete; deleting again (a missing key) is not an error.
	set(t, s, map[string]string{"session/alice/s1": "bye"})
	v, err = get(t, s, []byte("session/alice/s1"))
	require.NoError(t, err)
	require.Equal(t, "bye", string(v))
	for range 2 {
		require.NoError(t, s.Update(func(tx persistence.Txn) error { return tx.Delete([]byte("session/alice/s1")) }))
	}
	_, err = get(t, s, []byte("session/alice/s1"))
	require.ErrorIs(t, err, persistence.ErrNotFound)
}

func TestGetMissing(t *testing.T) {
	s := openStore(t)
	set(t, s, map[string]string{"a/b": "x"})
	for _, key := range []string{"a", "a/", "a/bc", "zzz"} {
		t.Run(key, func(t *testing.T) {
			v, err := get(t, s, []byte(key))
			require.ErrorIs(t, err, persistence.ErrNotFound)
			require.Nil(t, v)
		})
	}
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	s := openStore(t)
	set(t, s, map[string]string{"keep": "old"})
	boom := errors.New("boom")

	err := s.Update(func(tx persistence.Txn) error {
		require.NoError(t, tx.Set([]byte("new"), []byte("x")))
		require.NoError(t, tx.Set([]byte("keep"), []byte("changed")))
		require.NoError(t, tx.Delete([]byte("keep")))
		return boom
	})
	require.ErrorIs(t, err, boom, "fn's error is returned as is")

	_, err = get(t, s, []byte("new"))
	require.ErrorIs(t, err, persistence.ErrNotFound)
	v, err := get(t, s, []byte("keep"))
	require.NoError(t, err)
	require.Equal(t, "old", string(v))
}

func TestViewCannotWrite(t *testing.T) {
	s := openStore(t)
	err := s.View(func(tx persistence.Txn) error { return tx.Set([]byte("k"), []byte("v")) })
	require.Error(t, err)
	_, err = get(t, s, []byte("k"))
	require.ErrorIs(t, err, persistence.ErrNotFound)
}

// scanFixture stores keys q/a/<n> for n in 1..10 (as Uint64Key) with values
// "v<n>", and neighbours that share a byte prefix but not the key prefix.
func scanFixture(t *testing.T) (*persistence.Store, []byte) {
	s := openStore(t)
	prefix := persistence.Prefix("q", "a")
	require.NoError(t, s.Update(func(tx persistence.Txn) error {
		for n := uint64(1); n <= 10; n++ {
			if err := tx.Set(persistence.Uint64Key(prefix, n), []byte("v"+strconv.FormatUint(n, 10))); err != nil {
				return err
			}
		}
		for _, k := range []string{"q/a", "q/", "q/ab/1", "q/b/1", "p/a/1", "q/a.x"} {
			if err := tx.Set([]byte(k), []byte("outside")); err != nil {
				return err
			}
		}
		return nil
	}))
	return s, prefix
}

// collect runs a scan and returns the numbers (suffixes) it visited, stopping after limit (0 = all).
func collect(t *testing.T, s *persistence.Store, scan func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error, limit int) []uint64 {
	t.Helper()
	var got []uint64
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		return scan(tx, func(k, v []byte) (bool, error) {
			n, err := persistence.Uint64Suffix(k)
			require.NoError(t, err)
			require.Equal(t, "v"+strconv.FormatUint(n, 10), string(v), "value of key %x", k)
			got = append(got, n)
			return limit == 0 || len(got) < limit, nil
		})
	}))
	return got
}

func TestScan(t *testing.T) {
	s, prefix := scanFixture(t)
	tests := []struct {
		name  string
		start []byte
		limit int
		want  []uint64
	}{
		{"all from prefix", nil, 0, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"from start key", persistence.Uint64Key(prefix, 5), 0, []uint64{5, 6, 7, 8, 9, 10}},
		{"start between keys", append(persistence.Uint64Key(prefix, 4), 0), 0, []uint64{5, 6, 7, 8, 9, 10}},
		{"start after last key", persistence.Uint64Key(prefix, 11), 0, nil},
		{"early stop", nil, 3, []uint64{1, 2, 3}},
		{"start and early stop", persistence.Uint64Key(prefix, 8), 2, []uint64{8, 9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := collect(t, s, func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error {
				return tx.Scan(prefix, tc.start, fn)
			}, tc.limit)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestScanReverse(t *testing.T) {
	s, prefix := scanFixture(t)
	t.Run("all", func(t *testing.T) {
		got := collect(t, s, func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error {
			return tx.ScanReverse(prefix, fn)
		}, 0)
		require.Equal(t, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, got)
	})
	t.Run("early stop", func(t *testing.T) {
		got := collect(t, s, func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error {
			return tx.ScanReverse(prefix, fn)
		}, 2)
		require.Equal(t, []uint64{10, 9}, got)
	})
	t.Run("empty prefix range", func(t *testing.T) {
		got := collect(t, s, func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error {
			return tx.ScanReverse(persistence.Prefix("q", "none"), fn)
		}, 0)
		require.Empty(t, got)
	})
}

// TestScanReverseLargeNumbers checks that ScanReverse starts at the true last
// key even when the keys after the prefix begin with 0xff bytes, as
// Uint64Key does for numbers of 2^63 and more.
func TestScanReverseLargeNumbers(t *testing.T) {
	s := openStore(t)
	prefix := persistence.Prefix("big")
	nums := []uint64{1, 1 << 32, 1 << 63, math.MaxUint64 - 1, math.MaxUint64}
	require.NoError(t, s.Update(func(tx persistence.Txn) error {
		for _, n := range nums {
			if err := tx.Set(persistence.Uint64Key(prefix, n), []byte("v"+strconv.FormatUint(n, 10))); err != nil {
				return err
			}
		}
		return nil
	}))
	forward := collect(t, s, func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error {
		return tx.Scan(prefix, nil, fn)
	}, 0)
	require.Equal(t, nums, forward)

	reverse := collect(t, s, func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error {
		return tx.ScanReverse(prefix, fn)
	}, 0)
	require.Equal(t, []uint64{math.MaxUint64, math.MaxUint64 - 1, 1 << 63, 1 << 32, 1}, reverse)
}

func TestScanCallbackError(t *testing.T) {
	s, prefix := scanFixture(t)
	stop := errors.New("stop here")
	for _, tc := range []struct {
		name string
		scan func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error
	}{
		{"Scan", func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error { return tx.Scan(prefix, nil, fn) }},
		{"ScanReverse", func(tx persistence.Txn, fn func(k, v []byte) (bool, error)) error { return tx.ScanReverse(prefix, fn) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := s.View(func(tx persistence.Txn) error {
				return tc.scan(tx, func(_, _ []byte) (bool, error) {
					calls++
					if calls == 4 {
						return true, stop // an error stops the scan even if more is true
					}
					return true, nil
				})
			})
			require.ErrorIs(t, err, stop)
			require.Equal(t, 4, calls)
		})
	}
}

func TestScanSeesOwnWrites(t *testing.T) {
	s, prefix := scanFixture(t)
	require.NoError(t, s.Update(func(tx persistence.Txn) error {
		require.NoError(t, tx.Delete(persistence.Uint64Key(prefix, 2)))
		require.NoError(t, tx.Set(persistence.Uint64Key(prefix, 11), []byte("v11")))
		var got []uint64
		require.NoError(t, tx.Scan(prefix, nil, func(k, _ []byte) (bool, error) {
			n, err := persistence.Uint64Suffix(k)
			got = append(got, n)
			return true, err
		}))
		require.Equal(t, []uint64{1, 3, 4, 5, 6, 7, 8, 9, 10, 11}, got)
		return nil
	}))
}

// TestConcurrentUpdatesLoseNothing runs read-modify-write increments of one
// counter from many goroutines: every Update that returned nil must count.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s := openStore(t)
	key := []byte("counter")
	const workers, each = 8, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed, conflicts := 0, 0
	for range workers {
		wg.Go(func() {
			for range each {
				err := s.Update(func(tx persistence.Txn) error {
					n := 0
					v, err := tx.Get(key)
					switch {
					case errors.Is(err, persistence.ErrNotFound):
					case err != nil:
						return err
					default:
						if n, err = strconv.Atoi(string(v)); err != nil {
							return err
						}
					}
					return tx.Set(key, []byte(strconv.Itoa(n+1)))
				})
				mu.Lock()
				switch {
				case err == nil:
					committed++
				case errors.Is(err, persistence.ErrConflict):
					conflicts++ // Update gives up after a few conflicting attempts
				default:
					t.Errorf("update: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	v, err := get(t, s, key)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(committed), string(v), "%d commits, %d gave up", committed, conflicts)
	require.Positive(t, committed)
	t.Logf("%d commits, %d gave up on conflicts", committed, conflicts)
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, persistence.DefaultConfig().Validate())
	// Every invalid setting is refused with a message naming the field.
	tests := []struct {
		name   string
		modify func(*persistence.Config)
		want   string // the field as the message names it
	}{
		{"empty dir", func(c *persistence.Config) { c.Dir = "" }, "data dir"},
		{"zero gc interval", func(c *persistence.Config) { c.GCInterval = 0 }, "gc interval"},
		{"negative gc interval", func(c *persistence.Config) { c.GCInterval = -1 }, "gc interval"},
		{"zero discard ratio", func(c *persistence.Config) { c.GCDiscardRatio = 0 }, "gc discard ratio"},
		{"negative discard ratio", func(c *persistence.Config) { c.GCDiscardRatio = -0.5 }, "gc discard ratio"},
		{"discard ratio one", func(c *persistence.Config) { c.GCDiscardRatio = 1 }, "gc discard ratio"},
		{"discard ratio NaN", func(c *persistence.Config) { c.GCDiscardRatio = math.NaN() }, "gc discard ratio"},
		{"memtable too small", func(c *persistence.Config) { c.MemTableSize = 1<<20 - 1 }, "memtable size"},
		{"memtable zero", func(c *persistence.Config) { c.MemTableSize = 0 }, "memtable size"},
		{"negative sync delay", func(c *persistence.Config) { c.SyncDelay = -1 }, "sync delay"},
		{"sync delay too long", func(c *persistence.Config) { c.SyncDelay = persistence.MaxSyncDelay + 1 }, "sync delay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := persistence.DefaultConfig()
			tc.modify(&cfg)
			err := cfg.Validate()
			require.Error(t, err)
			require.ErrorContains(t, err, "persistence: ")
			require.ErrorContains(t, err, tc.want)
		})
	}
	t.Run("smallest valid values", func(t *testing.T) {
		cfg := persistence.DefaultConfig()
		cfg.GCInterval = 1
		cfg.GCDiscardRatio = 0.01
		cfg.MemTableSize = 1 << 20
		cfg.SyncDelay = persistence.MaxSyncDelay
		require.NoError(t, cfg.Validate())
	})
}

// TestGCLoopRuns opens a store with a tiny GC interval so the loop ticks
// while writes happen, and checks Close still returns promptly with data intact.
func TestGCLoopRuns(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.GCInterval = time.Millisecond
	s, err := persistence.Open(cfg)
	require.NoError(t, err)
	for i := range 50 {
		set(t, s, map[string]string{"k": fmt.Sprint(i)})
	}
	require.NoError(t, s.Close())
	s, err = persistence.Open(cfg)
	require.NoError(t, err)
	defer s.Close()
	v, err := get(t, s, []byte("k"))
	require.NoError(t, err)
	require.Equal(t, "49", string(v))
}
