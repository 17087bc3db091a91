// Package wire holds Tether's protocol: topic names, JSON payload types and
// error codes. It is a leaf package shared by the broker and the clients;
// docs/protocol.md is its prose twin.
package wire

import "fmt"

// MaxNameLen is the longest user or session name.
const MaxNameLen = 64

// ValidName reports whether s is a valid user or session name:
// 1 to 64 characters from [A-Za-z0-9._-]. Names never contain MQTT
// separators or wildcards, so they are safe to put in a topic.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckName returns a descriptive error if s is not a valid name; what says
// which name it is ("user", "session").
func CheckName(what, s string) error {
	if ValidName(s) {
		return nil
	}
	return fmt.Errorf("invalid %s name %q: want 1-%d characters from [A-Za-z0-9._-]", what, s, MaxNameLen)
}
