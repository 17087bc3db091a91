package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/wire"
)

// DefaultList is the shopping list of `hellopersistent shop`.
var DefaultList = []string{"toaster", "kettle", "lamp", "radio", "blender", "clock", "fan", "mixer", "heater", "mirror"}

// Shopper buys every item of List exactly once although it crashes on the
// way. Each life is a new device: it dials, begins, and learns from the
// memento where to resume; nothing else survives a crash.
type Shopper struct {
	// Client says where and as whom to connect; Session is always SessionName.
	Client client.Config
	// List is what to buy, in order; the memento of a buy is its index here.
	List []string
	// Plan says where to crash; nil never crashes on purpose.
	Plan *Plan
	// InFlightWait is how long a shopper that crashes in flight still waits
	// for the reply after sending the buy; 0 dies as soon as the buy is sent
	// (Call publishes before it looks at its context). A reply that arrives
	// within it makes the crash an after-reply one.
	InFlightWait time.Duration
	// Reboot is how long a crashed shopper takes to start again. A buy
	// left in flight is run by the broker on the dead connection; a reboot
	// faster than that finds the buy refused (stale nonce) rather than done.
	Reboot time.Duration
	// MaxLives bounds the restarts; 0 means 1000.
	MaxLives int
	// Out receives one line per begin, buy and crash; nil discards them.
	Out io.Writer
}

// Stats is what the supervisor (the loop that restarts the shopper) saw.
// It is never read back by the shopper, which keeps no state across lives.
type Stats struct {
	Lives  int // begins attempted
	Bought int // buys whose reply the shopper read
	// Crashes on purpose, by where they happened.
	BeforeSend, InFlight, AfterReply int
	// ReplyLost counts in-flight crashes whose buy the broker had committed
	// (the next begin's memento names its item): without the memento this
	// is where a naive client buys a second toaster.
	ReplyLost int
	// Errors counts crashes forced by a failed request (timeout, lost
	// connection, stale nonce), as the crash discipline asks.
	Errors int
}

// Crashes is the number of lives that ended without End.
func (s Stats) Crashes() int { return s.BeforeSend + s.InFlight + s.AfterReply + s.Errors }

func (s Stats) String() string {
	return fmt.Sprintf("lives=%d bought=%d crashes=%d (before-send=%d in-flight=%d [reply-lost=%d] after-reply=%d errors=%d)",
		s.Lives, s.Bought, s.Crashes(), s.BeforeSend, s.InFlight, s.ReplyLost, s.AfterReply, s.Errors)
}

// lifeEnd is how one life ended.
type lifeEnd struct {
	done  bool  // the list is bought and the session ended
	crash Crash // where it crashed on purpose; NoCrash with done=false: a failed request
	at    int   // the index of the step it crashed on
}

// Run restarts the shopper until its whole list is bought, and returns
// what the restarts looked like. It fails on errors a restart cannot
// cure (refused credentials, unknown method, a memento that is not an
// index of List) and after MaxLives lives.
func (s *Shopper) Run(ctx context.Context) (Stats, error) {
	var st Stats
	if len(s.List) == 0 {
		return st, errors.New("shopper: empty list")
	}
	cfg := s.Client
	cfg.Session = SessionName
	maxLives := s.MaxLives
	if maxLives <= 0 {
		maxLives = 1000
	}
	inFlight := -1 // a buy the last life left in flight: for the stats only
	for st.Lives < maxLives {
		if st.Lives > 0 && s.Reboot > 0 {
			select {
			case <-time.After(s.Reboot):
			case <-ctx.Done():
				return st, ctx.Err()
			}
		}
		st.Lives++
		// Only c and last pass from begin to shop: what a restarted device has.
		c, last, err := s.begin(ctx, cfg, st.Lives)
		if err != nil {
			if !crashWorthy(ctx, err) {
				return st, err
			}
			st.Errors++
			s.printf("life %d: begin failed: %v: crash", st.Lives, err)
			continue
		}
		if inFlight >= 0 {
			if last >= inFlight {
				st.ReplyLost++
				s.printf("  the broker had bought %s before the crash; only the reply was lost", s.List[inFlight])
			} else {
				s.printf("  %s was not bought before the crash", s.List[inFlight])
			}
			inFlight = -1
		}
		end, err := s.shop(ctx, c, st.Lives, last, &st.Bought)
		if err != nil {
			return st, err
		}
		switch {
		case end.done:
			s.printf("done: %s", st)
			return st, nil
		case end.crash == CrashBeforeSend:
			st.BeforeSend++
		case end.crash == CrashInFlight:
			st.InFlight++
			inFlight = end.at
		case end.crash == CrashAfterReply:
			st.AfterReply++
		default:
			st.Errors++
		}
	}
	return st, fmt.Errorf("shopper: gave up after %d lives: %s", maxLives, st)
}

// begin starts a life: a new connection and a new instance of the session.
// It returns the index of the last item bought (-1: none yet).
func (s *Shopper) begin(ctx context.Context, cfg client.Config, life int) (*client.Client, int, error) {
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	b, err := c.Begin(ctx)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	last, err := s.lastBought(b.Memento)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	next := "nothing: the list is bought"
	if last+1 < len(s.List) {
		next = s.List[last+1]
	}
	s.printf("life %d: begin crashed=%t memento=%s → next: %s", life, b.Crashed, b.Memento, next)
	return c, last, nil
}

// lastBought decodes the memento: null before the first buy, else the
// index of the last item bought.
func (s *Shopper) lastBought(memento json.RawMessage) (int, error) {
	if len(memento) == 0 || string(memento) == "null" {
		return -1, nil
	}
	var i int
	if err := json.Unmarshal(memento, &i); err != nil || i < 0 || i >= len(s.List) {
		return 0, fmt.Errorf("shopper: memento %s is not an index of a %d-item list", memento, len(s.List))
	}
	return i, nil
}

// shop buys the items after last, crashing where the plan says; it ends
// the session when the list is bought. A crash drops the client without
// End: the next begin sees crashed=true.
func (s *Shopper) shop(ctx context.Context, c *client.Client, life, last int, bought *int) (lifeEnd, error) {
	for i := last + 1; i < len(s.List); i++ {
		item := s.List[i]
		crash := s.Plan.Next()
		if crash == CrashBeforeSend {
			c.Close()
			s.printf("life %d: crash before sending buy %s", life, item)
			return lifeEnd{crash: CrashBeforeSend, at: i}, nil
		}
		callCtx, cancel := ctx, context.CancelFunc(func() {})
		if crash == CrashInFlight {
			// Call sends the buy, then waits for its reply only this long.
			callCtx, cancel = context.WithTimeout(ctx, s.InFlightWait)
		}
		raw, err := c.Call(callCtx, methodBuy, item, i)
		cancel()
		if err != nil {
			c.Close()
			if crash == CrashInFlight && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				s.printf("life %d: crash in flight: buy %s sent, no reply yet", life, item)
				return lifeEnd{crash: CrashInFlight, at: i}, nil
			}
			if !crashWorthy(ctx, err) {
				return lifeEnd{}, fmt.Errorf("shopper: buy %s: %w", item, err)
			}
			s.printf("life %d: buy %s failed: %v: crash", life, item, err)
			return lifeEnd{at: i}, nil
		}
		*bought++
		var n int
		if err := json.Unmarshal(raw, &n); err != nil {
			c.Close()
			return lifeEnd{}, fmt.Errorf("shopper: buy %s: reply %s: %w", item, raw, err)
		}
		s.printf("life %d: bought %s (count %d)", life, item, n)
		if crash != NoCrash { // after the reply (or in flight, but the reply won the race)
			c.Close()
			s.printf("life %d: crash after the reply", life)
			return lifeEnd{crash: CrashAfterReply, at: i}, nil
		}
	}
	// The list is bought whether or not End gets through: a failed End
	// only leaves the session to look crashed at its next begin.
	if err := c.End(ctx); err != nil {
		s.printf("life %d: end: %v", life, err)
	}
	c.Close()
	return lifeEnd{done: true}, nil
}

// crashWorthy reports whether err is one the crash discipline answers by
// crashing and beginning again, rather than one a restart cannot cure.
func crashWorthy(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var be *client.Error
	if errors.As(err, &be) {
		return be.Code == wire.CodeStaleNonce || be.Code == wire.CodeInternal
	}
	return errors.Is(err, client.ErrConnectionLost) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrClosed)
}

// Counters asks the shop for every item's count, in a session of its own
// so that it never takes over the shopper's.
func Counters(ctx context.Context, cfg client.Config) (map[string]int, error) {
	cfg.Session = CountersSession
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Begin(ctx); err != nil {
		return nil, err
	}
	raw, err := c.Call(ctx, methodCounters, nil, nil)
	if err != nil {
		return nil, err
	}
	var counts map[string]int
	if err := json.Unmarshal(raw, &counts); err != nil {
		return nil, fmt.Errorf("counters: reply %s: %w", raw, err)
	}
	return counts, c.End(ctx)
}

func (s *Shopper) printf(format string, args ...any) {
	if s.Out != nil {
		fmt.Fprintf(s.Out, format+"\n", args...)
	}
}
