package auth

import (
	"testing"
	"time"
)

// BenchmarkCheck is the CONNECT hot path once the token is cached: parse,
// hash, constant-time compare, validity.
func BenchmarkCheck(b *testing.B) {
	r, _ := newTestTokens(b)
	secret, _ := addToken(b, r, "alice", RoleDevice, time.Hour)
	if _, err := r.Check("alice", secret); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Check("alice", secret); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecheck is the per-packet token re-check.
func BenchmarkRecheck(b *testing.B) {
	r, _ := newTestTokens(b)
	_, tok := addToken(b, r, "alice", RoleDevice, time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Recheck(tok.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllowed is the per-packet ACL decision over a mix of topics.
func BenchmarkAllowed(b *testing.B) {
	device := Principal{User: "alice", Role: RoleDevice, TokenID: "0123456789abcdef"}
	cases := []struct {
		name  string
		p     Principal
		topic string
		write bool
	}{
		{"publish req", device, "sessions/alice/s1/req", true},
		{"subscribe own filter", device, "sessions/alice/+/res", false},
		{"publish denied leaf", device, "sessions/alice/s1/res", true},
		{"other user", device, "sessions/bob/s1/req", true},
		{"service app topic", Principal{User: "svc", Role: RoleService}, "tether/notify/alice/s1", true},
		{"anonymous plain", Principal{Anonymous: true}, "weather/today", true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.p.Allowed(c.topic, c.write)
			}
		})
	}
}
