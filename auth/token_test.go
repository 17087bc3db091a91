package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A fixed, well-formed token: id 0123456789abcdef, secret the 32 bytes 0..31.
const (
	fixedID     = "0123456789abcdef"
	fixedSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	fixedToken  = "tt1_" + fixedID + "_" + fixedSecret
)

func fixedHash() []byte {
	var raw [32]byte
	for i := range raw {
		raw[i] = byte(i)
	}
	sum := sha256.Sum256(raw[:])
	return sum[:]
}

func TestParseTokenFixed(t *testing.T) {
	id, hash, err := ParseToken(fixedToken)
	require.NoError(t, err)
	require.Equal(t, fixedID, id)
	require.Equal(t, fixedHash(), hash)
}

// TestParseTokenUnderscoreInSecret: '_' and '-' are base64url letters, so a
// secret may hold them anywhere, even first; only the first two '_' separate.
func TestParseTokenUnderscoreInSecret(t *testing.T) {
	for _, secret := range []string{
		"_" + fixedSecret[1:],
		fixedSecret[:10] + "__" + fixedSecret[12:],
		strings.Repeat("_", 42) + "w",
		strings.Repeat("-", 42) + "w",
	} {
		t.Run(secret, func(t *testing.T) {
			id, hash, err := ParseToken("tt1_" + fixedID + "_" + secret)
			require.NoError(t, err)
			require.Equal(t, fixedID, id)
			require.Len(t, hash, sha256.Size)
			require.NotEqual(t, fixedHash(), hash)
		})
	}
}

func TestParseTokenRoundTripsIssuedTokens(t *testing.T) {
	r, _ := newTestTokens(t)
	seen := map[string]bool{}
	for range 50 {
		secret, tok, err := r.Add(NewToken{User: "alice", Role: RoleDevice, ValidUntil: r.now().Add(time.Hour)})
		require.NoError(t, err)
		require.Len(t, secret, len("tt1_")+16+1+43)
		id, hash, err := ParseToken(secret)
		require.NoError(t, err)
		require.Equal(t, tok.ID, id)
		require.Len(t, hash, sha256.Size)
		require.False(t, seen[secret], "secrets must not repeat")
		seen[secret] = true

		// The stored hash is the one ParseToken derives.
		stored, err := r.load(id)
		require.NoError(t, err)
		require.Equal(t, hash, stored.Hash)
	}
}

func TestParseTokenRejectsMalformed(t *testing.T) {
	idAt := len("tt1_")
	secretAt := idAt + 17
	with := func(i int, c string) string { return fixedToken[:i] + c + fixedToken[i+1:] }
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"no separators", "tt1" + fixedID + fixedSecret},
		{"prefix only", "tt1_"},
		{"wrong prefix", "tt2_" + fixedID + "_" + fixedSecret},
		{"uppercase prefix", "TT1_" + fixedID + "_" + fixedSecret},
		{"missing prefix", fixedID + "_" + fixedSecret},
		{"longer prefix", "tt10_" + fixedID + "_" + fixedSecret},
		{"id too short", "tt1_" + fixedID[:15] + "_" + fixedSecret + "A"},
		{"id too long", "tt1_" + fixedID + "0_" + fixedSecret[:42]},
		{"secret too short", fixedToken[:len(fixedToken)-1]},
		{"secret too long", fixedToken + "A"},
		{"secret 44 chars with padding", "tt1_" + fixedID + "_" + fixedSecret + "="},
		{"uppercase hex id", "tt1_" + strings.ToUpper(fixedID) + "_" + fixedSecret},
		{"one uppercase hex digit", with(idAt+15, "F")},
		{"non-hex id", with(idAt, "g")},
		{"underscore in id", with(idAt+3, "_")},
		{"separator not underscore", with(secretAt-1, "-")},
		{"bad base64 char", with(secretAt+5, "+")},
		{"bad base64 slash", with(secretAt+5, "/")},
		{"base64 padding char", with(secretAt+5, "=")},
		{"space in secret", with(secretAt+5, " ")},
		{"newline in secret", with(secretAt+5, "\n")},
		{"double underscore after prefix", "tt1__" + fixedID + "_" + fixedSecret},
		{"double underscore after prefix, same length", "tt1__" + fixedID[1:] + "_" + fixedSecret},
		{"double underscore after id", "tt1_" + fixedID + "__" + fixedSecret},
		{"underscore instead of last id digit", "tt1_" + fixedID[:15] + "__" + fixedSecret},
		{"trailing underscore", fixedToken + "_"},
		{"leading underscore", "_" + fixedToken},
		{"extra field", fixedToken + "_x"},
		{"leading space", " " + fixedToken},
		{"trailing newline", fixedToken + "\n"},
		{"non-ascii", with(secretAt+5, "é")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, hash, err := ParseToken(tc.token)
			require.ErrorIs(t, err, ErrMalformed)
			require.Empty(t, id)
			require.Nil(t, hash)
		})
	}
}

// TestParseTokenIsCanonical checks that exactly one string stands for each
// token. 43 base64 characters carry 258 bits for a 256-bit secret; a decoder
// that ignores the 2 spare bits (the low bits of the last character) accepts
// 4 spellings of every token.
func TestParseTokenIsCanonical(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := len(fixedToken) - 1
	v := strings.IndexByte(alphabet, fixedToken[last])
	require.Zero(t, v&3, "a canonical token has its spare bits clear")
	for _, spare := range []int{1, 2, 3} {
		variant := fixedToken[:last] + string(alphabet[v|spare])
		t.Run(variant[last:], func(t *testing.T) {
			_, _, err := ParseToken(variant)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

// FuzzParseToken feeds ParseToken arbitrary strings: it must never panic, and
// whatever it accepts must be the one canonical spelling of an id and secret.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		fixedToken,
		"tt1_" + strings.Repeat("0", 16) + "_" + strings.Repeat("A", 43),
		"tt1_" + strings.Repeat("f", 16) + "_" + strings.Repeat("_", 42) + "w",
		"tt1_" + strings.Repeat("f", 16) + "_" + strings.Repeat("-", 42) + "w",
		"",
		"tt1_",
		"tt1__",
		"tt1_" + strings.ToUpper(fixedID) + "_" + fixedSecret,
		fixedToken + "=",
		fixedToken[:len(fixedToken)-1],
		"tt1_" + fixedID + "_" + fixedSecret[:20] + "\n" + fixedSecret[21:],
		"tt1_" + fixedID + "_" + fixedSecret[:20] + "\r" + fixedSecret[21:],
		"letmein",
		// the canonical fixedToken ends in '8' (spare bits 00); these set them
		fixedToken[:len(fixedToken)-1] + "9",
		fixedToken[:len(fixedToken)-1] + "-",
		fixedToken[:len(fixedToken)-1] + "_",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, hash, err := ParseToken(s)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			require.Empty(t, id)
			require.Nil(t, hash)
			return
		}
		require.Len(t, id, 16)
		for _, c := range []byte(id) {
			require.True(t, c >= '0' && c <= '9' || c >= 'a' && c <= 'f', "id %q is not lowercase hex", id)
		}
		require.Len(t, hash, sha256.Size)

		// The input needs no re-formatting: encoding the id and secret it
		// decodes to gives back exactly s.
		secret := strings.TrimPrefix(s, "tt1_"+id+"_")
		require.NotEqual(t, s, secret, "accepted %q without the tt1_<id>_ head", s)
		raw, err := b64.DecodeString(secret)
		require.NoError(t, err)
		rawID, err := hex.DecodeString(id)
		require.NoError(t, err)
		require.Equal(t, s, tokenPrefix+"_"+hex.EncodeToString(rawID)+"_"+b64.EncodeToString(raw), "accepted a non-canonical token")
		sum := sha256.Sum256(raw)
		require.Equal(t, sum[:], hash)
	})
}
