package snapshot

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Flipping any bit of the binary form is refused, with the error that
// names the region hit, and Open returns nothing.
func TestOpenRejectsEveryBitFlip(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew, keyOld)
	raw := decodeText(t, seal(t, s, "alice", "main", 9, fullState()))
	r := regionsOf(t, raw)
	for i := range raw {
		var want []error
		switch {
		case i == 0: // format
			want = []error{ErrMalformed}
		case i == 1: // key id length: too long, too short for the rest, or another (unknown) id
			want = []error{ErrMalformed, ErrUnknownKey}
		case i < r.idEnd: // key id
			want = []error{ErrUnknownKey}
		default: // nonce, ciphertext, tag
			want = []error{ErrTampered}
		}
		for bit := range 8 {
			mut := bytes.Clone(raw)
			mut[i] ^= 1 << bit
			snap, err := s.Open(encodeText(mut), "alice", "main")
			requireRefused(t, snap, err, want, "byte %d of %d, bit %d", i, len(raw), bit)
		}
	}
}

// Every character of the text form replaced by another base64url
// character is refused.
func TestOpenRejectsEveryCharChange(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	s := newTestSealer(t, time.Hour, keyNew)
	text := seal(t, s, "alice", "main", 9, fullState())
	for i := len(prefix); i < len(text); i++ {
		j := strings.IndexByte(alphabet, text[i])
		require.GreaterOrEqual(t, j, 0)
		for _, d := range []int{1, 17, 32, 63} {
			mut := text[:i] + string(alphabet[(j+d)%64]) + text[i+1:]
			snap, err := s.Open(mut, "alice", "main")
			requireRefused(t, snap, err, []error{ErrMalformed, ErrUnknownKey, ErrTampered}, "char %d +%d", i, d)
		}
	}
}

func TestOpenRejectsTruncation(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	text := seal(t, s, "alice", "main", 9, fullState())
	raw := decodeText(t, text)
	for n := range len(raw) {
		snap, err := s.Open(encodeText(raw[:n]), "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed, ErrTampered}, "binary form cut to %d of %d bytes", n, len(raw))
	}
	for n := range len(text) {
		snap, err := s.Open(text[:n], "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed, ErrTampered}, "text form cut to %d of %d chars", n, len(text))
	}
	// Cut from the front: the header is gone or shifted.
	for n := 1; n < len(raw); n++ {
		snap, err := s.Open(encodeText(raw[n:]), "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed, ErrUnknownKey, ErrTampered}, "first %d bytes dropped", n)
	}
}

func TestOpenRejectsExtension(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	text := seal(t, s, "alice", "main", 9, fullState())
	raw := decodeText(t, text)
	for _, tail := range [][]byte{{0}, {1}, {0xff}, {0, 0}, bytes.Repeat([]byte{0}, 16), bytes.Repeat([]byte{0xa5}, 100), raw} {
		snap, err := s.Open(encodeText(append(bytes.Clone(raw), tail...)), "alice", "main")
		requireRefused(t, snap, err, []error{ErrTampered}, "binary form extended by %d bytes", len(tail))
	}
	for _, tail := range []string{"A", "AA", "AAA", "AAAA", "_", "ts1.", text[len(prefix):]} {
		snap, err := s.Open(text+tail, "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed, ErrTampered}, "text form extended by %q", tail)
	}
}

// A header rewritten to name another key the sealer holds does not
// authenticate: the header is in the AAD and the key differs.
func TestOpenRejectsChangedKeyID(t *testing.T) {
	a, b := testKey("key-a", 0x20), testKey("key-b", 0x30)
	s := newTestSealer(t, time.Hour, a, b, keyOld)
	raw := decodeText(t, seal(t, s, "alice", "main", 9, fullState()))
	r := regionsOf(t, raw)
	require.Equal(t, a.ID, string(raw[2:r.idEnd]))
	body := raw[r.idEnd:]
	for _, id := range []string{b.ID, keyOld.ID} {
		mut := append([]byte{format, byte(len(id))}, id...)
		mut = append(mut, body...)
		snap, err := s.Open(encodeText(mut), "alice", "main")
		requireRefused(t, snap, err, []error{ErrTampered}, "key id rewritten to %q", id)
	}

	// The same, with a blob sealed by key-b relabelled key-a: here the
	// header changes but the key used for the AAD check is the sealing key's
	// twin, so this checks the header is bound, not only the key.
	sb := newTestSealer(t, time.Hour, b)
	rawB := decodeText(t, seal(t, sb, "alice", "main", 9, fullState()))
	copy(rawB[2:], a.ID)
	snap, err := s.Open(encodeText(rawB), "alice", "main")
	requireRefused(t, snap, err, []error{ErrTampered})
}

// The header is authenticated even when the key is the same: a blob whose
// key id is rewritten to another id for the same secret is refused.
func TestOpenBindsHeaderToCiphertext(t *testing.T) {
	k1 := testKey("k1", 0x20)
	k2 := testKey("k2", 0x20) // same secret, other id
	s := newTestSealer(t, time.Hour, k1, k2)
	raw := decodeText(t, seal(t, s, "alice", "main", 9, fullState()))
	raw[3] = '2'
	snap, err := s.Open(encodeText(raw), "alice", "main")
	requireRefused(t, snap, err, []error{ErrTampered})
}

func TestOpenRejectsSwappedNonceAndBody(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	a := decodeText(t, seal(t, s, "alice", "main", 1, fullState()))
	b := decodeText(t, seal(t, s, "alice", "main", 1, fullState()))
	r := regionsOf(t, a)
	require.Equal(t, len(a), len(b))

	cases := map[string][]byte{}
	swapped := bytes.Clone(a)
	copy(swapped[r.idEnd:r.nonceEnd], b[r.idEnd:r.nonceEnd])
	cases["nonce of another blob"] = swapped
	zero := bytes.Clone(a)
	clear(zero[r.idEnd:r.nonceEnd])
	cases["zero nonce"] = zero
	body := bytes.Clone(a)
	copy(body[r.nonceEnd:], b[r.nonceEnd:])
	cases["ciphertext of another blob"] = body
	tag := bytes.Clone(a)
	copy(tag[len(tag)-16:], b[len(b)-16:])
	cases["tag of another blob"] = tag
	reversed := bytes.Clone(a)
	n := reversed[r.idEnd:r.nonceEnd]
	for i, j := 0, len(n)-1; i < j; i, j = i+1, j-1 {
		n[i], n[j] = n[j], n[i]
	}
	cases["nonce reversed"] = reversed

	for name, mut := range cases {
		require.NotEqual(t, a, mut, name)
		snap, err := s.Open(encodeText(mut), "alice", "main")
		requireRefused(t, snap, err, []error{ErrTampered}, name)
	}
}

func TestOpenRejectsBadHeader(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	raw := decodeText(t, seal(t, s, "alice", "main", 1, fullState()))
	for _, f := range []byte{0, 3, 0x80, 0xff} {
		mut := bytes.Clone(raw)
		mut[0] = f
		snap, err := s.Open(encodeText(mut), "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed}, "format %d", f)
	}
	for _, raw := range [][]byte{
		{},
		{format},
		{format, 0},
		{format, 0, 'x'},
		append([]byte{format, 33}, bytes.Repeat([]byte{'k'}, 33+24+16)...),
		append([]byte{format, 3, 'n', 'e', 'w'}, make([]byte, 24+15)...), // one byte short of a tag
	} {
		snap, err := s.Open(encodeText(raw), "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed}, "header % x", raw)
	}
	// Shortest well-formed shape: an empty ciphertext with a (wrong) tag.
	snap, err := s.Open(encodeText(append([]byte{format, 3, 'n', 'e', 'w'}, make([]byte, 24+16)...)), "alice", "main")
	requireRefused(t, snap, err, []error{ErrTampered})
}

func TestOpenRejectsBadTextForm(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	text := seal(t, s, "alice", "main", 1, fullState())
	b64 := text[len(prefix):]
	raw := decodeText(t, text)
	for name, bad := range map[string]string{
		"empty":             "",
		"prefix only":       prefix,
		"prefix, no dot":    "ts1" + b64,
		"upper-case prefix": "TS1." + b64,
		"other version":     "ts2." + b64,
		"no prefix":         b64,
		"leading space":     " " + text,
		"trailing space":    text + " ",
		"space inside":      text[:20] + " " + text[20:],
		"std alphabet +":    text[:20] + "+" + text[21:],
		"std alphabet /":    text[:20] + "/" + text[21:],
		"padded":            prefix + base64.URLEncoding.EncodeToString(append(bytes.Clone(raw), 0)),
		"pad char inside":   text[:20] + "=" + text[21:],
		"not base64":        prefix + "!!!!",
		"percent-encoded":   prefix + "%41%41%41%41",
		"impossible length": prefix + "A",
		"NUL":               text[:20] + "\x00" + text[21:],
		"non-ASCII":         text[:20] + "é" + text[21:],
	} {
		snap, err := s.Open(bad, "alice", "main")
		requireRefused(t, snap, err, []error{ErrMalformed}, name)
	}
}

// The text form is canonical: one blob has one text. Strict decoding
// rejects non-zero trailing bits, but encoding/base64 skips CR and LF even
// in Strict mode, so without a check of its own Open accepts the same blob
// under many texts (a replay cache or log keyed by the text is fooled).
func TestOpenRejectsNonCanonicalText(t *testing.T) {
	s := newTestSealer(t, time.Hour, keyNew)
	// A binary form whose length is not a multiple of 3 has spare bits in
	// its last character; vary the phase until there are some.
	var text string
	for n := 0; ; n++ {
		text = seal(t, s, "alice", "main", 1, State{Phase: strings.Repeat("p", n)})
		if len(decodeText(t, text))%3 != 0 {
			break
		}
	}
	_, err := s.Open(text, "alice", "main")
	require.NoError(t, err)

	last := text[len(text)-1]
	i := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last)
	spare := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i^1]
	for name, bad := range map[string]string{
		"spare bits set": text[:len(text)-1] + string(spare),
		"trailing LF":    text + "\n",
		"trailing CRLF":  text + "\r\n",
		"LF inside":      text[:20] + "\n" + text[20:],
		"CR inside":      text[:20] + "\r" + text[20:],
		"LF after dot":   prefix + "\n" + text[len(prefix):],
	} {
		t.Run(name, func(t *testing.T) {
			snap, err := s.Open(bad, "alice", "main")
			requireRefused(t, snap, err, []error{ErrMalformed})
		})
	}
}
