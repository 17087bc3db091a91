package persistence

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Key builds a key from parts joined by '/'; see docs/storage.md for the
// layout. Parts must not contain '/' unless they are the last part.
func Key(parts ...string) []byte { return []byte(strings.Join(parts, "/")) }

// Prefix is Key with a trailing '/', for scanning every key below parts.
func Prefix(parts ...string) []byte { return append(Key(parts...), '/') }

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
