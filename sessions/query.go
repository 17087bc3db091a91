package sessions

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/wire"
)

// Get returns the session user/name as memory knows it (fresher than the
// store: liveness is kept in memory), or as stored, without loading it.
func (r *Registry) Get(user, name string) (Session, error) {
	if s, ok := r.inMemory(user, name); ok {
		return s, nil
	}
	return r.read(user, name)
}

// inMemory returns the loaded record of user/name, if it is loaded.
func (r *Registry) inMemory(user, name string) (Session, bool) {
	r.mu.Lock()
	e, ok := r.live[user+"/"+name]
	r.mu.Unlock()
	if !ok {
		return Session{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s, true
}

// List returns the stored sessions of user (every user if empty), in
// name order, with in-memory state where the session is loaded.
func (r *Registry) List(user string) ([]Session, error) {
	prefix := persistence.Prefix("sess")
	if user != "" {
		if err := wire.CheckName("user", user); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		prefix = persistence.Prefix("sess", user)
	}
	var out []Session
	err := r.store.View(func(tx persistence.Txn) error {
		return tx.Scan(prefix, nil, func(_, v []byte) (bool, error) {
			var s Session
			if err := json.Unmarshal(v, &s); err != nil {
				return false, fmt.Errorf("sessions: stored session: %w", err)
			}
			out = append(out, s)
			return true, nil
		})
	})
	for i := range out {
		if s, ok := r.inMemory(out[i].User, out[i].Name); ok {
			out[i] = s
		}
	}
	return out, err
}

// Log returns up to limit journal events of user/name after seq after
// (limit <= 0: all). It fails with ErrNotFound for a session never stored.
func (r *Registry) Log(user, name string, after uint64, limit int) ([]Event, error) {
	if _, err := r.Get(user, name); err != nil {
		return nil, err
	}
	var out []Event
	err := r.store.View(func(tx persistence.Txn) error {
		var err error
		out, err = readJournal(tx, user, name, after, limit)
		return err
	})
	return out, err
}

// Names returns the names of user's stored sessions, in order.
func (r *Registry) Names(user string) ([]string, error) {
	if err := wire.CheckName("user", user); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	prefix := persistence.Prefix("sess", user)
	var names []string
	err := r.store.View(func(tx persistence.Txn) error {
		return tx.Scan(prefix, nil, func(k, _ []byte) (bool, error) {
			names = append(names, string(k[len(prefix):]))
			return true, nil
		})
	})
	return names, err
}

// Touch loads user/name into memory if it is stored and not loaded yet,
// which re-publishes its retained presence. It reports whether the session exists.
func (r *Registry) Touch(user, name string) bool {
	if _, ok := r.inMemory(user, name); ok {
		return true
	}
	if _, err := r.read(user, name); err != nil {
		return false
	}
	_, err := r.load(user, name)
	return err == nil
}

// AttachedConn returns the live connection user/name's current instance is
// attached to now, or 0 (so messages published to it reach a device).
func (r *Registry) AttachedConn(user, name string) Conn {
	r.mu.Lock()
	e, ok := r.live[user+"/"+name]
	r.mu.Unlock()
	if !ok {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.s.State != StateActive {
		return 0
	}
	return e.conn
}

// LoadedKeys returns the user and name of every session in memory now.
func (r *Registry) LoadedKeys() [][2]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][2]string, 0, len(r.live))
	for k := range r.live {
		user, name, _ := strings.Cut(k, "/") // names never contain '/'
		out = append(out, [2]string{user, name})
	}
	return out
}
