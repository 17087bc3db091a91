package persistence

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// groupSync makes commits durable in groups: Badger runs with SyncWrites off,
// and every commit waits for one sync round that started after it was
// written. Commits that arrive while a round runs share the next one, so many
// writers pay for one fsync instead of one each.
//
// Badger makes a commit visible to readers before the round that covers it,
// so readers wait too: a read that may have seen an unsynced commit waits for
// a round that started after its snapshot. Nothing leaves the store — as a
// reply, a delivery or a decision — before it is on disk.
//
// With a delay, a round starts no sooner than delay after the previous one
// started: fewer, fuller rounds when commits arrive faster than that.
//
// Rounds are numbered from 1; started and done count them, and at most one
// runs at a time. A failed sync is sticky: after it nothing is known to be
// durable, so every later commit and read fails with the same error.
type groupSync struct {
	sync func() error // one round: make every write so far durable

	mu       sync.Mutex
	cond     sync.Cond
	started  uint64 // rounds begun
	done     uint64 // rounds finished
	running  bool
	inflight int    // commits between commitStart and commitDone
	needed   uint64 // the round every finished commit so far waits for
	err      error
	commits  uint64 // commits that wrote something

	delay     time.Duration // least time between round starts (Config.SyncDelay)
	lastStart time.Time     // when the latest round started, if delay > 0
}

func newGroupSync(sync func() error) *groupSync {
	g := &groupSync{sync: sync}
	g.cond.L = &g.mu
	return g
}

// readTicket is the round a read must wait for before what it saw leaves the
// store. Call it after the read's snapshot is taken.
func (g *groupSync) readTicket() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inflight > 0 {
		// A commit being written may already be visible to the snapshot.
		return g.started + 1
	}
	return g.needed
}

// commitStart is called just before a commit is handed to Badger.
func (g *groupSync) commitStart() {
	g.mu.Lock()
	g.inflight++
	g.mu.Unlock()
}

// commitDone is called when Badger returns from a commit and reports the
// round that makes it durable (0 when nothing was written).
func (g *groupSync) commitDone(wrote bool) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if !wrote {
		return 0
	}
	g.commits++
	ticket := g.started + 1
	g.needed = max(g.needed, ticket)
	return ticket
}

// wait returns once round ticket has finished, leading rounds itself while
// no other caller does.
func (g *groupSync) wait(ticket uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.done < ticket && g.err == nil {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		if g.delay > 0 {
			// Commits arriving meanwhile ride this round (their
			// tickets are started+1 until it starts).
			if wait := g.delay - time.Since(g.lastStart); wait > 0 {
				g.mu.Unlock()
				time.Sleep(wait)
				g.mu.Lock()
			}
			g.lastStart = time.Now()
		}
		if g.inflight > 0 {
			// Commits are being written: let them finish and ride this
			// round rather than pay for the next fsync themselves.
			g.mu.Unlock()
			runtime.Gosched()
			g.mu.Lock()
		}
		g.started++
		round := g.started
		g.mu.Unlock()
		err := g.sync()
		g.mu.Lock()
		g.running = false
		g.done = round
		if err != nil {
			g.err = fmt.Errorf("persistence: sync failed, writes since the last good sync may be lost: %w", err)
		}
		g.cond.Broadcast()
	}
	return g.err
}

// stats reports commits that wrote and sync rounds run so far.
func (g *groupSync) stats() (commits, syncs uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.commits, g.done
}

// logFiles makes Badger's logs durable: the memtable write-ahead logs
// (*.mem) and value logs (*.vlog) that may hold writes since the last
// round are fsynced, and the directory itself when a new log file has
// appeared. Badger writes its logs through shared memory maps; on Linux
// fsync writes back pages dirtied through a mapping just as msync does.
//
// Badger appends only to the newest log of each kind, so a round syncs the
// logs numbered at or above the newest one the previous round saw: an
// older log was complete before that round listed the directory, and that
// round synced it. Handles of the logs still written to stay open between
// rounds, so a round costs one directory listing and an fsync per live log.
//
// Badger's own Sync is not used: it covers only the current memtable's log
// (one that filled up stays unsynced until a background flush has written
// it as a table), and it holds the database lock through the msync, which
// stalls every commit behind the round instead of letting them gather for
// the next one.
//
// Values below Badger's value threshold live in the memtable log only, so
// the value log is written only by large values and by value-log GC. A
// round skips the fsync of value logs it synced before unless one of those
// may have written since the last round (valueLogged): with small values,
// a round costs one fsync instead of two.
//
// Only the round leader calls sync, one at a time (groupSync).
type logFiles struct {
	dir     string
	d       *os.File            // the directory, kept open
	open    map[string]*os.File // live logs by file name
	lastTop [2]uint64           // newest log id of each kind at the last round

	// valueLogged is set by every write that may reach the value log,
	// before its commit is handed to Badger; the next round to start
	// clears it and syncs the value logs. gcRunning counts value-log GC
	// runs in progress, whose rewrites go to the value log unannounced:
	// every round syncs the value logs while one runs.
	valueLogged atomic.Bool
	gcRunning   atomic.Int32

	synced func(name string) // tests: called for each log a round fsyncs
}

// valueLogMin is the value size from which a write is taken to reach the
// value log: half of the threshold Open gives Badger (values of at least
// the threshold go there), a margin that costs only a rare extra fsync.
const valueLogMin = valueThreshold / 2

// noteValueLogged records that a commit may have written to the value log.
// It is called after Badger has written the commit and before the commit
// takes its round's ticket: a round that consumed the mark earlier started
// after the write, so its fsync covers the value as well.
func (l *logFiles) noteValueLogged() { l.valueLogged.Store(true) }

// gcStart and gcDone bracket a run of Badger's value-log GC.
func (l *logFiles) gcStart() { l.gcRunning.Add(1) }

func (l *logFiles) gcDone() {
	l.valueLogged.Store(true) // before gcRunning drops: no round misses the rewrites
	l.gcRunning.Add(-1)
}

// Kinds of log, indexes into logExts.
const (
	memtableLog = iota
	valueLog
)

var logExts = [2]string{memtableLog: ".mem", valueLog: ".vlog"}

func (l *logFiles) sync() error {
	// Read before listing: every commit this round covers set it before
	// the round began (groupSync orders them through its mutex).
	values := l.valueLogged.Swap(false) || l.gcRunning.Load() > 0
	if l.d == nil {
		d, err := os.Open(l.dir)
		if err != nil {
			return err
		}
		l.d, l.open = d, map[string]*os.File{}
	} else if _, err := l.d.Seek(0, io.SeekStart); err != nil {
		return err
	}
	names, err := l.d.Readdirnames(-1)
	if err != nil {
		return err
	}
	var top [2]uint64
	for _, n := range names {
		if kind, id, ok := logID(n); ok {
			top[kind] = max(top[kind], id)
		}
	}
	// A new value log means the one before it was written up to its end.
	values = values || top[valueLog] != l.lastTop[valueLog]
	for _, n := range names {
		kind, id, ok := logID(n)
		if !ok || id < l.lastTop[kind] {
			continue // not a log, or complete and synced by an earlier round
		}
		if kind == valueLog && !values && l.open[n] != nil {
			continue // synced by an earlier round, and not written since
		}
		if err := l.syncFile(n); err != nil {
			return err
		}
	}
	if top != l.lastTop {
		// New logs: their directory entries must be durable too, and the
		// handles of logs that are now complete can go.
		if err := l.d.Sync(); err != nil {
			return err
		}
		for n, f := range l.open {
			if kind, id, _ := logID(n); id < top[kind] {
				_ = f.Close()
				delete(l.open, n)
			}
		}
		l.lastTop = top
	}
	return nil
}

// close releases the handles; the next sync opens them again.
func (l *logFiles) close() {
	for _, f := range l.open {
		_ = f.Close()
	}
	if l.d != nil {
		_ = l.d.Close()
	}
	l.d, l.open = nil, nil
}

// logID parses a log file name <id>.mem or <id>.vlog.
func logID(name string) (kind int, id uint64, ok bool) {
	for k, ext := range logExts {
		if base, found := strings.CutSuffix(name, ext); found {
			id, err := strconv.ParseUint(base, 10, 64)
			return k, id, err == nil
		}
	}
	return 0, 0, false
}

// syncFile fsyncs the log named n; one removed meanwhile was already
// written out by Badger (flushed to a table, or collected) and needs nothing.
func (l *logFiles) syncFile(n string) error {
	f, ok := l.open[n]
	if !ok {
		var err error
		f, err = os.Open(filepath.Join(l.dir, n))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		l.open[n] = f
	}
	if l.synced != nil {
		l.synced(n)
	}
	return f.Sync()
}
