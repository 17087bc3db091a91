// Package persistence is Tether's one durable store: a Badger v4 database in
// the data directory that every part of the broker writes through.
//
// A commit returned by Update is on disk (fsynced) when Update returns. Badger
// batches the commits that arrive while one is being written, so concurrent
// committers share one fsync (group commit) instead of paying one each.
package persistence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrNotFound is returned by Txn.Get when a key has no value.
var ErrNotFound = errors.New("persistence: not found")

// ErrConflict is returned by Update when concurrent transactions kept
// writing what fn read, through every retry.
var ErrConflict = errors.New("persistence: transaction conflict persisted through retries")

// ErrLocked is returned by Open when another process holds the data directory.
var ErrLocked = errors.New("persistence: data directory is in use by another process")

// valueThreshold is the value size from which Badger keeps a value in the
// value log rather than in the LSM tree.
const valueThreshold = 64 << 10

// Config says where and how the store keeps its data.
type Config struct {
	// Dir is the data directory; it is created if missing.
	Dir string
	// SyncWrites makes every commit durable (fsynced, in groups) before
	// Update returns and before any read can pass it on. Turning it off
	// breaks "acknowledged means durable" and exists only for benchmarks.
	SyncWrites bool
	// GCInterval is how often the value-log garbage collector runs.
	GCInterval time.Duration
	// GCDiscardRatio is the share of stale data a value-log file must hold to be rewritten.
	GCDiscardRatio float64
	// MemTableSize bounds each in-memory table in bytes.
	MemTableSize int64
	// SyncDelay is the least time from the start of one sync round to the
	// start of the next (0: a round starts as soon as one is needed and the
	// previous one is done). A delay makes a broker whose cores are busy pay
	// for fewer fsyncs, each covering more commits, at the cost of up to
	// SyncDelay more latency per commit: clients that wait for each reply
	// before their next request lose throughput (docs/benchmarks.md).
	SyncDelay time.Duration
	// Logger receives Badger's warnings and errors.
	Logger *slog.Logger
}

// MaxSyncDelay bounds Config.SyncDelay: beyond it a commit's wait for its
// round is dominated by the delay, whatever the disk.
const MaxSyncDelay = 10 * time.Millisecond

// DefaultConfig returns the settings used by `broker serve`.
func DefaultConfig() Config {
	return Config{
		Dir:            "data",
		SyncWrites:     true,
		GCInterval:     5 * time.Minute,
		GCDiscardRatio: 0.5,
		MemTableSize:   16 << 20,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("persistence: data dir must not be empty")
	case c.GCInterval <= 0:
		return fmt.Errorf("persistence: gc interval must be positive, got %s", c.GCInterval)
	case !(c.GCDiscardRatio > 0 && c.GCDiscardRatio < 1): // also refuses NaN
		return fmt.Errorf("persistence: gc discard ratio must be in (0,1), got %g", c.GCDiscardRatio)
	case c.MemTableSize < 1<<20:
		return fmt.Errorf("persistence: memtable size must be at least 1 MiB, got %d", c.MemTableSize)
	case c.SyncDelay < 0 || c.SyncDelay > MaxSyncDelay:
		return fmt.Errorf("persistence: sync delay must be 0 up to %s, got %s", MaxSyncDelay, c.SyncDelay)
	}
	return nil
}

// Store is an open data directory. It is safe for concurrent use.
type Store struct {
	db     *badger.DB
	cfg    Config
	log    *slog.Logger
	cancel context.CancelFunc
	// durable groups commits into sync rounds; nil when SyncWrites is off.
	durable *groupSync
	logs    *logFiles // what a sync round fsyncs; nil when SyncWrites is off
	wg      sync.WaitGroup
	once    sync.Once
}

// Open opens (creating if needed) the data directory and starts the
// value-log GC loop. It returns ErrLocked if another process has it open.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := badger.DefaultOptions(cfg.Dir).
		WithSyncWrites(false). // commits are synced in groups, see groupSync
		WithLogger(badgerLogger{log.With("component", "badger")}).
		WithMemTableSize(cfg.MemTableSize).
		// Values of 64 KiB and more go to the value log; Badger requires
		// the threshold to stay below 15% of the memtable (1 MiB at least).
		// It stays fixed (no VLogPercentile): logFiles relies on it.
		WithValueThreshold(valueThreshold).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		WithCompactL0OnClose(false)
	db, err := badger.Open(opts)
	if err != nil {
		if isLockErr(err) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, cfg.Dir)
		}
		return nil, fmt.Errorf("persistence: open %s: %w", cfg.Dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{db: db, cfg: cfg, log: log, cancel: cancel}
	if cfg.SyncWrites {
		s.logs = &logFiles{dir: cfg.Dir}
		s.durable = newGroupSync(s.logs.sync)
		s.durable.delay = cfg.SyncDelay
		// What an earlier process wrote may not be on disk yet (a kill -9
		// leaves it in the page cache): round 1 syncs it before anything
		// is read.
		if err := s.durable.wait(1); err != nil {
			cancel()
			_ = db.Close()
			return nil, err
		}
	}
	s.wg.Add(1)
	go s.gcLoop(ctx)
	return s, nil
}

// Close stops the GC loop and closes the database, flushing memtables.
// Calling it more than once is harmless.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		err = s.db.Close()
		if s.logs != nil {
			s.logs.close() // after Badger: no round runs any more
		}
	})
	return err
}

// Dir is the data directory the store was opened on.
func (s *Store) Dir() string { return s.cfg.Dir }

// Update runs fn in a read-write transaction and commits it. When Update
// returns nil the commit is durable. If fn returns an error nothing is
// written. When a concurrent transaction wrote what fn read, fn runs again
// (with a short, growing, jittered pause) up to 20 times, and then
// ErrConflict is returned: fn must not keep state across attempts.
//
// Whatever Update returns, what fn read is durable by then too.
func (s *Store) Update(fn func(Txn) error) error {
	d, err := s.Commit(fn)
	return firstErr(d.Wait(), err)
}

// Commit is Update without the wait: it returns once the commit is written
// and visible, with the Durable to wait on before anything fn read or
// wrote — or its error — leaves the process. Callers that must keep an
// order (one connection's publishes, one session's requests) commit in
// that order under their lock and wait outside it, sharing sync rounds.
func (s *Store) Commit(fn func(Txn) error) (Durable, error) {
	ticket, err := s.commit(fn)
	return Durable{s.durable, ticket}, err
}

// Durable is the point a commit or read is on disk: the sync round that
// covers it. The zero Durable is durable already.
type Durable struct {
	g     *groupSync
	round uint64
}

// Wait returns once d is on disk, or the error that makes that unknowable.
func (d Durable) Wait() error {
	if d.g == nil || d.round == 0 {
		return nil
	}
	return d.g.wait(d.round)
}

// Join returns the later of d and o: waiting for it waits for both.
func (d Durable) Join(o Durable) Durable {
	if o.round > d.round {
		return o
	}
	return d
}

// commit runs fn and commits, retrying conflicts, and returns the sync
// round that makes the outcome durable.
func (s *Store) commit(fn func(Txn) error) (uint64, error) {
	for attempt := 0; ; attempt++ {
		ticket, err := s.commitOnce(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return ticket, err
		}
		if attempt == 20 {
			return ticket, ErrConflict
		}
		backoff := time.Duration(50*(1<<min(attempt, 6))) * time.Microsecond
		time.Sleep(backoff/2 + rand.N(backoff))
	}
}

func (s *Store) commitOnce(fn func(Txn) error) (uint64, error) {
	t := s.db.NewTransaction(true)
	defer t.Discard()
	x := &txn{t: t}
	if s.durable == nil {
		if err := fn(x); err != nil {
			return 0, err
		}
		return 0, t.Commit()
	}
	read := s.durable.readTicket()
	if err := fn(x); err != nil {
		return read, err
	}
	s.durable.commitStart()
	err := t.Commit()
	if x.large && err == nil {
		s.logs.noteValueLogged()
	}
	return max(read, s.durable.commitDone(err == nil && x.wrote)), err
}

// View runs fn in a read-only snapshot. When View returns, what fn read is
// durable.
func (s *Store) View(fn func(Txn) error) error {
	d, err := s.Peek(fn)
	return firstErr(d.Wait(), err)
}

// Peek is View without the wait: it returns the Durable that covers what
// fn read. A caller waits on it before what fn read leaves the process,
// or not at all where acting on an unsynced write is harmless: a record
// whose writer hands it out only once it is durable (a token is usable
// only by whoever holds its secret), a decision that only refuses, or a
// read that found nothing (nothing is ever unsynced about an absence in a
// store whose records are not deleted).
func (s *Store) Peek(fn func(Txn) error) (Durable, error) {
	t := s.db.NewTransaction(false)
	defer t.Discard()
	if s.durable == nil {
		return Durable{}, fn(&txn{t: t})
	}
	read := s.durable.readTicket()
	return Durable{s.durable, read}, fn(&txn{t: t})
}

// firstErr returns the first non-nil error: a failed sync outranks what fn
// said, and fn's own error is passed on unwrapped.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Stats counts commits that wrote something and the sync rounds that made
// them durable; commits per sync is the group-commit factor.
func (s *Store) Stats() (commits, syncs uint64) {
	if s.durable == nil {
		return 0, 0
	}
	return s.durable.stats()
}

// Sync forces buffered writes to disk; useful after writes made with SyncWrites off.
func (s *Store) Sync() error { return s.db.Sync() }

func (s *Store) gcLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// One successful run may leave more files to rewrite; stop at the
			// first "nothing to do" (or any error) until the next tick.
			for ctx.Err() == nil && s.runValueLogGC() == nil {
			}
		}
	}
}

// runValueLogGC runs one pass of Badger's value-log GC, telling the sync
// rounds that it writes to the value log.
func (s *Store) runValueLogGC() error {
	if s.logs != nil {
		s.logs.gcStart()
		defer s.logs.gcDone()
	}
	return s.db.RunValueLogGC(s.cfg.GCDiscardRatio)
}

func isLockErr(err error) bool {
	// Badger reports a held directory lock only as text.
	msg := err.Error()
	return strings.Contains(msg, "Cannot acquire directory lock") || strings.Contains(msg, "resource temporarily unavailable")
}
