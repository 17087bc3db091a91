// Package auth issues and checks auth tokens and decides, packet by packet,
// which topics a user may use.
//
// A token is shown once when it is issued; the store keeps only its SHA-256
// hash. Tokens carry 256 random bits, so a fast hash is safe here.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role says what a user may do beyond its own sessions.
type Role string

const (
	// RoleDevice may use only its own sessions/U/... topics.
	RoleDevice Role = "device"
	// RoleService may also use the application topics (tether/...).
	RoleService Role = "service"
)

// ParseRole checks s is a known role.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleDevice, RoleService:
		return r, nil
	}
	return "", fmt.Errorf("auth: unknown role %q: want device or service", s)
}

// Errors from checking a token. All of them mean "not authenticated"; they
// are distinct so that failures can be counted by reason.
var (
	ErrMalformed = errors.New("auth: malformed token")
	ErrUnknown   = errors.New("auth: unknown token")
	ErrMismatch  = errors.New("auth: token does not match")
	ErrExpired   = errors.New("auth: token expired")
	ErrRevoked   = errors.New("auth: token revoked")
)

// Token is what the store knows of an issued token. The secret is never kept.
type Token struct {
	ID         string    `json:"id"`
	User       string    `json:"user"`
	Name       string    `json:"name,omitempty"`
	Email      string    `json:"email,omitempty"`
	Role       Role      `json:"role"`
	Created    time.Time `json:"created"`
	ValidUntil time.Time `json:"valid_until"`
	Revoked    time.Time `json:"revoked,omitzero"`
	Hash       []byte    `json:"hash,omitempty"`
}

// Valid reports why the token cannot be used at now, or nil.
func (t Token) Valid(now time.Time) error {
	if !t.Revoked.IsZero() {
		return ErrRevoked
	}
	if !now.Before(t.ValidUntil) {
		return ErrExpired
	}
	return nil
}

// Public returns t without its hash, for listing.
func (t Token) Public() Token {
	t.Hash = nil
	return t
}

const (
	tokenPrefix = "tt1"
	idBytes     = 8
	secretBytes = 32
)

var b64 = base64.RawURLEncoding.Strict()

// secretLen is the encoded length of a secret.
var secretLen = b64.EncodedLen(secretBytes)

// newSecret returns a fresh token string and its id.
func newSecret() (token, id string, err error) {
	var raw [idBytes + secretBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", fmt.Errorf("auth: random: %w", err)
	}
	id = hex.EncodeToString(raw[:idBytes])
	return tokenPrefix + "_" + id + "_" + b64.EncodeToString(raw[idBytes:]), id, nil
}

// ParseToken splits a token string "tt1_<id>_<secret>" into its public id
// and the hash of its secret. It rejects anything else with ErrMalformed.
func ParseToken(s string) (id string, hash []byte, err error) {
	prefix, rest, ok := strings.Cut(s, "_")
	if !ok || prefix != tokenPrefix || len(rest) != 2*idBytes+1+secretLen || rest[2*idBytes] != '_' {
		return "", nil, ErrMalformed
	}
	id, secret := rest[:2*idBytes], rest[2*idBytes+1:]
	if _, err := hex.DecodeString(id); err != nil || strings.ToLower(id) != id {
		return "", nil, ErrMalformed
	}
	raw, err := b64.DecodeString(secret)
	if err != nil || len(raw) != secretBytes {
		return "", nil, ErrMalformed
	}
	sum := sha256.Sum256(raw)
	return id, sum[:], nil
}

// matches compares a presented secret's hash with the stored one in constant time.
func (t Token) matches(user string, hash []byte) bool {
	userOK := subtle.ConstantTimeCompare([]byte(t.User), []byte(user))
	hashOK := subtle.ConstantTimeCompare(t.Hash, hash)
	return userOK&hashOK == 1
}
