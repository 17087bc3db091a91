package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// maxSamples bounds a Latency's memory: beyond it, samples are kept by
// reservoir sampling, so percentiles stay unbiased on long soaks.
const maxSamples = 1 << 20

// Latency records durations and reports percentiles. It is safe for
// concurrent use.
type Latency struct {
	mu      sync.Mutex
	samples []time.Duration
	seen    int64
	max     time.Duration
}

// Add records one duration.
func (l *Latency) Add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen++
	if d > l.max {
		l.max = d
	}
	if len(l.samples) < maxSamples {
		l.samples = append(l.samples, d)
		return
	}
	if i := rand.Int64N(l.seen); i < maxSamples {
		l.samples[i] = d
	}
}

// Summary is a latency distribution as reports show it.
type Summary struct {
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
	// Buckets is a histogram over log-spaced bounds (UpperNs), for the HTML report.
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Bucket is one histogram bar: samples with latency ≤ UpperNs and above the previous bound.
type Bucket struct {
	UpperNs int64 `json:"upper_ns"`
	Count   int   `json:"count"`
}

// Summary computes the percentiles and the histogram of what was recorded.
func (l *Latency) Summary() Summary {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	out := Summary{Count: l.seen, Max: l.max}
	l.mu.Unlock()
	if len(s) == 0 {
		return out
	}
	slices.Sort(s)
	pct := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	out.P50, out.P95, out.P99 = pct(0.50), pct(0.95), pct(0.99)
	out.Buckets = histogram(s)
	return out
}

// histogram buckets sorted samples at 4 bounds per decade from 10 µs.
func histogram(sorted []time.Duration) []Bucket {
	var out []Bucket
	bound := 10 * time.Microsecond
	step := math.Pow(10, 0.25)
	i := 0
	for i < len(sorted) {
		n := 0
		for i < len(sorted) && sorted[i] <= bound {
			n++
			i++
		}
		out = append(out, Bucket{UpperNs: int64(bound), Count: n})
		bound = time.Duration(float64(bound) * step)
	}
	// Trim the empty bars before the first sample.
	for len(out) > 1 && out[0].Count == 0 {
		out = out[1:]
	}
	return out
}

// ms formats d in milliseconds with two decimals, for tables.
func ms(d time.Duration) string {
	return formatFloat(float64(d)/float64(time.Millisecond), 2)
}
