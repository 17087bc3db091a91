package wire

import "strings"

// Topic roots.
const (
	// SessionsRoot is the root of every per-session topic: sessions/U/S/<leaf>.
	SessionsRoot = "sessions"
	// AppRoot is the root of the application topics that only service-role
	// users may use (notifying sessions, for example).
	AppRoot = "tether"
)

// Leaves of a session's topics.
const (
	LeafReq      = "req"      // device -> broker requests
	LeafRes      = "res"      // broker -> device replies
	LeafNotify   = "notify"   // broker -> device notifications
	LeafTick     = "tick"     // broker -> device ticks
	LeafPresence = "presence" // retained presence; the device's will targets it
	LeafSnapshot = "snapshot" // broker -> device sealed snapshots
)

// SessionTopic returns sessions/user/session/leaf.
func SessionTopic(user, session, leaf string) string {
	return SessionsRoot + "/" + user + "/" + session + "/" + leaf
}

// ParseSessionTopic splits sessions/U/S/leaf. ok is false for any other
// shape, including names that are not valid.
func ParseSessionTopic(topic string) (user, session, leaf string, ok bool) {
	parts := strings.Split(topic, "/")
	if len(parts) != 4 || parts[0] != SessionsRoot || !ValidName(parts[1]) || !ValidName(parts[2]) {
		return "", "", "", false
	}
	return parts[1], parts[2], parts[3], true
}

// BrokerOwnedLeaf reports whether only the broker may publish on a session
// topic with this leaf.
func BrokerOwnedLeaf(leaf string) bool {
	switch leaf {
	case LeafRes, LeafNotify, LeafTick, LeafSnapshot:
		return true
	}
	return false
}
