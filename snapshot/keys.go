package snapshot

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// ParseKeys reads keys, one per line or separated by commas: "ID:HEX",
// where HEX is 64 hex digits (32 bytes). Blank lines and lines starting
// with # are ignored. The first key seals; all of them open.
func ParseKeys(r io.Reader) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue // a comment may itself contain commas
		}
		for _, item := range strings.Split(line, ",") {
			item = strings.TrimSpace(item)
			if item == "" || strings.HasPrefix(item, "#") {
				continue
			}
			id, h, ok := strings.Cut(item, ":")
			raw, err := hex.DecodeString(h)
			if !ok || err != nil || len(raw) != 32 || id == "" || len(id) > maxKeyID {
				return nil, fmt.Errorf("snapshot: keys line %d: want ID:HEX with 64 hex digits and an id of 1-%d bytes", n, maxKeyID)
			}
			var k Key
			k.ID = id
			copy(k.Secret[:], raw)
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("snapshot: read keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("snapshot: no keys")
	}
	return keys, nil
}

// NewKeyLine returns a fresh key as a "ID:HEX" line; id must be one
// ParseKeys reads back: 1-32 bytes, without ':', ',', '#' or spaces.
func NewKeyLine(id string) (string, error) {
	if id == "" || len(id) > maxKeyID || strings.ContainsAny(id, ":,# \t\r\n") {
		return "", fmt.Errorf("snapshot: key id %q: want 1-%d bytes without ':', ',', '#' or spaces", id, maxKeyID)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return id + ":" + hex.EncodeToString(b), nil
}
