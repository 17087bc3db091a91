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
