package wire

import "encoding/json"

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

// NotifyRoot is the application topic where service users notify sessions:
//
//	tether/notify/<user>            every session of the user
//	tether/notify/<user>/<session>  one session (created if new)
//	tether/notify/<user>/<pattern>  sessions whose names match a path.Match pattern (*, ?, [...])
//
// The payload is {"data": <any JSON>, "ttl_ms": n, "key": "collapse key"}.
const NotifyRoot = AppRoot + "/notify"
