package main

import "math/rand/v2"

// Crash is where the shopper dies on one step of its list.
type Crash int

const (
	// NoCrash: the step runs to its reply and the shopper goes on.
	NoCrash Crash = iota
	// CrashBeforeSend: the shopper dies before the buy is sent.
	CrashBeforeSend
	// CrashInFlight: the buy is sent and the shopper dies before its reply.
	CrashInFlight
	// CrashAfterReply: the reply arrived and the shopper dies before the next step.
	CrashAfterReply
)

func (c Crash) String() string {
	switch c {
	case NoCrash:
		return "no crash"
	case CrashBeforeSend:
		return "before sending"
	case CrashInFlight:
		return "in flight"
	case CrashAfterReply:
		return "after the reply"
	}
	return "crash?"
}

// Plan decides where the shopper crashes: each step draws from a generator
// seeded with seed, so the same seed and rate give the same crash points
// in the same order, whatever the timing. A nil Plan never crashes.
type Plan struct {
	rng  *rand.Rand
	rate float64
}

// NewPlan returns a plan that crashes on a step with probability rate,
// at one of the three crash points with equal odds.
func NewPlan(seed uint64, rate float64) *Plan {
	return &Plan{rng: rand.New(rand.NewPCG(seed, 0x5eed)), rate: rate}
}

// Next draws the crash point of the next step.
func (p *Plan) Next() Crash {
	if p == nil || p.rng.Float64() >= p.rate {
		return NoCrash
	}
	return Crash(1 + p.rng.IntN(3))
}
