package wire_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/wire"
)

// TestNotificationAppendJSON: the hand-made encoding is json.Marshal's
// (but for the escaping of <, > and & in data, which it leaves as is) and
// decodes back to the same notification.
func TestNotificationAppendJSON(t *testing.T) {
	for _, data := range []string{`1`, `"x"`, `{"a":[1,2,{"b":null}],"c":"é\u2028"}`, `[]`, `-1.5e3`, `true`} {
		n := wire.Notification{Seq: 18446744073709551615, Prev: 7, Data: json.RawMessage(data), TS: -1}
		got := n.AppendJSON([]byte("prefix:"))
		want, err := json.Marshal(n)
		require.NoError(t, err)
		require.Equal(t, "prefix:"+string(want), string(got), data)
		var back wire.Notification
		require.NoError(t, json.Unmarshal(got[len("prefix:"):], &back))
		require.Equal(t, n, back)
	}
	html := wire.Notification{Seq: 1, Data: json.RawMessage(`"<a&b>"`)}
	require.Equal(t, `{"seq":1,"prev":0,"data":"<a&b>","ts":0}`, string(html.AppendJSON(nil)))
	require.Equal(t, `{"seq":2,"prev":1,"data":null,"ts":3}`, string(wire.Notification{Seq: 2, Prev: 1, TS: 3}.AppendJSON(nil)))
}

// TestDecodeNotification: what the broker writes decodes to the
// notification; other spellings decode as json.Unmarshal decodes them.
func TestDecodeNotification(t *testing.T) {
	n := wire.Notification{Seq: 7, Prev: 5, Data: json.RawMessage(`{"a":[1,"x"]}`), TS: 1764633600000}
	got, err := wire.DecodeNotification(n.AppendJSON(nil))
	require.NoError(t, err)
	require.Equal(t, n, got)

	for _, p := range []string{
		`{"SEQ":3,"data":1}`,                 // json.Unmarshal matches keys without regard to case
		`{"seq":3,"seq":4,"data":1}`,         // the last one wins
		`{"seq":3,"data":null}`,              // null data stays "null"
		`{"seq":3,"data":1,"extra":true}`,    // unknown fields are skipped
		`{"seq":3,"ts":-1,"data":1}`,         // a negative ts
		`{ "seq" : 3 , "data" : [ 1 , 2 ] }`, // white space
	} {
		want, wantErr := unmarshalNotification(p)
		got, err := wire.DecodeNotification([]byte(p))
		require.Equal(t, wantErr, err, p)
		require.Equal(t, want, got, p)
	}
	for _, p := range []string{``, `[]`, `{"seq":-3}`, `{"seq":1.5}`, `{"ts":9223372036854775808}`, `{"seq":3`} {
		_, err := wire.DecodeNotification([]byte(p))
		require.Error(t, err, p)
	}
}

func unmarshalNotification(p string) (wire.Notification, error) {
	var n wire.Notification
	err := json.Unmarshal([]byte(p), &n)
	return n, err
}

// FuzzDecodeNotification: DecodeNotification decodes every payload exactly
// as json.Unmarshal does, the same value or an error where it fails.
func FuzzDecodeNotification(f *testing.F) {
	f.Add([]byte(`{"seq":7,"prev":5,"data":{"a":[1,"x"]},"ts":1764633600000}`))
	f.Add([]byte(`{"seq":3,"data":null}`))
	f.Add([]byte(`{"Seq":3,"seq":4,"data":"\u00e9"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		want, wantErr := unmarshalNotification(string(p))
		got, err := wire.DecodeNotification(p)
		if wantErr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// BenchmarkDecodeNotification decodes a delivery as the broker writes it,
// by DecodeNotification and by json.Unmarshal.
func BenchmarkDecodeNotification(b *testing.B) {
	p := wire.Notification{Seq: 123456, Prev: 123455, Data: json.RawMessage(`{"i":42,"sent":1764633600123456789,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`), TS: 1764633600123}.AppendJSON(nil)
	b.Run("DecodeNotification", func(b *testing.B) {
		for b.Loop() {
			if _, err := wire.DecodeNotification(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		for b.Loop() {
			var n wire.Notification
			if err := json.Unmarshal(p, &n); err != nil {
				b.Fatal(err)
			}
		}
	})
}
