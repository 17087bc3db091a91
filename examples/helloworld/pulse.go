package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/queues"
)

// The sessions the pulse notifies, and how much each queue holds.
const (
	Client1    = "client1" // notified every 2nd tick
	Client2    = "client2" // notified every 3rd tick
	QueueLimit = 10
)

// Pulse is the seed's CA: a counter that ticks, notifying Client1 on even
// ticks and Client2 on every third, each with the counter as data. Only
// one goroutine may call Tick or Run.
type Pulse struct {
	B    *broker.Broker
	User string
	Out  io.Writer // a line per notification; nil: quiet

	counter int
}

// Init limits both queues to QueueLimit entries, dropping the oldest: the
// seed's __ca_init__. The limits are stored with the queues, so a session
// a device has never begun is limited before its first notification.
func (p *Pulse) Init() error {
	for _, s := range []string{Client1, Client2} {
		l := queues.Limits{MaxMessages: QueueLimit, MaxBytes: queues.DefaultLimits().MaxBytes, Policy: queues.DropOldest}
		if err := p.B.LimitQueue(p.User, s, &l); err != nil {
			return fmt.Errorf("limit queue of %s: %w", s, err)
		}
	}
	return nil
}

// Tick is the seed's __ca_pulse__: one more count, and its notifications.
// Each is durable when Tick returns; a device that is not connected gets
// it (if still queued) at its next begin.
func (p *Pulse) Tick() error {
	p.counter++
	for _, n := range []struct {
		session string
		every   int
	}{{Client1, 2}, {Client2, 3}} {
		if p.counter%n.every != 0 {
			continue
		}
		seq, err := p.B.Notify(p.User, n.session, p.counter)
		if err != nil {
			return fmt.Errorf("pulse %d: notify %s: %w", p.counter, n.session, err)
		}
		if p.Out != nil {
			fmt.Fprintf(p.Out, "pulse %d: notified %s (seq %d)\n", p.counter, n.session, seq)
		}
	}
	return nil
}

// Counter is the number of ticks so far.
func (p *Pulse) Counter() int { return p.counter }

// Run ticks every interval until ctx ends, or ticks times when ticks > 0.
// It returns ctx's error only when stopped early; a failed Tick stops it.
func (p *Pulse) Run(ctx context.Context, every time.Duration, ticks int) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 0; ticks <= 0 || n < ticks; n++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if err := p.Tick(); err != nil {
			return err
		}
	}
	return nil
}
