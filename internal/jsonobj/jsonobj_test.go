package jsonobj

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMembers(t *testing.T) {
	type kv struct{ k, v string }
	for _, c := range []struct {
		in   string
		ok   bool
		want []kv
	}{
		{`{}`, true, nil},
		{` { "a" : 1 , "b":"x,}" ,"c":[1,{"d":[]}], "e": {"f" : "g\"}"} } `, true,
			[]kv{{"a", "1"}, {"b", `"x,}"`}, {"c", `[1,{"d":[]}]`}, {"e", `{"f" : "g\"}"}`}}},
		{`{"a":true,"b":null,"c":-1.5e3}`, true, []kv{{"a", "true"}, {"b", "null"}, {"c", "-1.5e3"}}},
		{`{"\u0061":1}`, false, nil}, // an escaped key
		{`[1]`, false, nil},
		{`{"a":1}{}`, false, nil},
		{`{"a":1,}`, false, nil},
		{"{\"a\":\"\xff\"}", false, nil}, // not UTF-8
		{``, false, nil},
	} {
		var got []kv
		ok := Members([]byte(c.in), func(k, v []byte) bool {
			got = append(got, kv{string(k), string(v)})
			return true
		})
		require.Equal(t, c.ok, ok, c.in)
		if c.ok {
			require.Equal(t, c.want, got, c.in)
		}
	}
	calls := 0
	require.False(t, Members([]byte(`{"a":1,"b":2}`), func(_, _ []byte) bool { calls++; return false }))
	require.Equal(t, 1, calls, "stops at the first false")
}

func TestSpacedAndString(t *testing.T) {
	require.False(t, Spaced([]byte(`{"a":"b c","d":[1,2]}`)))
	require.True(t, Spaced([]byte(`{"a": 1}`)))
	require.True(t, Spaced([]byte("[1,\n2]")))
	require.False(t, Spaced([]byte(`"a\" b"`)))

	s, ok := String([]byte(`"héllo"`))
	require.True(t, ok)
	require.Equal(t, "héllo", s)
	for _, in := range []string{`"a\nb"`, `1`, `null`, `"`, ``} {
		_, ok := String([]byte(in))
		require.False(t, ok, in)
	}
}

// FuzzMembers: any input is walked without a panic; when Members accepts
// it, every value it handed out is valid JSON and every key plain text.
func FuzzMembers(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[{"c":"d\"e"}],"f":null}`, `{"a" : { "b" : [ 1 , 2 ] } }`, `[`, `{"\u0061":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		Members(p, func(k, v []byte) bool {
			if !json.Valid(v) {
				t.Fatalf("value %q of %q is not valid JSON", v, p)
			}
			if !json.Valid(append(append([]byte{'"'}, k...), '"')) {
				t.Fatalf("key %q of %q is not a plain JSON string", k, p)
			}
			return true
		})
	})
}
