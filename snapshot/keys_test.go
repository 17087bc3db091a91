package snapshot

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseKeys(t *testing.T) {
	hexA := strings.Repeat("0a", 32)
	hexB := strings.Repeat("b1", 32)
	hexC := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	secret := func(h string) [32]byte {
		raw, err := hex.DecodeString(h)
		require.NoError(t, err)
		return [32]byte(raw)
	}
	key := func(id, h string) Key { return Key{ID: id, Secret: secret(h)} }
	id32 := strings.Repeat("i", 32)

	good := []struct {
		name string
		in   string
		want []Key
	}{
		{"one", "a:" + hexA, []Key{key("a", hexA)}},
		{"one with newline", "a:" + hexA + "\n", []Key{key("a", hexA)}},
		{"byte order", "c:" + hexC, []Key{key("c", hexC)}},
		{"upper-case hex", "c:" + strings.ToUpper(hexC), []Key{key("c", hexC)}},
		{"lines keep order", "b:" + hexB + "\na:" + hexA, []Key{key("b", hexB), key("a", hexA)}},
		{"commas keep order", "b:" + hexB + ",a:" + hexA, []Key{key("b", hexB), key("a", hexA)}},
		{"commas and lines", "b:" + hexB + ", a:" + hexA + "\nc:" + hexC, []Key{key("b", hexB), key("a", hexA), key("c", hexC)}},
		{"spaces and tabs", "  a:" + hexA + "\t ,\t b:" + hexB + "  ", []Key{key("a", hexA), key("b", hexB)}},
		{"trailing comma", "a:" + hexA + ",", []Key{key("a", hexA)}},
		{"empty items", ",,a:" + hexA + ",,", []Key{key("a", hexA)}},
		{"CRLF", "a:" + hexA + "\r\nb:" + hexB + "\r\n", []Key{key("a", hexA), key("b", hexB)}},
		{"blank lines", "\n\n  \na:" + hexA + "\n\n", []Key{key("a", hexA)}},
		{"comments", "# keys for prod\na:" + hexA + "\n  # indented comment\n#b:" + hexB, []Key{key("a", hexA)}},
		{"comment item after a key", "a:" + hexA + ", # the old one is gone", []Key{key("a", hexA)}},
		{"id of 32 bytes", id32 + ":" + hexA, []Key{key(id32, hexA)}},
		{"id with punctuation", "2025-06.rot_1:" + hexA, []Key{key("2025-06.rot_1", hexA)}},
		// A line starting with # is a comment, commas and all: a key in it
		// stays commented out.
		{"comment line with commas", "# retired: a:" + hexA + ", b:" + hexB + "\nc:" + hexC, []Key{key("c", hexC)}},
		{"comment line with prose commas", "# first key seals, the rest open\nc:" + hexC, []Key{key("c", hexC)}},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseKeys(strings.NewReader(tc.in))
			require.NoError(t, err)
			require.Equal(t, tc.want, keys)
			_, err = NewSealer(keys, 1)
			require.NoError(t, err)
		})
	}

	bad := []struct {
		name, in, line string // line: the line number the error names, if any
	}{
		{"empty", "", ""},
		{"blank", "\n \n", ""},
		{"only comments", "# a:" + hexA + "\n#\n", ""},
		{"bad hex", "a:" + strings.Repeat("zz", 32), "line 1"},
		{"odd hex", "a:" + hexA[:63] + "g", "line 1"},
		{"62 digits", "a:" + hexA[:62], "line 1"},
		{"66 digits", "a:" + hexA + "0a", "line 1"},
		{"no secret", "a:", "line 1"},
		{"missing id", ":" + hexA, "line 1"},
		{"missing colon", hexA, "line 1"},
		{"id of 33 bytes", id32 + "i:" + hexA, "line 1"},
		{"space in hex", "a:" + hexA[:32] + " " + hexA[32:], "line 1"},
		{"second item bad", "a:" + hexA + ",b:" + hexB[:10], "line 1"},
		{"third line bad", "a:" + hexA + "\n# c\nb:xyz", "line 3"},
		{"0x prefix", "a:0x" + hexA, "line 1"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseKeys(strings.NewReader(tc.in))
			require.Error(t, err)
			require.Nil(t, keys)
			msg := err.Error()
			require.True(t, strings.HasPrefix(msg, "snapshot: "), "error %q lacks the package prefix", msg)
			require.Contains(t, msg, tc.line)
			for _, h := range []string{hexA, hexB, hexA[:32], hexB[:10]} {
				require.NotContains(t, msg, h, "the error must not echo key material")
			}
		})
	}
}

// ParseKeys does not reject a repeated id; NewSealer does.
func TestParseKeysDuplicateRejectedBySealer(t *testing.T) {
	keys, err := ParseKeys(strings.NewReader("a:" + strings.Repeat("00", 32) + "\na:" + strings.Repeat("11", 32)))
	require.NoError(t, err)
	require.Len(t, keys, 2)
	_, err = NewSealer(keys, 1)
	require.Error(t, err)
}

func TestNewKeyLine(t *testing.T) {
	l1, err := NewKeyLine("k1")
	require.NoError(t, err)
	l2, err := NewKeyLine("k2")
	require.NoError(t, err)
	require.Regexp(t, `^k1:[0-9a-f]{64}$`, l1)

	keys, err := ParseKeys(strings.NewReader(l1 + "\n" + l2))
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Equal(t, "k1", keys[0].ID)
	require.Equal(t, "k2", keys[1].ID)
	require.NotEqual(t, keys[0].Secret, keys[1].Secret)
	require.NotEqual(t, [32]byte{}, keys[0].Secret)

	s, err := NewSealer(keys, 1<<40)
	require.NoError(t, err)
	text, err := s.Seal("alice", "main", 1, State{})
	require.NoError(t, err)
	_, err = s.Open(text, "alice", "main")
	require.NoError(t, err)
}

// FuzzParseKeys: a keys file either is refused with an error or reads
// keys with an id of 1-maxKeyID bytes that read back the same from
// "ID:HEX" lines.
func FuzzParseKeys(f *testing.F) {
	line, err := NewKeyLine("k1")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{line, line + "\n# old\n" + line, "k1:" + strings.Repeat("0", 64) + ",k2:" + strings.Repeat("f", 64), "k1:abc", ":" + strings.Repeat("0", 64), "", "# only a comment"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseKeys(strings.NewReader(s))
		if err != nil {
			return
		}
		require.NotEmpty(t, keys)
		var b strings.Builder
		for _, k := range keys {
			require.NotEmpty(t, k.ID)
			require.LessOrEqual(t, len(k.ID), maxKeyID)
			b.WriteString(k.ID + ":" + hex.EncodeToString(k.Secret[:]) + "\n")
		}
		again, err := ParseKeys(strings.NewReader(b.String()))
		require.NoError(t, err, "%q", b.String())
		require.Equal(t, keys, again)
	})
}
