package persistence

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Key builds a key from parts joined by '/'; see docs/storage.md for the
// layout. Parts must not contain '/' unless they are the last part.
func Key(parts ...string) []byte { return joinKey(parts, 0) }

// Prefix is Key with a trailing '/', for scanning every key below parts.
func Prefix(parts ...string) []byte { return append(joinKey(parts, 1), '/') }

// joinKey joins parts with '/' in one allocation, with room for extra
// more bytes (Prefix's '/') so that appending them does not copy.
func joinKey(parts []string, extra int) []byte {
	n := extra
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, '/')
		}
		k = append(k, p...)
	}
	return k
}

// Uint64Key appends n big-endian so that keys sort numerically.
func Uint64Key(prefix []byte, n uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, n)
}

// Uint64Suffix reads the big-endian number at the end of a key built by Uint64Key.
func Uint64Suffix(key []byte) (uint64, error) {
	if len(key) < 8 {
		return 0, fmt.Errorf("persistence: key %q too short for a number", key)
	}
	return binary.BigEndian.Uint64(key[len(key)-8:]), nil
}

func sprintf(f string, a ...any) string { return strings.TrimSpace(fmt.Sprintf(f, a...)) }
