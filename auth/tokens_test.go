package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
)

// fakeClock is a settable time source for Tokens.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)

// openTestStore opens a durable store in t.TempDir() that is closed when the test ends.
func openTestStore(t testing.TB) *persistence.Store {
	t.Helper()
	cfg := persistence.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := persistence.Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// newTestTokens is a registry over a fresh store whose clock stands at epoch.
func newTestTokens(t testing.TB) (*Tokens, *fakeClock) {
	t.Helper()
	return newTokensWithClock(openTestStore(t))
}

func newTokensWithClock(s Store) (*Tokens, *fakeClock) {
	clock := &fakeClock{t: epoch}
	r := NewTokens(s)
	r.now = clock.Now
	return r, clock
}

func addToken(t testing.TB, r *Tokens, user string, role Role, validFor time.Duration) (string, Token) {
	t.Helper()
	secret, tok, err := r.Add(NewToken{User: user, Role: role, ValidUntil: r.now().Add(validFor)})
	require.NoError(t, err)
	return secret, tok
}

func TestAddValidates(t *testing.T) {
	r, _ := newTestTokens(t)
	ok := NewToken{User: "alice", Name: "Alice's phone", Email: "alice@example.org", Role: RoleDevice, ValidUntil: epoch.Add(time.Hour)}
	tests := []struct {
		name   string
		modify func(*NewToken)
		want   string
	}{
		{"empty user", func(n *NewToken) { n.User = "" }, "invalid user name"},
		{"user with slash", func(n *NewToken) { n.User = "al/ice" }, "invalid user name"},
		{"user with wildcard", func(n *NewToken) { n.User = "+" }, "invalid user name"},
		{"user with space", func(n *NewToken) { n.User = "al ice" }, "invalid user name"},
		{"user too long", func(n *NewToken) { n.User = strings.Repeat("a", 65) }, "invalid user name"},
		{"empty role", func(n *NewToken) { n.Role = "" }, "unknown role"},
		{"unknown role", func(n *NewToken) { n.Role = "admin" }, "unknown role"},
		{"role in capitals", func(n *NewToken) { n.Role = "Device" }, "unknown role"},
		{"valid-until in the past", func(n *NewToken) { n.ValidUntil = epoch.Add(-time.Second) }, "not in the future"},
		{"valid-until now", func(n *NewToken) { n.ValidUntil = epoch }, "not in the future"},
		{"valid-until zero", func(n *NewToken) { n.ValidUntil = time.Time{} }, "not in the future"},
		{"multi-line name", func(n *NewToken) { n.Name = "Alice\nrole: service" }, "single lines"},
		{"name with CR", func(n *NewToken) { n.Name = "Alice\r" }, "single lines"},
		{"multi-line email", func(n *NewToken) { n.Email = "a@example.org\nb@example.org" }, "single lines"},
		{"name too long", func(n *NewToken) { n.Name = strings.Repeat("n", 257) }, "at most 256 bytes"},
		{"email too long", func(n *NewToken) { n.Email = strings.Repeat("e", 257) }, "at most 256 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := ok
			tc.modify(&n)
			secret, tok, err := r.Add(n)
			require.Error(t, err)
			require.ErrorContains(t, err, "auth: ")
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, secret)
			require.Zero(t, tok)
		})
	}
	list, err := r.List("")
	require.NoError(t, err)
	require.Empty(t, list, "a rejected request stores nothing")

	t.Run("limits are inclusive", func(t *testing.T) {
		n := ok
		n.User = strings.Repeat("u", 64)
		n.Name = strings.Repeat("n", 256)
		n.Email = strings.Repeat("e", 256)
		n.ValidUntil = epoch.Add(time.Nanosecond)
		_, _, err := r.Add(n)
		require.NoError(t, err)
	})
}

func TestAddReturnsPublicToken(t *testing.T) {
	r, _ := newTestTokens(t)
	until := time.Date(2031, 5, 6, 7, 8, 9, 0, time.FixedZone("CEST", 2*3600))
	secret, tok, err := r.Add(NewToken{User: "svc", Name: "billing", Email: "ops@example.org", Role: RoleService, ValidUntil: until})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(secret, "tt1_"+tok.ID+"_"))
	require.Len(t, tok.ID, 16)
	require.Equal(t, "svc", tok.User)
	require.Equal(t, "billing", tok.Name)
	require.Equal(t, "ops@example.org", tok.Email)
	require.Equal(t, RoleService, tok.Role)
	require.Equal(t, epoch.Truncate(time.Second), tok.Created)
	require.True(t, until.Equal(tok.ValidUntil))
	require.Equal(t, time.UTC, tok.ValidUntil.Location())
	require.True(t, tok.Revoked.IsZero())
	require.Nil(t, tok.Hash, "Add must not hand out the hash")
}

func TestSecretIsNeverStored(t *testing.T) {
	s := openTestStore(t)
	r, _ := newTokensWithClock(s)
	secret, tok := addToken(t, r, "alice", RoleDevice, time.Hour)
	secretPart := secret[len("tt1_")+17:]
	found := 0
	require.NoError(t, s.View(func(tx persistence.Txn) error {
		return tx.Scan(nil, nil, func(k, v []byte) (bool, error) {
			found++
			require.NotContains(t, string(v), secretPart)
			require.NotContains(t, string(k), secretPart)
			var stored Token
			require.NoError(t, json.Unmarshal(v, &stored))
			require.Equal(t, tok.ID, stored.ID)
			require.Len(t, stored.Hash, 32, "the store keeps the hash")
			return true, nil
		})
	}))
	require.Equal(t, 1, found)
}

func TestCheck(t *testing.T) {
	r, _ := newTestTokens(t)
	alice, aliceTok := addToken(t, r, "alice", RoleDevice, time.Hour)
	bob, _ := addToken(t, r, "bob", RoleService, time.Hour)

	secretAt := len("tt1_") + 17
	// change one character in the middle of the secret (data bits only)
	mid := secretAt + 20
	oneOff := alice[:mid] + string(otherB64(alice[mid])) + alice[mid+1:]
	// change one character of the id, keeping it well-formed and lowercase
	unknownID := alice[:4] + string(otherHex(alice[4])) + alice[5:]

	tests := []struct {
		name, user, password string
		want                 error
	}{
		{"right user and token", "alice", alice, nil},
		{"service token", "bob", bob, nil},
		{"wrong user", "bob", alice, ErrMismatch},
		{"user differs in case", "Alice", alice, ErrMismatch},
		{"empty user", "", alice, ErrMismatch},
		{"secret differs in one char", "alice", oneOff, ErrMismatch},
		{"well-formed unknown id", "alice", unknownID, ErrUnknown},
		{"unknown id, all zeros", "alice", "tt1_0000000000000000_" + strings.Repeat("A", 43), ErrUnknown},
		{"malformed", "alice", "letmein", ErrMalformed},
		{"empty password", "alice", "", ErrMalformed},
		{"token with a newline", "alice", alice + "\n", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := r.Check(tc.user, tc.password)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				require.Zero(t, tok)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.user, tok.User)
			require.Nil(t, tok.Hash)
		})
	}
	tok, err := r.Check("alice", alice)
	require.NoError(t, err)
	require.Equal(t, aliceTok, tok, "Check returns what Add returned")
}

// otherB64 returns a base64url letter other than c. Used away from the last
// character, where all six bits of a letter are data, it changes the secret.
func otherB64(c byte) byte {
	if c == 'Q' {
		return 'A'
	}
	return 'Q'
}

func otherHex(c byte) byte {
	if c == '0' {
		return '1'
	}
	return '0'
}

func TestCheckLastCharacterSpareBits(t *testing.T) {
	r, _ := newTestTokens(t)
	secret, _ := addToken(t, r, "alice", RoleDevice, time.Hour)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := len(secret) - 1
	v := strings.IndexByte(alphabet, secret[last])
	variant := secret[:last] + string(alphabet[v^1]) // differs only in a spare bit
	_, err := r.Check("alice", variant)
	require.ErrorIs(t, err, ErrMalformed, "a token string that differs from the issued one must not authenticate")
}

func TestExpiry(t *testing.T) {
	r, clock := newTestTokens(t)
	secret, tok := addToken(t, r, "alice", RoleDevice, time.Hour)

	clock.Set(tok.ValidUntil.Add(-time.Nanosecond))
	_, err := r.Check("alice", secret)
	require.NoError(t, err, "still valid just before valid-until")
	require.NoError(t, r.Recheck(tok.ID))

	clock.Set(tok.ValidUntil)
	_, err = r.Check("alice", secret)
	require.ErrorIs(t, err, ErrExpired, "expired at valid-until")
	require.ErrorIs(t, r.Recheck(tok.ID), ErrExpired)

	// A mismatch is reported as such even for an expired token, so that the
	// error tells nothing about a token to someone who does not hold it.
	_, err = r.Check("bob", secret)
	require.ErrorIs(t, err, ErrMismatch)
}

func TestRevoke(t *testing.T) {
	r, clock := newTestTokens(t)
	secret, tok := addToken(t, r, "alice", RoleDevice, time.Hour)
	other, otherTok := addToken(t, r, "alice", RoleDevice, time.Hour)
	_, err := r.Check("alice", secret)
	require.NoError(t, err)
	require.NoError(t, r.Recheck(tok.ID))

	clock.Set(epoch.Add(time.Minute))
	revoked, err := r.Revoke(tok.ID)
	require.NoError(t, err)
	require.Equal(t, epoch.Add(time.Minute).Truncate(time.Second), revoked.Revoked)
	require.Nil(t, revoked.Hash)

	require.ErrorIs(t, r.Recheck(tok.ID), ErrRevoked, "Recheck sees the revoke at once")
	_, err = r.Check("alice", secret)
	require.ErrorIs(t, err, ErrRevoked)
	_, err = r.Check("bob", secret)
	require.ErrorIs(t, err, ErrMismatch)

	// Revoking again is harmless and keeps the first revoke time.
	clock.Set(epoch.Add(time.Hour / 2))
	again, err := r.Revoke(tok.ID)
	require.NoError(t, err)
	require.Equal(t, revoked, again)

	// The user's other token is untouched.
	_, err = r.Check("alice", other)
	require.NoError(t, err)
	require.NoError(t, r.Recheck(otherTok.ID))

	// Revoke is durable: a fresh registry over the same store sees it.
	fresh, _ := newTokensWithClock(r.store)
	_, err = fresh.Check("alice", secret)
	require.ErrorIs(t, err, ErrRevoked)

	_, err = r.Revoke("0000000000000000")
	require.ErrorIs(t, err, ErrUnknown)
}

func TestRecheckUnknown(t *testing.T) {
	r, _ := newTestTokens(t)
	require.ErrorIs(t, r.Recheck("0123456789abcdef"), ErrUnknown)
	require.ErrorIs(t, r.Recheck(""), ErrUnknown)
}

func TestFreshRegistryOverSameStore(t *testing.T) {
	s := openTestStore(t)
	r1, _ := newTokensWithClock(s)
	secret, tok := addToken(t, r1, "alice", RoleService, time.Hour)

	r2, _ := newTokensWithClock(s)
	require.ErrorIs(t, r2.Recheck(tok.ID), ErrUnknown, "a fresh cache knows nothing yet")
	got, err := r2.Check("alice", secret)
	require.NoError(t, err)
	require.Equal(t, tok, got)
	require.NoError(t, r2.Recheck(tok.ID), "Check fills the cache")

	_, err = r2.Check("bob", secret)
	require.ErrorIs(t, err, ErrMismatch)
}

func TestList(t *testing.T) {
	r, clock := newTestTokens(t)
	var want []Token
	for i, user := range []string{"carol", "alice", "bob", "alice", "carol", "alice"} {
		clock.Set(epoch.Add(time.Duration(i) * time.Second))
		_, tok := addToken(t, r, user, RoleDevice, time.Hour)
		want = append(want, tok)
	}
	_, err := r.Revoke(want[3].ID)
	require.NoError(t, err)

	all, err := r.List("")
	require.NoError(t, err)
	require.Len(t, all, 6)
	var order []string
	for _, tok := range all {
		require.Nil(t, tok.Hash, "List must never return hashes")
		order = append(order, tok.User+"@"+tok.Created.Format("05"))
	}
	require.Equal(t, []string{"alice@06", "alice@08", "alice@10", "bob@07", "carol@05", "carol@09"}, order)

	alice, err := r.List("alice")
	require.NoError(t, err)
	require.Len(t, alice, 3)
	for _, tok := range alice {
		require.Equal(t, "alice", tok.User)
		require.Nil(t, tok.Hash)
	}
	require.Equal(t, want[1].ID, alice[0].ID)
	require.Equal(t, want[3].ID, alice[1].ID)
	require.False(t, alice[1].Revoked.IsZero(), "List shows the revoke")
	require.Equal(t, want[5].ID, alice[2].ID)

	none, err := r.List("nobody")
	require.NoError(t, err)
	require.Empty(t, none)

	// The listing serialises without any hash field at all.
	out, err := json.Marshal(all)
	require.NoError(t, err)
	require.False(t, bytes.Contains(out, []byte(`"hash"`)), "%s", out)
}

func TestConcurrentCheckAndRevoke(t *testing.T) {
	r, _ := newTestTokens(t)
	secret, tok := addToken(t, r, "alice", RoleDevice, time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				_, err := r.Check("alice", secret)
				if err != nil && !errors.Is(err, ErrRevoked) {
					t.Errorf("check: %v", err)
					return
				}
				_ = r.Recheck(tok.ID)
			}
		})
	}
	wg.Go(func() {
		if _, err := r.Revoke(tok.ID); err != nil {
			t.Errorf("revoke: %v", err)
		}
	})
	wg.Wait()
	_, err := r.Check("alice", secret)
	require.ErrorIs(t, err, ErrRevoked)
}

// pausingStore pauses the first Peek after its read until release is
// closed, as a descheduled connect goroutine would.
type pausingStore struct {
	*persistence.Store
	first   atomic.Bool
	read    chan struct{}
	release chan struct{}
}

func (s *pausingStore) Peek(fn func(persistence.Txn) error) (persistence.Durable, error) {
	d, err := s.Store.Peek(fn)
	if s.first.CompareAndSwap(false, true) {
		close(s.read)
		<-s.release
	}
	return d, err
}

// TestRevokeDuringFirstLoad: a revoke that lands while a CONNECT reads the
// token for the first time (nothing cached, as after a restart) is not
// undone by the read's older copy.
func TestRevokeDuringFirstLoad(t *testing.T) {
	st := openTestStore(t)
	secret, tok, err := NewTokens(st).Add(NewToken{User: "alice", Role: RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	slow := &pausingStore{Store: st, read: make(chan struct{}), release: make(chan struct{})}
	r := NewTokens(slow)
	done := make(chan error)
	go func() {
		_, err := r.Check("alice", secret)
		done <- err
	}()
	<-slow.read
	_, err = r.Revoke(tok.ID)
	require.NoError(t, err)
	close(slow.release)
	require.ErrorIs(t, <-done, ErrRevoked, "the connect that raced the revoke")
	require.ErrorIs(t, r.Recheck(tok.ID), ErrRevoked)
	_, err = r.Check("alice", secret)
	require.ErrorIs(t, err, ErrRevoked)
}
