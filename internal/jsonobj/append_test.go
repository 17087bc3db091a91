package jsonobj

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAppendString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", `""`},
		{"plain/text-1", `"plain/text-1"`},
		{"q\"b\\", `"q\"b\\"`},
		{"a\nb\rc\td\x00\x1f", `"a\nb\rc\td\u0000\u001f"`},
		{"<&> π", `"<&> π"`},
		{"bad\xffutf8", `"bad\ufffdutf8"`},
		{"line\u2028para\u2029", `"line\u2028para\u2029"`},
	} {
		got := string(AppendString([]byte("x"), c.in))
		require.Equal(t, "x"+c.want, got, "%q", c.in)
	}
}

func TestAppendTimeRefusesWhatJSONRefuses(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.FixedZone("x", 90*60))
	b, ok := AppendTime(nil, at)
	require.True(t, ok)
	want, _ := json.Marshal(at)
	require.Equal(t, string(want), string(b))

	for _, bad := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("far", 25*3600)),
	} {
		_, err := json.Marshal(bad)
		require.Error(t, err, "%v", bad)
		b, ok := AppendTime([]byte("x"), bad)
		require.False(t, ok)
		require.Equal(t, "x", string(b))
	}
}

func TestAppendRaw(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", false}, // an empty value, which json.Marshal refuses
		{`{"a":[1,"<b>"]}`, `{"a":[1,"<b>"]}`, true},
		{`{"a": 1}`, "", false}, // json.Marshal would compact it
		{`{"a":`, "", false},
	} {
		got, ok := AppendRaw(nil, json.RawMessage(c.in))
		require.Equal(t, c.ok, ok, c.in)
		require.Equal(t, c.want, string(got), c.in)
	}
	got, ok := AppendRaw(nil, nil)
	require.True(t, ok)
	require.Equal(t, "null", string(got))
}

// FuzzAppendString holds AppendString to encoding/json: for any text,
// valid JSON that decodes to what json.Marshal's encoding decodes to.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\\n\x00", "<>&", "\xff\xfe", "\u2028", "π\xe2\x82"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fast := AppendString(nil, s)
		slow, err := json.Marshal(s)
		require.NoError(t, err)
		var a, b string
		require.NoError(t, json.Unmarshal(fast, &a), "%q -> %s", s, fast)
		require.NoError(t, json.Unmarshal(slow, &b))
		require.Equal(t, b, a)
	})
}
