package auth

import (
	"strings"

	"github.com/f47fa0da/tether/wire"
)

// Principal is who a connection is: an authenticated user with a role, or
// an anonymous client (only when the broker allows anonymous access).
type Principal struct {
	User      string
	Role      Role
	TokenID   string
	Anonymous bool
}

// Allowed decides whether p may publish (write) to, or subscribe to, topic,
// which for a subscribe may be a filter with wildcards. It is called on every
// packet.
//
//   - Anyone authenticated may subscribe to anything under sessions/<own user>/
//     and publish there except on the broker-owned leaves (res, notify, tick, snapshot).
//   - A service may also publish and subscribe under tether/ (application topics).
//   - An anonymous client may use only plain topics: not sessions/, not tether/, not $-topics.
func (p Principal) Allowed(topic string, write bool) bool {
	if topic == "" {
		return false
	}
	root, rest, _ := strings.Cut(topic, "/")
	if p.Anonymous {
		return !isReserved(root)
	}
	switch root {
	case wire.SessionsRoot:
		return p.ownsSessionTopic(rest, write)
	case wire.AppRoot:
		return p.Role == RoleService
	}
	return false
}

// isReserved reports whether a first topic level belongs to Tether or the
// broker itself; a wildcard there could match them, so it is reserved too.
func isReserved(root string) bool {
	return root == wire.SessionsRoot || root == wire.AppRoot || root == "+" || root == "#" || strings.HasPrefix(root, "$")
}

// ownsSessionTopic checks rest = "<user>/..." against p.
func (p Principal) ownsSessionTopic(rest string, write bool) bool {
	user, tail, ok := strings.Cut(rest, "/")
	if !ok || user != p.User || tail == "" {
		return false
	}
	if !write {
		return true // any filter below the user's own root
	}
	// Publishing: an exact topic sessions/U/S/leaf on a device-writable leaf.
	session, leaf, ok := strings.Cut(tail, "/")
	if !ok || !wire.ValidName(session) || strings.Contains(leaf, "/") {
		return false
	}
	return !wire.BrokerOwnedLeaf(leaf) && leaf != "" && !strings.ContainsAny(leaf, "+#")
}
