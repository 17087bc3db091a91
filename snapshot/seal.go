// Package snapshot seals session state into opaque blobs that a client
// keeps and presents to another broker, which opens them to restore the
// session there (client-side replication).
//
// A blob is encrypted and authenticated with XChaCha20-Poly1305. It binds
// the user and session name, carries a version that grows with every
// change of the session, an issue time, an expiry and the id of the key
// that sealed it. Tampering, another user's or session's blob, an expired
// blob and an unknown key are all refused, each with its own error.
package snapshot

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Errors from Open; all mean "do not trust this blob".
var (
	ErrMalformed  = errors.New("snapshot: malformed blob")
	ErrUnknownKey = errors.New("snapshot: unknown key id")
	ErrTampered   = errors.New("snapshot: blob does not authenticate")
	ErrWrongOwner = errors.New("snapshot: blob is for another user or session")
	ErrExpired    = errors.New("snapshot: blob expired")
	ErrTooLarge   = errors.New("snapshot: blob too large")
)

// MaxBlob bounds an encoded blob, in bytes. It has room for the sessions
// registry's default limits (a 16 KiB memento, a 128-byte phase); Seal
// fails for a state that does not fit, so limits raised past it must be
// checked with CheckLimits.
const MaxBlob = 24 << 10

// Binary form: format (1 byte), key id length (1 byte), key id, AEAD
// nonce (24 bytes), ciphertext and tag. The text form is prefix +
// base64url(binary form).
const (
	// format 2 authenticates the header alone; the owner is checked from
	// the authenticated plaintext, so a blob for another session is told
	// apart from a tampered one.
	format = 2
	// format1 (opened until its blobs have expired, never sealed) also put
	// the owner in the AAD: another session's blob did not authenticate,
	// so it could not be told from a tampered one.
	format1  = 1
	maxKeyID = 32
	prefix   = "ts1."
)

// State is what a blob carries: the durable state of one session.
type State struct {
	Nonce       string          `json:"nonce,omitempty"`
	Memento     json.RawMessage `json:"memento,omitempty"`
	Phase       string          `json:"phase,omitempty"`
	FirstBegin  time.Time       `json:"first_begin,omitzero"`
	Deadline    time.Time       `json:"deadline,omitzero"`
	LastCallSeq uint64          `json:"last_call_seq,omitempty"`
	Acked       uint64          `json:"acked,omitempty"`       // last acknowledged notification seq
	NextNotify  uint64          `json:"next_notify,omitempty"` // next notification seq to assign
	Policy      json.RawMessage `json:"policy,omitempty"`      // the application-set policy, if any
}

// Snapshot is an opened blob.
type Snapshot struct {
	User    string    `json:"user"`
	Session string    `json:"session"`
	Version uint64    `json:"version"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
	KeyID   string    `json:"-"`
	State   State     `json:"state"`
}

// Key is one sealing key.
type Key struct {
	ID     string
	Secret [chacha20poly1305.KeySize]byte
}

// Sealer seals with its first key and opens with any of its keys, so keys
// can rotate: add the new key first, keep the old ones until their blobs
// have expired, then remove them.
type Sealer struct {
	keys []Key
	ttl  time.Duration
	now  func() time.Time
}

// NewSealer returns a Sealer whose blobs expire ttl after issue.
func NewSealer(keys []Key, ttl time.Duration) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("snapshot: no keys")
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if k.ID == "" || len(k.ID) > maxKeyID || seen[k.ID] {
			return nil, fmt.Errorf("snapshot: key id %q must be 1-%d bytes and unique", k.ID, maxKeyID)
		}
		seen[k.ID] = true
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("snapshot: ttl %s must be positive", ttl)
	}
	return &Sealer{keys: slices.Clone(keys), ttl: ttl, now: time.Now}, nil
}

// Seal encrypts a snapshot of user/session at version with the current
// key and returns its text form.
func (s *Sealer) Seal(user, session string, version uint64, st State) (string, error) {
	now := s.now().UTC()
	snap := Snapshot{User: user, Session: session, Version: version, Issued: now, Expires: now.Add(s.ttl), State: st}
	// Without HTML escaping: the memento comes back byte for byte, and a
	// 16 KiB memento of markup still fits in MaxBlob.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(snap); err != nil {
		return "", err
	}
	plain := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	k := s.keys[0]
	aead, err := chacha20poly1305.NewX(k.Secret[:])
	if err != nil {
		return "", err
	}
	header := append([]byte{format, byte(len(k.ID))}, k.ID...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	blob := append(append(header, nonce...), aead.Seal(nil, nonce, plain, header)...)
	text := prefix + base64.RawURLEncoding.EncodeToString(blob)
	if len(text) > MaxBlob {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(text), MaxBlob)
	}
	return text, nil
}

// aadFormat1 is a format 1 blob's AAD: the header and the owner.
func aadFormat1(header []byte, user, session string) []byte {
	return append(append([]byte{}, header...), "\x00"+user+"/"+session...)
}

// Open checks and decrypts a blob presented for user/session.
func (s *Sealer) Open(text, user, session string) (Snapshot, error) {
	if len(text) > MaxBlob {
		return Snapshot{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(text), MaxBlob)
	}
	// The decoder skips CR and LF even in strict mode: refuse them, so a
	// blob has exactly one text form.
	if len(text) < len(prefix) || text[:len(prefix)] != prefix || strings.ContainsAny(text, "\r\n") {
		return Snapshot{}, ErrMalformed
	}
	blob, err := base64.RawURLEncoding.Strict().DecodeString(text[len(prefix):])
	if err != nil || len(blob) < 2 || blob[0] != format && blob[0] != format1 {
		return Snapshot{}, ErrMalformed
	}
	idLen := int(blob[1])
	if idLen == 0 || idLen > maxKeyID || len(blob) < 2+idLen+chacha20poly1305.NonceSizeX+chacha20poly1305.Overhead {
		return Snapshot{}, ErrMalformed
	}
	header, rest := blob[:2+idLen], blob[2+idLen:]
	id := string(header[2:])
	var key *Key
	for i := range s.keys {
		if s.keys[i].ID == id {
			key = &s.keys[i]
		}
	}
	if key == nil {
		return Snapshot{}, fmt.Errorf("%w %q", ErrUnknownKey, id)
	}
	aead, err := chacha20poly1305.NewX(key.Secret[:])
	if err != nil {
		return Snapshot{}, err
	}
	nonce, sealed := rest[:aead.NonceSize()], rest[aead.NonceSize():]
	ad := header
	if header[0] == format1 {
		ad = aadFormat1(header, user, session)
	}
	plain, err := aead.Open(nil, nonce, sealed, ad)
	if err != nil {
		if header[0] == format1 { // the owner was in the AAD: the two cannot be told apart
			return Snapshot{}, fmt.Errorf("%w, or it is for another user or session (%w)", ErrTampered, ErrWrongOwner)
		}
		return Snapshot{}, ErrTampered
	}
	var snap Snapshot
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&snap); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// The owner is part of the authenticated plaintext, so it is what the
	// sealing broker wrote: comparing it after authentication binds the
	// blob to its session as firmly as the AAD did, and lets a blob moved
	// to another session be refused as such. The error does not name the
	// real owner (the blob hides it).
	if snap.User != user || snap.Session != session {
		return Snapshot{}, ErrWrongOwner
	}
	// The sealing broker's expiry, or this broker's ttl from the issue if
	// shorter: a broker configured to keep blobs for less time must not
	// take one sealed elsewhere for longer.
	expires := snap.Expires
	if local := snap.Issued.Add(s.ttl); local.Before(expires) {
		expires = local
	}
	if !s.now().Before(expires) {
		return Snapshot{}, fmt.Errorf("%w at %s", ErrExpired, expires.Format(time.RFC3339))
	}
	snap.KeyID = id
	return snap, nil
}
