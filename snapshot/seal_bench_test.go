package snapshot

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

var benchStates = []struct {
	name string
	st   State
}{
	{"small", fullState()},
	{"memento-16KiB", State{Memento: json.RawMessage(`"` + strings.Repeat("x", 16<<10-2) + `"`), Phase: "run"}},
}

func BenchmarkSeal(b *testing.B) {
	s := newTestSealer(b, time.Hour, keyNew, keyOld)
	for _, bs := range benchStates {
		b.Run(bs.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(seal(b, s, "alice", "main", 1, bs.st))))
			for b.Loop() {
				if _, err := s.Seal("alice", "main", 1, bs.st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	s := newTestSealer(b, time.Hour, keyNew, keyOld)
	for _, bs := range benchStates {
		b.Run(bs.name, func(b *testing.B) {
			text := seal(b, s, "alice", "main", 1, bs.st)
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				if _, err := s.Open(text, "alice", "main"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// Refusals must stay cheap: a forged blob is refused at the tag check.
	b.Run("tampered", func(b *testing.B) {
		raw := decodeText(b, seal(b, s, "alice", "main", 1, fullState()))
		raw[len(raw)-1] ^= 1
		text := encodeText(raw)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Open(text, "alice", "main"); err == nil {
				b.Fatal("tampered blob opened")
			}
		}
	})
}
