package queues_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/queues"
)

func TestDecodeMessage(t *testing.T) {
	ok := []struct {
		payload string
		want    queues.Message
	}{
		{`{"data":1}`, queues.Message{Data: json.RawMessage(`1`)}},
		{` { "data" : { "a" : [ 1 , "<&>" ] } } `, queues.Message{Data: json.RawMessage(`{"a":[1,"<&>"]}`)}},
		{`{"key":"score","ttl_ms":1500,"data":"x"}`, queues.Message{Data: json.RawMessage(`"x"`), TTL: 1500 * time.Millisecond, Key: "score"}},
		{`{"data":false,"ttl_ms":0}`, queues.Message{Data: json.RawMessage(`false`)}},
		{`{"data":[],"key":"\u00e9/\u2028"}`, queues.Message{Data: json.RawMessage(`[]`), Key: "é/\u2028"}},
		{`{"data":1,"ttl_ms":31536000000}`, queues.Message{Data: json.RawMessage(`1`), TTL: queues.MaxTTL}},
		{`{"data":1,"key":"` + strings.Repeat("k", queues.MaxKeyLen) + `"}`, queues.Message{Data: json.RawMessage(`1`), Key: strings.Repeat("k", queues.MaxKeyLen)}},
	}
	for _, tc := range ok {
		t.Run(tc.payload, func(t *testing.T) {
			m, err := queues.DecodeMessage([]byte(tc.payload), 1024)
			require.NoError(t, err)
			require.Equal(t, tc.want, m)
		})
	}

	bad := []struct {
		payload string
		want    string // part of the message
	}{
		{``, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`[1]`, "not a JSON object"},
		{`"data"`, "not a JSON object"},
		{`{`, "ends inside the JSON object"},
		{`{"data":1`, "ends inside the JSON object"},
		{`{"data":}`, "not valid JSON"},
		{`{"data" 1}`, "not valid JSON"},
		{`{"data":1,}`, "not valid JSON"},
		{`{,"data":1}`, "not valid JSON"},
		{`{}`, "missing field data"},
		{`{"ttl_ms":5}`, "missing field data"},
		{`{"data":null}`, "data must not be null"},
		{`{"data":1}{"data":2}`, "data after the JSON object"},
		{`{"data":1} x`, "data after the JSON object"},
		{`{"data":1,"data":2}`, "field data appears twice"},
		{`{"data":1,"key":"a","key":"a"}`, "field key appears twice"},
		{`{"data":1,"Data":2}`, `unknown field "Data"`},
		{`{"data":1,"ttl":5}`, `unknown field "ttl"`},
		{`{"data":1,"ttl_ms":-1}`, "ttl_ms must be an integer"},
		{`{"data":1,"ttl_ms":1.5}`, "ttl_ms must be an integer"},
		{`{"data":1,"ttl_ms":1e3}`, "ttl_ms must be an integer"},
		{`{"data":1,"ttl_ms":"5"}`, "ttl_ms must be an integer"},
		{`{"data":1,"ttl_ms":null}`, "ttl_ms must be an integer"},
		{`{"data":1,"ttl_ms":31536000001}`, "ttl_ms must be an integer"},
		{`{"data":1,"ttl_ms":99999999999999999999999}`, "ttl_ms must be an integer"},
		{`{"data":1,"key":5}`, "key must be a string"},
		{`{"data":1,"key":null}`, "key must be a string"},
		{`{"data":1,"key":""}`, "key must not be empty"},
		{`{"data":1,"key":"a\u0000b"}`, "control character U+0000"},
		{`{"data":1,"key":"a\tb"}`, "control character U+0009"},
		{`{"data":1,"key":"` + strings.Repeat("k", queues.MaxKeyLen+1) + `"}`, "key is 129 bytes; the limit is 128"},
		{"{\"data\":\"\xff\"}", "not valid UTF-8"},
	}
	for _, tc := range bad {
		t.Run(tc.payload, func(t *testing.T) {
			_, err := queues.DecodeMessage([]byte(tc.payload), 1024)
			require.ErrorIs(t, err, queues.ErrBadMessage)
			require.ErrorContains(t, err, tc.want)
		})
	}

	t.Run("too large", func(t *testing.T) {
		p := []byte(`{"data":"` + strings.Repeat("x", 100) + `"}`)
		_, err := queues.DecodeMessage(p, len(p)-1)
		require.ErrorIs(t, err, queues.ErrTooLarge)
		require.ErrorContains(t, err, "payload is 111 bytes; the limit is 110")
		_, err = queues.DecodeMessage(p, len(p))
		require.NoError(t, err)
		_, err = queues.DecodeMessage(p, 0)
		require.NoError(t, err, "0: no payload limit")
	})
}

// FuzzDecodeMessage: any payload gives a valid message or a well-formed
// error, never a panic; an accepted message is what the token decoder
// (the path before the fast one) makes of it, re-encodes to a payload that
// decodes to the same message, and Enqueue's checks accept it.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"data":1}`, `{"data":{"temp":21.5,"unit":"C"},"ttl_ms":60000,"key":"temp"}`,
		`{"key":"k","data":[1,"<&>",null,true],"ttl_ms":0}`, ` {"data" : "x" } `, `{"data":"\u2028\ud800"}`,
		`{"data":null}`, `{"data":1,"data":2}`, `{"data":1,"ttl_ms":1e3}`, `{"data":1,"extra":{}}`,
		`{"data":1}{}`, `[`, `{"data":1,"key":"a\u0000"}`, "\xff", `{"data":1,"ttl_ms":-0}`,
		`{"d\u0061ta":1}`, `{ "data" : { "a" : [ 1 , "x y" ] } , "key" : "k" }`, `{"data":"a\"}b","ttl_ms":5}`, `{"data":{}}`, `{}`,
	} {
		f.Add([]byte(s), 256)
	}
	f.Fuzz(func(t *testing.T, payload []byte, maxBytes int) {
		m, err := queues.DecodeMessage(payload, maxBytes)
		if err != nil {
			if !errors.Is(err, queues.ErrBadMessage) && !errors.Is(err, queues.ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrBadMessage nor ErrTooLarge", err)
			}
			if !strings.HasPrefix(err.Error(), "queues: ") || len(err.Error()) < len("queues: bad message: x") || !utf8.ValidString(err.Error()) {
				t.Fatalf("unclear error %q", err)
			}
			return
		}
		if maxBytes > 0 && len(payload) > maxBytes {
			t.Fatalf("accepted %d bytes over the limit %d", len(payload), maxBytes)
		}
		if slow, err := queues.DecodeMessageSlow(payload); err != nil || !reflect.DeepEqual(slow, m) {
			t.Fatalf("fast path gave %+v; the token decoder %+v, %v", m, slow, err)
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a message Enqueue refuses: %v", err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, m.Data); err != nil || !bytes.Equal(compact.Bytes(), m.Data) {
			t.Fatalf("data %q is not compact JSON", m.Data)
		}
		if m.TTL%time.Millisecond != 0 {
			t.Fatalf("ttl %s is not whole milliseconds", m.TTL)
		}
		// Re-encode and decode again: the same message.
		again := map[string]any{"data": m.Data}
		if m.TTL > 0 {
			again["ttl_ms"] = m.TTL.Milliseconds()
		}
		if m.Key != "" {
			again["key"] = m.Key
		}
		p, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := queues.DecodeMessage(p, 0)
		if err != nil {
			t.Fatalf("re-encoded %q: %v", p, err)
		}
		if !bytes.Equal(m.Data, m2.Data) && !jsonEqual(m.Data, m2.Data) || m.TTL != m2.TTL || m.Key != m2.Key {
			t.Fatalf("round trip changed %+v into %+v", m, m2)
		}
	})
}

// jsonEqual compares two JSON texts by value: json.Marshal escapes <, > and &
// in data, which changes the bytes but not the value.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// BenchmarkDecodeMessage decodes a typical notify payload, by the fast
// path and by the token decoder alone.
func BenchmarkDecodeMessage(b *testing.B) {
	p := []byte(`{"data":{"i":123,"t":1764650000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"ttl_ms":60000,"key":"state"}`)
	for _, c := range []struct {
		name   string
		decode func([]byte) (queues.Message, error)
	}{
		{"fast", func(p []byte) (queues.Message, error) { return queues.DecodeMessage(p, 0) }},
		{"tokens", queues.DecodeMessageSlow},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := c.decode(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
