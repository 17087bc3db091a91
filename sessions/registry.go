package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/wire"
)

// Store is the durable store the registry needs.
type Store interface {
	Update(fn func(persistence.Txn) error) error
	Commit(fn func(persistence.Txn) error) (persistence.Durable, error)
	View(fn func(persistence.Txn) error) error
	Peek(fn func(persistence.Txn) error) (persistence.Durable, error)
}

// Outbox is how the registry reaches devices; the broker implements it by
// publishing on the session's MQTT topics. Calls must not block for long.
type Outbox interface {
	// Tick sends t on sessions/U/S/tick.
	Tick(user, name string, t Tick)
	// Presence sets the retained presence of sessions/U/S/presence.
	Presence(user, name string, p Presence)
}

// Config tunes the registry. Fill it from DefaultConfig.
type Config struct {
	TickInterval  time.Duration // ticks to an active session
	SweepInterval time.Duration // how often silent sessions are detached and idle ones evicted
	IdleEvict     time.Duration // an unattached session leaves memory after this long untouched
	Retention     Retention     // journal bounds
	DefaultPolicy Policy        // for sessions no rule matches
	Rules         []Rule        // first match wins, by session name
	MaxMemento    int           // bytes of JSON
	MaxCursor     int           // bytes of JSON
	MaxPhase      int           // bytes
	// MaxSessionsPerUser caps the sessions a user may hold; creating one more
	// (by begin or by notifying a new name) fails with ErrTooManySessions.
	MaxSessionsPerUser int
	Logger             *slog.Logger
	Now                func() time.Time // nil: time.Now
}

// DefaultConfig returns the defaults used by `broker serve`.
func DefaultConfig() Config {
	return Config{
		TickInterval:  5 * time.Second,
		SweepInterval: 5 * time.Second,
		IdleEvict:     2 * time.Minute,
		Retention:     Retention{MaxEvents: 10_000, MaxAge: 30 * 24 * time.Hour},
		DefaultPolicy: DefaultPolicy(),
		MaxMemento:    16 << 10,
		MaxCursor:     1 << 10,
		MaxPhase:      128,

		MaxSessionsPerUser: 1000,
	}
}

// ConfigError is a setting that cannot work. Field names it as in Go,
// relative to the value validated (TickInterval, Retention.MaxAge,
// DefaultPolicy.Liveness, Rules[2].Pattern), so that a program that reads
// settings under names of its own (flags, a file) can name the one the
// user got wrong.
type ConfigError struct {
	Field string
	Msg   string // what is wrong, e.g. "must be at least 10ms, got 5ms"
}

func (e *ConfigError) Error() string { return "sessions: " + e.Field + ": " + e.Msg }

// configErrorf returns a *ConfigError for field.
func configErrorf(field, format string, a ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// within prefixes the field of a *ConfigError with parent ("Rules[2]").
func within(parent string, err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{Field: parent + "." + ce.Field, Msg: ce.Msg}
	}
	return err
}

// Validate reports the first unusable setting as a *ConfigError.
func (c Config) Validate() error {
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"TickInterval", c.TickInterval}, {"SweepInterval", c.SweepInterval}} {
		if d.v < 10*time.Millisecond {
			return configErrorf(d.field, "must be at least 10ms, got %s", d.v)
		}
	}
	if c.IdleEvict <= 0 {
		return configErrorf("IdleEvict", "must be positive, got %s", c.IdleEvict)
	}
	if c.Retention.MaxEvents < 1 {
		return configErrorf("Retention.MaxEvents", "must be at least 1, got %d", c.Retention.MaxEvents)
	}
	if c.Retention.MaxAge < 0 {
		return configErrorf("Retention.MaxAge", "must not be negative (0 keeps events of any age), got %s", c.Retention.MaxAge)
	}
	for _, l := range []struct {
		field string
		v     int
	}{{"MaxMemento", c.MaxMemento}, {"MaxCursor", c.MaxCursor}, {"MaxPhase", c.MaxPhase}, {"MaxSessionsPerUser", c.MaxSessionsPerUser}} {
		if l.v < 1 {
			return configErrorf(l.field, "must be at least 1, got %d", l.v)
		}
	}
	if err := c.DefaultPolicy.Validate(); err != nil {
		return within("DefaultPolicy", err)
	}
	for i, r := range c.Rules {
		if err := r.Validate(); err != nil {
			return within(fmt.Sprintf("Rules[%d]", i), err)
		}
	}
	return nil
}

// Registry is the set of sessions. Requests on one session are serialised;
// requests on different sessions run in parallel. It is safe for concurrent use.
type Registry struct {
	cfg   Config
	store Store
	out   Outbox
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	live    map[string]*entry        // loaded sessions by "user/name"
	loading map[string]chan struct{} // sessions being read by load, closed when done
	byConn  map[Conn]map[*entry]bool // sessions attached to each connection

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// entry is a loaded session: its record as last committed, and what the
// current instance holds in memory (connection, timers).
type entry struct {
	mu       sync.Mutex
	s        Session
	conn     Conn
	ticker   *time.Timer
	deadline *time.Timer
	touched  time.Time
	evicted  bool
	// durable covers the entry's commits made without waiting (Exec,
	// Update): every operation on the entry waits for it, outside the
	// lock, before it returns.
	durable persistence.Durable
	head    journalHead // the oldest journal event, as of the last commit
}

// New returns a registry over store and starts its sweep. Nothing is read
// from the store until a session is first touched.
func New(cfg Config, store Store, out Outbox) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, store: store, out: out, log: cfg.Logger, now: cfg.Now,
		live: map[string]*entry{}, loading: map[string]chan struct{}{}, byConn: map[Conn]map[*entry]bool{}}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go r.sweepLoop(ctx)
	return r, nil
}

// Close stops the sweep and every session timer.
func (r *Registry) Close() {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	entries := make([]*entry, 0, len(r.live))
	for _, e := range r.live {
		entries = append(entries, e)
	}
	r.mu.Unlock()
	for _, e := range entries { // lock order: entry, then registry
		e.mu.Lock()
		e.stopTimers()
		e.mu.Unlock()
	}
}

func sessionKey(user, name string) []byte { return persistence.Key("sess", user, name) }

// load returns the loaded entry of user/name, reading it from the store on
// first touch. A session never stored comes back in state new, unsaved.
func (r *Registry) load(user, name string) (*entry, error) {
	if err := wire.CheckName("user", user); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := wire.CheckName("session", name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	k := user + "/" + name
	for {
		r.mu.Lock()
		if e, ok := r.live[k]; ok {
			r.mu.Unlock()
			return e, nil
		}
		if wait, ok := r.loading[k]; ok { // another caller reads it: use theirs
			r.mu.Unlock()
			<-wait
			continue
		}
		done := make(chan struct{})
		r.loading[k] = done
		r.mu.Unlock()
		e, err := r.loadStored(user, name)
		r.mu.Lock()
		delete(r.loading, k)
		if err == nil {
			r.live[k] = e
			if e.s.State != StateNew && e.s.State != StateEnded {
				r.out.Presence(user, name, Presence{State: "offline", Since: e.s.Since.UnixMilli()})
			}
		}
		r.mu.Unlock()
		close(done)
		return e, err
	}
}

// loadStored reads user/name's record (a new one if none is stored) into
// an entry. load calls it without r.mu, for one caller per session at a
// time: the read waits for the sync round that covers what it saw, and
// that must not hold up every other session.
func (r *Registry) loadStored(user, name string) (*entry, error) {
	s, err := r.read(user, name)
	now := r.now()
	switch {
	case errors.Is(err, ErrNotFound):
		s = Session{User: user, Name: name, State: StateNew, Created: now, Since: now}
	case err != nil:
		return nil, err
	}
	return &entry{s: s, touched: now}, nil
}

// read returns the stored record of user/name, or ErrNotFound.
func (r *Registry) read(user, name string) (Session, error) {
	var s Session
	d, err := r.store.Peek(func(tx persistence.Txn) error {
		v, err := tx.Get(sessionKey(user, name))
		if errors.Is(err, persistence.ErrNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &s)
	})
	if !errors.Is(err, ErrNotFound) { // an absence is never unsynced: records are not deleted
		err = firstErr(d.Wait(), err)
	}
	if err == nil && s.State == StateActive {
		// Every attached session is in memory; a stored active record that is
		// not was left by a broker that stopped (or crashed): no connection
		// survives a restart, so the instance is detached until its device
		// comes back. The record says so at its next commit.
		s.State = StateDetached
	}
	return s, err
}

// commit writes ns and appends events to its journal in one durable
// transaction, then makes ns the entry's record. On error the entry is
// unchanged.
func (r *Registry) commit(e *entry, ns Session, events ...Event) error {
	var (
		done Session
		head journalHead
	)
	err := r.store.Update(func(tx persistence.Txn) error {
		done, head = ns, e.head // afresh on every attempt: a conflict retries this function
		return r.write(tx, &done, events, &head)
	})
	if err != nil {
		return err
	}
	e.s, e.head = done, head
	return nil
}

// write journals events and stores s in tx with the next version; head
// is the journal's oldest event as appendEvent keeps it.
func (r *Registry) write(tx persistence.Txn, s *Session, events []Event, head *journalHead) error {
	if s.Version == 0 {
		if err := r.admit(tx, s.User, s.Name); err != nil {
			return err
		}
	}
	s.Version++
	for _, ev := range events {
		if ev.Time.IsZero() {
			ev.Time = r.now()
		}
		if err := appendEvent(tx, s, ev, r.cfg.Retention, head); err != nil {
			return err
		}
	}
	v, err := encodeSession(s)
	if err != nil {
		return err
	}
	return tx.Set(sessionKey(s.User, s.Name), v)
}

// Change is what an Exec function did: events to journal, and whether
// anything changed at all (nothing is written when it did not).
type Change struct {
	Changed bool
	Events  []Event
}

// Exec runs fn inside the current instance of user/name, for parts that
// commit their own effects with the session (exactly-once calls, acks):
// the nonce is checked first (ErrStaleNonce, ErrExpired; fn does not run),
// the instance re-attaches to conn, then fn runs in one store transaction
// with a copy of the session record it may change. If fn fails, nothing
// is written. Requests of one session are serialised.
func (r *Registry) Exec(user, name string, conn Conn, nonce string, fn func(tx persistence.Txn, s *Session) (Change, error)) error {
	return r.ExecLocked(nil, user, name, conn, nonce, func(tx persistence.Txn, s *Session, _ *Joint) (Change, error) {
		return fn(tx, s)
	})
}

// ExecLocked is Exec holding mu (when not nil) from before the session is
// locked until fn has committed, released before waiting for durability:
// the application serialises work across sessions (one user's calls)
// without serialising their fsyncs. fn may change other sessions of the
// user through the Joint; only functions run under one mu per user may,
// so that two of them never wait for each other's sessions.
func (r *Registry) ExecLocked(mu sync.Locker, user, name string, conn Conn, nonce string, fn func(tx persistence.Txn, s *Session, j *Joint) (Change, error)) error {
	if mu != nil {
		mu.Lock()
	}
	d, err := r.withEntry(user, name, func(e *entry) error {
		now := r.now()
		if err := r.current(e, nonce, now); err != nil {
			return err
		}
		if err := r.reattach(e, conn, now); err != nil {
			return err
		}
		e.s.LastSeen = now
		j := &Joint{r: r, user: user, name: name}
		return r.commitJoint(e, false, j, fn)
	})
	if mu != nil {
		mu.Unlock()
	}
	return firstErr(d.Wait(), err)
}

// commitFn runs fn on a copy of e's record in one transaction and, if it
// changed something (or the session is new and must be stored), writes the
// record and its events. It does not wait for durability: with does,
// after unlocking e.
func (r *Registry) commitFn(e *entry, store bool, fn func(tx persistence.Txn, s *Session) (Change, error)) error {
	return r.commitJoint(e, store, nil, func(tx persistence.Txn, s *Session, _ *Joint) (Change, error) { return fn(tx, s) })
}

// commitJoint is commitFn for a function that may join other sessions
// through j (nil: it joins none); those are written in the same
// transaction and unlocked after it.
func (r *Registry) commitJoint(e *entry, store bool, j *Joint, fn func(tx persistence.Txn, s *Session, j *Joint) (Change, error)) error {
	var (
		ns   Session
		ch   Change
		head journalHead
	)
	d, err := r.store.Commit(func(tx persistence.Txn) error {
		ns, head = e.s, e.head // afresh on every attempt: a conflict retries this function
		if j != nil {
			j.begin(tx, &ns)
		}
		var err error
		if ch, err = fn(tx, &ns, j); err != nil {
			return err
		}
		if j != nil {
			if j.err != nil {
				return j.err
			}
			ch.Changed = ch.Changed || j.ch.Changed
			ch.Events = append(ch.Events, j.ch.Events...)
			if err := j.write(tx); err != nil {
				return err
			}
		}
		if !(ch.Changed || store) {
			return nil
		}
		return r.write(tx, &ns, ch.Events, &head)
	})
	if j != nil {
		j.end(d, err)
	}
	e.durable = e.durable.Join(d)
	if err == nil && (ch.Changed || store) {
		e.s, e.head = ns, head
	}
	return err
}

// Update runs fn on user/name outside any instance — the application's
// and notifiers' side: no nonce is checked, and a session that does not
// exist yet is created in state new (subject to MaxSessionsPerUser) and
// stored with fn's change. Like Exec, fn runs in one store transaction
// with a copy of the record and nothing is written if it fails.
func (r *Registry) Update(user, name string, fn func(tx persistence.Txn, s *Session) (Change, error)) error {
	d, err := r.Commit(user, name, fn)
	return firstErr(d.Wait(), err)
}

// Commit is Update without the wait: it returns once the change is
// committed, with what to wait for before anything about it (or its
// error) leaves the process. A notifier that must keep its order commits
// in order and waits outside, sharing sync rounds.
func (r *Registry) Commit(user, name string, fn func(tx persistence.Txn, s *Session) (Change, error)) (persistence.Durable, error) {
	return r.withEntry(user, name, func(e *entry) error {
		return r.commitFn(e, unstored(e), fn)
	})
}

// unstored reports whether e's session has never been committed, so its
// first commit must store it (and is subject to admission, see admit).
func unstored(e *entry) bool {
	return e.s.Version == 0 && e.s.Journal.Next == 0 && e.s.State == StateNew
}

// admit refuses to store a new session for user when the user already
// holds MaxSessionsPerUser sessions. It reads inside the transaction that
// stores the session, so the check costs no read of its own and no wait
// for a sync round: the commit's own round covers what it read.
func (r *Registry) admit(tx persistence.Txn, user, name string) error {
	if _, err := tx.Get(sessionKey(user, name)); !errors.Is(err, persistence.ErrNotFound) {
		if err == nil {
			// Loaded as missing, yet stored: never overwrite a record
			// this registry has not read.
			return fmt.Errorf("sessions: %s/%s is stored but was not loaded", user, name)
		}
		return err
	}
	held := 0
	err := tx.Scan(persistence.Prefix("sess", user), nil, func(_, _ []byte) (bool, error) {
		held++
		return held < r.cfg.MaxSessionsPerUser, nil
	})
	if err == nil && held >= r.cfg.MaxSessionsPerUser {
		err = fmt.Errorf("%w: %s holds %d, the limit", ErrTooManySessions, user, held)
	}
	return err
}

// with runs fn with the entry of user/name locked, then, unlocked, waits
// until every commit fn saw or made is durable: nothing fn decided leaves
// the registry before that.
func (r *Registry) with(user, name string, fn func(e *entry) error) error {
	d, err := r.withEntry(user, name, fn)
	return firstErr(d.Wait(), err)
}

// withEntry runs fn with the entry of user/name locked and returns what
// to wait for before anything fn decided may leave the registry.
func (r *Registry) withEntry(user, name string, fn func(e *entry) error) (persistence.Durable, error) {
	e, err := r.lock(user, name)
	if err != nil {
		return persistence.Durable{}, err
	}
	err = fn(e)
	d := e.durable
	e.mu.Unlock()
	return d, err
}

// lock loads the entry of user/name and locks it.
func (r *Registry) lock(user, name string) (*entry, error) {
	for {
		e, err := r.load(user, name)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		if e.evicted { // lost a race with the sweep: load again
			e.mu.Unlock()
			continue
		}
		e.touched = r.now()
		return e, nil
	}
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func newNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func short(nonce string) string {
	if len(nonce) > 8 {
		return nonce[:8]
	}
	return nonce
}
