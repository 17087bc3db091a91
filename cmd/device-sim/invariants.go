package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/wire"
)

// Invariant is one property checked at the end of a run.
type Invariant struct {
	Name       string   `json:"name"`
	Pass       bool     `json:"pass"`
	Advisory   bool     `json:"advisory,omitempty"` // reported as WARN; does not fail the run
	Checked    int64    `json:"checked"`            // what was checked (calls, notifications, sessions)
	Unit       string   `json:"unit"`               // what Checked counts
	Violations int      `json:"violations"`         // how many failed
	Examples   []string `json:"examples,omitempty"`
}

// finalState is what the broker says about a session once every device is gone.
type finalState struct {
	presence  string // the retained presence state
	lastSeq   uint64 // next_seq - 1 from a fresh begin: the last committed call
	memento   uint64
	count     uint64 // sim.get: how many times sim.add's effect was applied
	readError error
}

// checkInvariants reads every session's final state and compares it with
// what the devices were told.
func (s *sim) checkInvariants(ctx context.Context) []Invariant {
	finals := make([]finalState, len(s.slots))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, sl := range s.slots {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			finals[i] = s.readFinal(ctx, sl)
		}()
	}
	wg.Wait()

	var (
		twice  = Invariant{Name: "no call effect applied twice", Unit: "acknowledged calls"}
		lost   = Invariant{Name: "no acknowledged call lost", Unit: "acknowledged calls"}
		notes  = Invariant{Name: "no acknowledged notification lost", Unit: "PUBACKed notifications"}
		order  = Invariant{Name: "per-session seqs strictly increasing, one seq per notification", Unit: "notifications delivered"}
		pres   = Invariant{Name: "presence ended offline for crashed devices", Unit: "sessions"}
		errs   = Invariant{Name: "no unexpected broker errors", Unit: "sessions"}
		stall  = Invariant{Name: "attached devices get queued notifications without a new begin", Unit: "sessions", Advisory: true}
		add    = func(inv *Invariant, n int, ex ...string) { inv.Violations += n; appendExamples(inv, ex...) }
		unread []string
	)
	for i, sl := range s.slots {
		f := finals[i]
		sl.mu.Lock()
		name := sl.user + "/" + sl.session
		twice.Checked += int64(sl.ackedCalls)
		lost.Checked += int64(sl.ackedCalls)
		add(&twice, len(sl.doubles)+len(sl.staleRan), prefix(name, append(append([]string{}, sl.doubles...), sl.staleRan...))...)
		add(&lost, len(sl.lostAtBegin), prefix(name, sl.lostAtBegin)...)
		if f.readError != nil {
			unread = append(unread, name+": "+f.readError.Error())
		} else {
			if f.count > f.lastSeq {
				add(&twice, 1, fmt.Sprintf("%s: effect applied %d times for %d committed calls", name, f.count, f.lastSeq))
			}
			if f.count < f.lastSeq {
				add(&lost, 1, fmt.Sprintf("%s: effect applied %d times for %d committed calls", name, f.count, f.lastSeq))
			}
			if sl.maxAcked > f.lastSeq {
				add(&lost, 1, fmt.Sprintf("%s: call %d acknowledged, last committed is %d", name, sl.maxAcked, f.lastSeq))
			}
			if f.memento != f.lastSeq {
				add(&lost, 1, fmt.Sprintf("%s: memento %d, last committed call %d", name, f.memento, f.lastSeq))
			}
		}
		notes.Checked += int64(len(sl.notified))
		if sl.pending > 0 {
			var missing []int64
			gotOnce := 0 // a device got it, died before its ack, and no later begin got it again
			for id := range sl.notified {
				if !sl.consumed[id] {
					missing = append(missing, id)
					if sl.received[id] {
						gotOnce++
					}
				}
			}
			sort.Slice(missing, func(a, b int) bool { return missing[a] < missing[b] })
			add(&notes, len(missing), fmt.Sprintf("%s: %d never delivered and acknowledged (%d of them reached a device that died before its ack, and never came again), e.g. notification %d",
				name, len(missing), gotOnce, missing[0]))
		}
		order.Checked += int64(len(sl.received))
		add(&order, len(sl.disorder)+len(sl.seqReused), prefix(name, append(append([]string{}, sl.disorder...), sl.seqReused...))...)
		pres.Checked++
		if f.presence != "offline" {
			add(&pres, 1, fmt.Sprintf("%s: presence %q", name, f.presence))
		}
		errs.Checked++
		add(&errs, sl.nUnexpected, sl.unexpected...)
		sl.mu.Unlock()
	}
	if len(unread) > 0 { // a session whose final state cannot be read proves nothing: fail both call checks
		add(&twice, len(unread), unread...)
		add(&lost, len(unread), unread...)
	}
	stall.Checked = int64(len(s.slots))
	for _, sl := range s.stalled {
		add(&stall, 1, fmt.Sprintf("%s/%s: an attached device got no queued notification for half the drain; a new begin delivered them", sl.user, sl.session))
	}
	out := []Invariant{twice, lost, notes, order, stall, pres, errs}
	for i := range out {
		out[i].Pass = out[i].Violations == 0
	}
	return out
}

func appendExamples(inv *Invariant, ex ...string) {
	for _, e := range ex {
		if len(inv.Examples) < 5 {
			inv.Examples = append(inv.Examples, e)
		}
	}
}

func prefix(name string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = name + ": " + x
	}
	return out
}

// readFinal reads a session's retained presence (before anyone begins it
// again), then begins it on a fresh device and reads its memento, its
// last committed seq and sim.add's counter.
func (s *sim) readFinal(ctx context.Context, sl *slot) (f finalState) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	f.presence = s.readPresence(ctx, sl)
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = s.broker.url(), sl.user, s.tokens[sl.user], sl.session
	dev, err := client.Dial(ctx, cfg)
	if err != nil {
		f.readError = err
		return f
	}
	defer dev.Close()
	b, err := dev.Begin(ctx)
	if err != nil {
		f.readError = fmt.Errorf("begin: %w", err)
		return f
	}
	sl.ackedUpTo(b.Acked) // acks whose reply the last device did not live to read
	f.lastSeq = b.NextSeq - 1
	if len(b.Memento) > 0 && string(b.Memento) != "null" {
		if err := json.Unmarshal(b.Memento, &f.memento); err != nil {
			f.readError = fmt.Errorf("memento %s: %w", b.Memento, err)
			return f
		}
	}
	out, err := dev.Call(ctx, "sim.get", nil, nil)
	if err != nil {
		f.readError = fmt.Errorf("sim.get: %w", err)
		return f
	}
	f.count, f.readError = decodeCount(out)
	return f
}

// readPresence waits up to 10 s for the session's retained presence to
// say offline and returns the last state seen.
func (s *sim) readPresence(ctx context.Context, sl *slot) string {
	var (
		mu    sync.Mutex
		state = "(none)"
	)
	cli, err := dialMQTT(ctx, s.broker.url(), sl.user, s.tokens[sl.user], nil)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	defer cli.Disconnect(0)
	topic := wire.SessionTopic(sl.user, sl.session, wire.LeafPresence)
	tok := cli.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		var p struct {
			State string `json:"state"`
		}
		if json.Unmarshal(m.Payload(), &p) == nil {
			mu.Lock()
			state = p.State
			mu.Unlock()
		}
	})
	if err := waitTok(ctx, tok); err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		st := state
		mu.Unlock()
		if st == "offline" || time.Now().After(deadline) || ctx.Err() != nil {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), stream))
}
