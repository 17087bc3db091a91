package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/wire"
)

// Store is the durable store the token registry needs.
type Store interface {
	Update(fn func(persistence.Txn) error) error
	View(fn func(persistence.Txn) error) error
	// Peek is View without waiting for durability (see persistence.Store.Peek).
	Peek(fn func(persistence.Txn) error) (persistence.Durable, error)
}

// Key layout: auth/token/<id> -> JSON Token.
var tokenKeys = persistence.Prefix("auth", "token")

func tokenKey(id string) []byte { return append(append([]byte{}, tokenKeys...), id...) }

// NewToken is a request to issue a token.
type NewToken struct {
	User       string    `json:"user"`
	Name       string    `json:"name,omitempty"`
	Email      string    `json:"email,omitempty"`
	Role       Role      `json:"role"`
	ValidUntil time.Time `json:"valid_until"`
}

// Validate checks the request before anything is stored.
func (n NewToken) Validate(now time.Time) error {
	if err := wire.CheckName("user", n.User); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if _, err := ParseRole(string(n.Role)); err != nil {
		return err
	}
	if !n.ValidUntil.After(now) {
		return fmt.Errorf("auth: valid-until %s is not in the future", n.ValidUntil.Format(time.RFC3339))
	}
	if len(n.Name) > 256 || len(n.Email) > 256 || strings.ContainsAny(n.Name+n.Email, "\n\r") {
		return errors.New("auth: name and email must be single lines of at most 256 bytes")
	}
	return nil
}

// Tokens is the registry of issued tokens. Checks are served from memory
// once a token has been seen; Revoke updates memory and disk together, so a
// revoked token fails its next check. It is safe for concurrent use.
type Tokens struct {
	store Store
	now   func() time.Time

	mu    sync.RWMutex
	cache map[string]Token // by id
}

// NewTokens returns a registry over store.
func NewTokens(store Store) *Tokens {
	return &Tokens{store: store, now: time.Now, cache: map[string]Token{}}
}

// Add issues a token and returns its secret string, which is never stored.
func (r *Tokens) Add(n NewToken) (secret string, tok Token, err error) {
	now := r.now()
	if err := n.Validate(now); err != nil {
		return "", Token{}, err
	}
	secret, id, err := newSecret()
	if err != nil {
		return "", Token{}, err
	}
	_, hash, err := ParseToken(secret)
	if err != nil {
		return "", Token{}, fmt.Errorf("auth: fresh token does not parse: %w", err)
	}
	tok = Token{ID: id, User: n.User, Name: n.Name, Email: n.Email, Role: n.Role,
		Created: now.UTC().Truncate(time.Second), ValidUntil: n.ValidUntil.UTC(), Hash: hash}
	if err := r.put(tok); err != nil {
		return "", Token{}, err
	}
	return secret, tok.Public(), nil
}

// List returns the tokens of user (all users if empty), without hashes, by user then creation.
func (r *Tokens) List(user string) ([]Token, error) {
	var out []Token
	err := r.store.View(func(tx persistence.Txn) error {
		return tx.Scan(tokenKeys, nil, func(_, v []byte) (bool, error) {
			var t Token
			if err := json.Unmarshal(v, &t); err != nil {
				return false, fmt.Errorf("auth: stored token: %w", err)
			}
			if user == "" || t.User == user {
				out = append(out, t.Public())
			}
			return true, nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].User != out[j].User {
			return out[i].User < out[j].User
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out, err
}

// Revoke marks the token with id revoked. Revoking twice is harmless.
func (r *Tokens) Revoke(id string) (Token, error) {
	t, err := r.load(id)
	if err != nil {
		return Token{}, err
	}
	if t.Revoked.IsZero() {
		t.Revoked = r.now().UTC().Truncate(time.Second)
		if err := r.put(t); err != nil {
			return Token{}, err
		}
	}
	return t.Public(), nil
}

// Check authenticates user with the token string password. It returns the
// token, or an error wrapping one of ErrMalformed, ErrUnknown, ErrMismatch,
// ErrExpired or ErrRevoked.
func (r *Tokens) Check(user, password string) (Token, error) {
	id, hash, err := ParseToken(password)
	if err != nil {
		return Token{}, err
	}
	t, err := r.load(id)
	if err != nil {
		return Token{}, err
	}
	if !t.matches(user, hash) {
		return Token{}, ErrMismatch
	}
	if err := t.Valid(r.now()); err != nil {
		return Token{}, err
	}
	return t.Public(), nil
}

// Recheck tells whether the token with id, already authenticated, may still
// be used now. It reads memory only, so it is cheap enough for every packet.
func (r *Tokens) Recheck(id string) error {
	r.mu.RLock()
	t, ok := r.cache[id]
	r.mu.RUnlock()
	if !ok {
		return ErrUnknown
	}
	return t.Valid(r.now())
}

func (r *Tokens) load(id string) (Token, error) {
	r.mu.RLock()
	t, ok := r.cache[id]
	r.mu.RUnlock()
	if ok {
		return t, nil
	}
	// A token becomes usable once Add returns its secret, after its record
	// is durable, and a revocation only refuses: neither needs the read to
	// wait for a sync round (which every connect of a storm would pay).
	_, err := r.store.Peek(func(tx persistence.Txn) error {
		v, err := tx.Get(tokenKey(id))
		if errors.Is(err, persistence.ErrNotFound) {
			return ErrUnknown
		}
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &t)
	})
	if err != nil {
		return Token{}, err
	}
	r.mu.Lock()
	if newer, ok := r.cache[id]; ok {
		t = newer // a Revoke (or another load) since the read: keep what it cached
	} else {
		r.cache[id] = t
	}
	r.mu.Unlock()
	return t, nil
}

func (r *Tokens) put(t Token) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if err := r.store.Update(func(tx persistence.Txn) error { return tx.Set(tokenKey(t.ID), v) }); err != nil {
		return fmt.Errorf("auth: store token: %w", err)
	}
	r.mu.Lock()
	r.cache[t.ID] = t
	r.mu.Unlock()
	return nil
}
