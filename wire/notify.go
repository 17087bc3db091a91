package wire

import "encoding/json"

// Notification is the payload on sessions/U/S/notify.
type Notification struct {
	Seq  uint64          `json:"seq"`
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
