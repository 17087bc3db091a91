package broker

import (
	"strings"
	"testing"
)

// canonicalOrigin reads config entries and browsers' Origin headers: it
// must never panic, and what it returns is itself canonical (so an entry
// and the header of the page it names compare equal), lower case, with no
// path, query or default port.
func FuzzCanonicalOrigin(f *testing.F) {
	for _, s := range []string{"https://app.example.com", "HTTPS://App.Example.COM:443/", "http://[::1]:8080", "http://x:80",
		"capacitor://localhost", "https://", "null", "https://a@b", "https://a/b", "https://a?", "http://[::1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := canonicalOrigin(s)
		if err != nil {
			return
		}
		again, err := canonicalOrigin(o)
		if err != nil || again != o {
			t.Fatalf("canonicalOrigin(%q) = %q, which reads back as %q, %v", s, o, again, err)
		}
		if o != strings.ToLower(o) && !strings.Contains(o, "%") {
			t.Fatalf("canonicalOrigin(%q) = %q: not lower case", s, o)
		}
		if strings.HasSuffix(o, ":443") && strings.HasPrefix(o, "https://") || strings.HasSuffix(o, ":80") && strings.HasPrefix(o, "http://") {
			t.Fatalf("canonicalOrigin(%q) = %q keeps a default port", s, o)
		}
	})
}
