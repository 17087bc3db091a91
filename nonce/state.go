package nonce

import (
	"encoding/json"
	"errors"

	"github.com/f47fa0da/tether/persistence"
)

// State is a user's application state as a key-value view inside one
// call's transaction (keys app/<user>/<key>). Writes become visible only
// if the call commits.
type State struct {
	tx   persistence.Txn
	user string
}

func (s State) key(k string) []byte { return append(persistence.Prefix("app", s.user), k...) }

// Get returns the value at k, and false if there is none.
func (s State) Get(k string) ([]byte, bool, error) {
	v, err := s.tx.Get(s.key(k))
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}

// Set writes v at k.
func (s State) Set(k string, v []byte) error { return s.tx.Set(s.key(k), v) }

// Delete removes k.
func (s State) Delete(k string) error { return s.tx.Delete(s.key(k)) }

// GetJSON decodes the value at k into v and reports whether there was one.
func (s State) GetJSON(k string, v any) (bool, error) {
	b, ok, err := s.Get(k)
	if err != nil || !ok {
		return false, err
	}
	return true, json.Unmarshal(b, v)
}

// SetJSON stores v at k as JSON.
func (s State) SetJSON(k string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.Set(k, b)
}
