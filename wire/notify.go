package wire

import (
	"encoding/json"
	"strconv"
)

// Notification is the payload on sessions/U/S/notify.
//
// Prev is the seq sent just before this one on this connection, or the
// queue's acked seq if none was: the seqs between Prev and Seq were dropped
// or expired. A device that has not seen Prev missed a notification in
// transit; it must not ack past the gap and asks for a resend instead
// (ack with Resend), since acks are cumulative.
type Notification struct {
	Seq  uint64          `json:"seq"`
	Prev uint64          `json:"prev"`
	Data json.RawMessage `json:"data"`
	TS   int64           `json:"ts"` // enqueue time, Unix milliseconds
}

// AppendJSON appends n's JSON encoding to b: what json.Marshal writes,
// except that Data goes out as it is, which must be compact valid JSON (a
// queue stores it so), and without json.Marshal's escaping of <, > and &.
// The broker encodes every delivery with it.
func (n Notification) AppendJSON(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, n.Seq, 10)
	b = append(b, `,"prev":`...)
	b = strconv.AppendUint(b, n.Prev, 10)
	b = append(b, `,"data":`...)
	if len(n.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, n.Data...)
	}
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, n.TS, 10)
	return append(b, '}')
}

// NotifyRoot is the application topic where service users notify sessions:
//
//	tether/notify/<user>            every session of the user
//	tether/notify/<user>/<session>  one session (created if new)
//	tether/notify/<user>/<pattern>  sessions whose names match a path.Match pattern (*, ?, [...])
//
// The payload is {"data": <any JSON>, "ttl_ms": n, "key": "collapse key"}.
const NotifyRoot = AppRoot + "/notify"
