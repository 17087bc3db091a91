package snapshot

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is the fixed issue time of the tests' sealers.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testKey returns a key whose secret is fill, fill+1, … so keys differ.
func testKey(id string, fill byte) Key {
	k := Key{ID: id}
	for i := range k.Secret {
		k.Secret[i] = fill + byte(i)
	}
	return k
}

// "new" and "old" differ in more than one bit in every position, so a
// single bit flip in a key id never names the other key.
var (
	keyNew = testKey("new", 0x10)
	keyOld = testKey("old", 0x80)
)

// newTestSealer returns a sealer whose clock stands at t0.
func newTestSealer(tb testing.TB, ttl time.Duration, keys ...Key) *Sealer {
	tb.Helper()
	s, err := NewSealer(keys, ttl)
	require.NoError(tb, err)
	s.now = func() time.Time { return t0 }
	return s
}

func seal(tb testing.TB, s *Sealer, user, session string, version uint64, st State) string {
	tb.Helper()
	text, err := s.Seal(user, session, version, st)
	require.NoError(tb, err)
	require.True(tb, strings.HasPrefix(text, prefix), "text form %q lacks prefix %q", text, prefix)
	require.LessOrEqual(tb, len(text), MaxBlob)
	return text
}

// decodeText returns the binary form of a text form Seal produced.
func decodeText(tb testing.TB, text string) []byte {
	tb.Helper()
	require.True(tb, strings.HasPrefix(text, prefix))
	raw, err := base64.RawURLEncoding.Strict().DecodeString(text[len(prefix):])
	require.NoError(tb, err)
	return raw
}

// encodeText is the canonical text form of a binary form.
func encodeText(raw []byte) string {
	return prefix + base64.RawURLEncoding.EncodeToString(raw)
}

// regions of a binary form sealed with key id length idLen.
type regions struct{ idEnd, nonceEnd int }

func regionsOf(tb testing.TB, raw []byte) regions {
	tb.Helper()
	require.Greater(tb, len(raw), 2)
	idEnd := 2 + int(raw[1])
	return regions{idEnd: idEnd, nonceEnd: idEnd + 24}
}

var documented = []error{ErrMalformed, ErrUnknownKey, ErrTampered, ErrWrongOwner, ErrExpired, ErrTooLarge}

// requireIsOneOf fails unless err matches at least one of targets.
func requireIsOneOf(tb testing.TB, err error, targets []error, msgAndArgs ...any) {
	tb.Helper()
	require.Error(tb, err, msgAndArgs...)
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	require.Failf(tb, "unexpected error", "%v is none of %v; %s", err, targets, fmtMsg(msgAndArgs))
}

func fmtMsg(msgAndArgs []any) string {
	if len(msgAndArgs) == 0 {
		return ""
	}
	if f, ok := msgAndArgs[0].(string); ok {
		return fmt.Sprintf(f, msgAndArgs[1:]...)
	}
	return fmt.Sprint(msgAndArgs...)
}

// requireRefused asserts Open refused the blob with one of targets, with
// none of the other documented errors (a tampered blob must not be called
// another session's, nor the reverse), and returned nothing.
func requireRefused(tb testing.TB, snap Snapshot, err error, targets []error, msgAndArgs ...any) {
	tb.Helper()
	requireIsOneOf(tb, err, targets, msgAndArgs...)
	for _, other := range documented {
		if !slices.Contains(targets, other) {
			require.NotErrorIs(tb, err, other, msgAndArgs...)
		}
	}
	require.Zero(tb, snap, msgAndArgs...)
}

// fullState sets every field of State to a value that is not its zero.
func fullState() State {
	return State{
		Nonce:       "n-0f3a",
		Memento:     json.RawMessage(`{"cart":[1,2,3],"note":"hi","nested":{"x":null,"y":true}}`),
		Phase:       "checkout",
		FirstBegin:  time.Date(2025, 5, 31, 8, 30, 0, 123456789, time.UTC),
		Deadline:    time.Date(2025, 6, 2, 0, 0, 0, 1, time.FixedZone("CEST", 2*60*60)),
		LastCallSeq: math.MaxUint64,
		Acked:       17,
		NextNotify:  18,
		Policy:      json.RawMessage(`{"ttl":"1h","max":3}`),
	}
}

// requireStateEqual compares field by field, times with Equal, so a field
// added to State is compared without touching this helper.
func requireStateEqual(tb testing.TB, want, got State) {
	tb.Helper()
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := range wv.NumField() {
		name := wv.Type().Field(i).Name
		w, g := wv.Field(i).Interface(), gv.Field(i).Interface()
		if wt, ok := w.(time.Time); ok {
			require.True(tb, wt.Equal(g.(time.Time)), "State.%s: want %v, got %v", name, w, g)
			continue
		}
		require.Equal(tb, w, g, "State.%s", name)
	}
}

func TestFullStateSetsEveryField(t *testing.T) {
	v := reflect.ValueOf(fullState())
	for i := range v.NumField() {
		require.False(t, v.Field(i).IsZero(), "fullState leaves State.%s zero: the round trip would not prove it survives", v.Type().Field(i).Name)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	const ttl = 90 * time.Minute
	s := newTestSealer(t, ttl, keyNew, keyOld)
	cases := []struct {
		name    string
		version uint64
		st      State
	}{
		{"full", 42, fullState()},
		{"zero state", 0, State{}},
		{"max version", math.MaxUint64, fullState()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := seal(t, s, "alice", "main", tc.version, tc.st)
			snap, err := s.Open(text, "alice", "main")
			require.NoError(t, err)
			require.Equal(t, "alice", snap.User)
			require.Equal(t, "main", snap.Session)
			require.Equal(t, tc.version, snap.Version)
			require.True(t, snap.Issued.Equal(t0), "Issued %v, want %v", snap.Issued, t0)
			require.True(t, snap.Expires.Equal(t0.Add(ttl)), "Expires %v, want %v", snap.Expires, t0.Add(ttl))
			require.Equal(t, keyNew.ID, snap.KeyID)
			requireStateEqual(t, tc.st, snap.State)
		})
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	a := decodeText(t, seal(t, s, "alice", "main", 1, fullState()))
	b := decodeText(t, seal(t, s, "alice", "main", 1, fullState()))
	r := regionsOf(t, a)
	require.NotEqual(t, a[r.idEnd:r.nonceEnd], b[r.idEnd:r.nonceEnd], "two seals reused a nonce")
}

// The plaintext must not show through: the state's strings are not in the
// binary form.
func TestSealHidesState(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	raw := decodeText(t, seal(t, s, "alice-the-user", "main-session", 1, fullState()))
	for _, plain := range []string{"alice-the-user", "main-session", "checkout", "cart", "n-0f3a"} {
		require.NotContains(t, string(raw), plain)
	}
}

func TestOpenWrongOwner(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	owner := []error{ErrWrongOwner}
	text := seal(t, s, "alice", "main", 1, fullState())
	for _, o := range []struct{ user, session string }{
		{"bob", "main"},
		{"alice", "other"},
		{"bob", "other"},
		{"", ""},
		{"alice", ""},
		{"", "main"},
		{"Alice", "main"},
		{"alice", "main "},
		{"alice/main", ""},
		{"alice\x00", "main"},
	} {
		snap, err := s.Open(text, o.user, o.session)
		requireRefused(t, snap, err, owner, "opened alice/main's blob as %q/%q", o.user, o.session)
		require.NotContains(t, err.Error(), "alice", "the error does not name the real owner")
	}

	// User and session are separate fields of the plaintext: a/b + c is
	// not a + b/c.
	text = seal(t, s, "a/b", "c", 1, State{})
	snap, err := s.Open(text, "a", "b/c")
	requireRefused(t, snap, err, owner)
	_, err = s.Open(text, "a/b", "c")
	require.NoError(t, err)
}

// Another session's intact blob and a tampered blob are refused with
// different errors and messages; a blob both tampered with and presented
// for another session is tampered (authentication comes first).
func TestOpenTellsWrongOwnerFromTampered(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	raw := decodeText(t, seal(t, s, "alice", "main", 1, fullState()))
	tampered := bytes.Clone(raw)
	tampered[len(tampered)-20] ^= 0x40 // in the ciphertext
	for _, tc := range []struct {
		name, text, user, session string
		want                      error
		says, not                 string
	}{
		{"intact, other session", encodeText(raw), "alice", "other", ErrWrongOwner, "another user or session", "authenticate"},
		{"intact, other user", encodeText(raw), "bob", "main", ErrWrongOwner, "another user or session", "authenticate"},
		{"tampered, right owner", encodeText(tampered), "alice", "main", ErrTampered, "does not authenticate", "another"},
		{"tampered, other session", encodeText(tampered), "alice", "other", ErrTampered, "does not authenticate", "another"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := s.Open(tc.text, tc.user, tc.session)
			requireRefused(t, snap, err, []error{tc.want})
			require.Contains(t, err.Error(), tc.says)
			require.NotContains(t, err.Error(), tc.not)
		})
	}
}

// Format 1 blobs (sealed before format 2) still open for their owner; for
// anyone else they cannot be told from tampered ones, since their AAD
// holds the owner, and the error says both.
func TestOpenFormat1(t *testing.T) {
	s := goldenSealer(t)
	var n int
	for _, g := range goldens {
		raw := decodeText(t, g.text)
		if raw[0] != format1 {
			continue
		}
		n++
		snap, err := s.Open(g.text, g.user, g.session)
		require.NoError(t, err)
		requireGolden(t, g, snap)
		snap, err = s.Open(g.text, g.user, g.session+"x")
		require.ErrorIs(t, err, ErrTampered)
		require.ErrorIs(t, err, ErrWrongOwner)
		require.Zero(t, snap)
	}
	require.Positive(t, n, "no format 1 golden")
	text := seal(t, newTestSealer(t, time.Hour, keyNew), "alice", "main", 1, State{})
	require.Equal(t, byte(format), decodeText(t, text)[0], "Seal writes format 2")
}

func TestOpenExpiry(t *testing.T) {
	const ttl = time.Hour
	s := newTestSealer(t, ttl, keyNew)
	text := seal(t, s, "alice", "main", 1, fullState())
	expires := t0.Add(ttl)
	for _, tc := range []struct {
		name string
		now  time.Time
		ok   bool
	}{
		{"at issue", t0, true},
		{"1ns before expiry", expires.Add(-time.Nanosecond), true},
		{"at expiry", expires, false},
		{"1ns after expiry", expires.Add(time.Nanosecond), false},
		{"a year after", expires.AddDate(1, 0, 0), false},
		{"at expiry in another zone", expires.In(time.FixedZone("X", -7*60*60)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.now = func() time.Time { return tc.now }
			snap, err := s.Open(text, "alice", "main")
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, uint64(1), snap.Version)
				return
			}
			requireRefused(t, snap, err, []error{ErrExpired})
		})
	}
}

// A broker whose ttl is shorter than the sealing broker's refuses a blob
// past its own ttl from the issue time.
func TestOpenHoldsToItsOwnTTL(t *testing.T) {
	long := newTestSealer(t, 24*time.Hour, keyNew)
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	long.now = func() time.Time { return t0 }
	text := seal(t, long, "alice", "main", 1, fullState())
	short := newTestSealer(t, time.Hour, keyNew)
	short.now = func() time.Time { return t0.Add(59 * time.Minute) }
	_, err := short.Open(text, "alice", "main")
	require.NoError(t, err)
	short.now = func() time.Time { return t0.Add(2 * time.Hour) }
	snap, err := short.Open(text, "alice", "main")
	requireRefused(t, snap, err, []error{ErrExpired})
	require.ErrorContains(t, err, t0.Add(time.Hour).Format(time.RFC3339), "names the expiry that applies")
	long.now = short.now
	_, err = long.Open(text, "alice", "main")
	require.NoError(t, err, "the sealing broker's own ttl still holds for it")
}

func TestOpenUnknownKey(t *testing.T) {
	sealer := newTestSealer(t, time.Hour, keyNew)
	text := seal(t, sealer, "alice", "main", 1, fullState())
	other := newTestSealer(t, time.Hour, testKey("other", 0x40), testKey("ne", 0x50), testKey("newer", 0x60))
	snap, err := other.Open(text, "alice", "main")
	requireRefused(t, snap, err, []error{ErrUnknownKey})
}

// A key with the right id but another secret does not open the blob.
func TestOpenSameIDOtherSecret(t *testing.T) {
	text := seal(t, newTestSealer(t, time.Hour, keyNew), "alice", "main", 1, fullState())
	impostor := newTestSealer(t, time.Hour, testKey(keyNew.ID, 0x99))
	snap, err := impostor.Open(text, "alice", "main")
	requireRefused(t, snap, err, []error{ErrTampered})
}

func TestKeyRotation(t *testing.T) {
	before := newTestSealer(t, time.Hour, keyOld)
	during := newTestSealer(t, time.Hour, keyNew, keyOld)
	after := newTestSealer(t, time.Hour, keyNew)

	old := seal(t, before, "alice", "main", 3, fullState())
	snap, err := during.Open(old, "alice", "main")
	require.NoError(t, err, "a sealer with [new, old] must open blobs sealed with old")
	require.Equal(t, keyOld.ID, snap.KeyID)
	require.Equal(t, uint64(3), snap.Version)
	requireStateEqual(t, fullState(), snap.State)

	snap, err = after.Open(old, "alice", "main")
	requireRefused(t, snap, err, []error{ErrUnknownKey}, "old key removed")

	fresh := seal(t, during, "alice", "main", 4, fullState())
	raw := decodeText(t, fresh)
	require.Equal(t, keyNew.ID, string(raw[2:regionsOf(t, raw).idEnd]), "new blobs are sealed with the first key")
	snap, err = after.Open(fresh, "alice", "main")
	require.NoError(t, err)
	require.Equal(t, keyNew.ID, snap.KeyID)
	snap, err = before.Open(fresh, "alice", "main")
	requireRefused(t, snap, err, []error{ErrUnknownKey})
}

func TestSealTooLarge(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	big := State{Memento: json.RawMessage(`"` + strings.Repeat("x", MaxBlob) + `"`)}
	text, err := s.Seal("alice", "main", 1, big)
	require.ErrorIs(t, err, ErrTooLarge)
	require.Empty(t, text)

	// The largest memento that fits is sealed and opens; one more byte is refused.
	memento := func(n int) State { return State{Memento: json.RawMessage(`"` + strings.Repeat("x", n) + `"`)} }
	lo, hi := 0, MaxBlob // Seal(memento(lo)) fits, Seal(memento(hi)) does not
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if _, err := s.Seal("alice", "main", 1, memento(mid)); err == nil {
			lo = mid
		} else {
			require.ErrorIs(t, err, ErrTooLarge)
			hi = mid
		}
	}
	n := lo
	text = seal(t, s, "alice", "main", 1, memento(n))
	require.Greater(t, n, 16<<10, "a 16 KiB memento must fit")
	require.Greater(t, len(text), MaxBlob-4, "base64 grows by at most 4 characters a step")
	snap, err := s.Open(text, "alice", "main")
	require.NoError(t, err)
	require.Len(t, snap.State.Memento, n+2)
	text, err = s.Seal("alice", "main", 1, memento(n+1))
	require.ErrorIs(t, err, ErrTooLarge)
	require.Empty(t, text)
}

// MaxBlob's doc promises room for the state's 16 KiB memento (the sessions
// registry's default MaxMemento), and a memento is the application's JSON:
// it must come back as it went in. json.Marshal HTML-escapes RawMessage
// ('<' becomes \u003c, six bytes for one), which breaks both.
func TestSealMementoNotRewritten(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	t.Run("bytes survive", func(t *testing.T) {
		m := json.RawMessage(`{"html":"<b>Tom & Jerry</b>","sep":"a\u2028b"}`)
		snap, err := s.Open(seal(t, s, "alice", "main", 1, State{Memento: m}), "alice", "main")
		require.NoError(t, err)
		require.Equal(t, string(m), string(snap.State.Memento))
	})
	t.Run("16 KiB of markup fits", func(t *testing.T) {
		m := json.RawMessage(`"` + strings.Repeat("<", 16<<10-2) + `"`)
		require.Len(t, m, 16<<10)
		text, err := s.Seal("alice", "main", 1, State{Memento: m, Phase: strings.Repeat("p", 128)})
		require.NoError(t, err)
		snap, err := s.Open(text, "alice", "main")
		require.NoError(t, err)
		require.Equal(t, string(m), string(snap.State.Memento))
	})
}

func TestSealRejectsInvalidJSON(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	for _, st := range []State{
		{Memento: json.RawMessage(`{"a":`)},
		{Policy: json.RawMessage(`nope`)},
	} {
		text, err := s.Seal("alice", "main", 1, st)
		require.Error(t, err)
		require.Empty(t, text)
	}
}

func TestOpenTooLargeBeforeDecoding(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	for _, text := range []string{
		prefix + strings.Repeat("A", MaxBlob-len(prefix)+1),
		strings.Repeat("!", MaxBlob+1), // malformed too: size is checked first
		"xx" + strings.Repeat("\n", 1<<20),
	} {
		snap, err := s.Open(text, "alice", "main")
		requireRefused(t, snap, err, []error{ErrTooLarge}, "len %d", len(text))
		require.NotErrorIs(t, err, ErrMalformed)
	}
	// At the limit the text is decoded (and here found malformed).
	snap, err := s.Open(strings.Repeat("!", MaxBlob), "alice", "main")
	requireRefused(t, snap, err, []error{ErrMalformed})
}

func TestNewSealerValidation(t *testing.T) {
	id32 := strings.Repeat("k", 32)
	for _, tc := range []struct {
		name string
		keys []Key
		ttl  time.Duration
		ok   bool
	}{
		{"one key", []Key{keyNew}, time.Hour, true},
		{"id of 1 byte", []Key{testKey("k", 1)}, time.Hour, true},
		{"id of 32 bytes", []Key{testKey(id32, 1)}, time.Hour, true},
		{"two keys", []Key{keyNew, keyOld}, time.Nanosecond, true},
		{"nil keys", nil, time.Hour, false},
		{"no keys", []Key{}, time.Hour, false},
		{"empty id", []Key{testKey("", 1)}, time.Hour, false},
		{"empty id after a good one", []Key{keyNew, testKey("", 1)}, time.Hour, false},
		{"id of 33 bytes", []Key{testKey(id32+"k", 1)}, time.Hour, false},
		{"duplicate ids", []Key{keyNew, testKey(keyNew.ID, 0x77)}, time.Hour, false},
		{"duplicate identical keys", []Key{keyNew, keyOld, keyNew}, time.Hour, false},
		{"zero ttl", []Key{keyNew}, 0, false},
		{"negative ttl", []Key{keyNew}, -time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSealer(tc.keys, tc.ttl)
			if !tc.ok {
				require.Error(t, err)
				require.Nil(t, s)
				require.True(t, strings.HasPrefix(err.Error(), "snapshot: "), "error %q lacks the package prefix", err)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, s)
			s.now = func() time.Time { return t0 }
			text, err := s.Seal("alice", "main", 1, State{})
			require.NoError(t, err)
			snap, err := s.Open(text, "alice", "main")
			require.NoError(t, err)
			require.Equal(t, tc.keys[0].ID, snap.KeyID)
		})
	}
}

// A Sealer holds no mutable state: concurrent Seal and Open are safe (run
// with -race).
func TestSealerConcurrentUse(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew, keyOld)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range uint64(50) {
				text, err := s.Seal("alice", "main", v, fullState())
				if err == nil {
					var snap Snapshot
					snap, err = s.Open(text, "alice", "main")
					if err == nil && snap.Version != v {
						err = errors.New("version mismatch")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
