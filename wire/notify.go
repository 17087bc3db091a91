package wire

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"

	"github.com/f47fa0da/tether/internal/jsonobj"
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

// DecodeNotification decodes a payload on sessions/U/S/notify exactly as
// json.Unmarshal into a Notification does, faster when the payload is
// what the broker writes (AppendJSON): one object with the four fields
// spelled as they are, each once, seq, prev and ts plain digits, data not
// null. Everything else goes to json.Unmarshal. Devices decode one per
// notification.
func DecodeNotification(p []byte) (Notification, error) {
	if n, ok := decodeNotificationFast(p); ok {
		return n, nil
	}
	var n Notification
	err := json.Unmarshal(p, &n)
	return n, err
}

func decodeNotificationFast(p []byte) (Notification, bool) {
	var (
		n    Notification
		seen [4]bool // seq, prev, data, ts
	)
	ok := jsonobj.Members(p, func(key, raw []byte) bool {
		var field int
		ok := true
		switch string(key) {
		case "seq":
			n.Seq, ok = digits(raw)
		case "prev":
			field = 1
			n.Prev, ok = digits(raw)
		case "data":
			field = 2
			n.Data, ok = bytes.Clone(raw), string(raw) != "null"
		case "ts":
			field = 3
			var ts uint64
			ts, ok = digits(raw)
			n.TS, ok = int64(ts), ok && ts <= math.MaxInt64
		default:
			return false // json.Unmarshal matches keys without regard to case, and skips unknown ones
		}
		if seen[field] {
			return false // the last one wins in json.Unmarshal
		}
		seen[field] = true
		return ok
	})
	return n, ok
}

// NotifyRoot is the application topic where service users notify sessions:
//
//	tether/notify/<user>            every session of the user
//	tether/notify/<user>/<session>  one session (created if new)
//	tether/notify/<user>/<pattern>  sessions whose names match a path.Match pattern (*, ?, [...])
//
// The payload is {"data": <any JSON>, "ttl_ms": n, "key": "collapse key"}.
const NotifyRoot = AppRoot + "/notify"
