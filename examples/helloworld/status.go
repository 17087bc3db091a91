package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/queues"
)

const (
	// StatusSession is the session the status command calls from.
	StatusSession = "status"
	methodStatus  = "status"
)

// Status is the reply of the status call, the seed's sessionInfo: the
// caller's session and what every session of the user has queued.
type Status struct {
	Current string                    `json:"current"`
	Queues  map[string][]queues.Entry `json:"queues"` // by session, oldest first
}

// registerStatus installs the status call on b.
//
// It reads with Sessions().Names and Outq, which only read the store. It
// must not use SessionsOf (or Notify, LimitQueue, Sessions().Get…) on the
// caller's own session: a call handler runs holding that session, and
// those wait for it, so the call would never return (a handler notifies
// with Call.Notify, which commits with the call).
func registerStatus(b *broker.Broker) {
	b.Handle(methodStatus, func(_ context.Context, c *nonce.Call) (any, error) {
		names, err := b.Sessions().Names(c.User)
		if err != nil {
			return nil, err
		}
		st := Status{Current: c.Session, Queues: map[string][]queues.Entry{}}
		for _, name := range names {
			entries, err := b.Outq(c.User, name, 0)
			if err != nil {
				return nil, err
			}
			if entries == nil {
				entries = []queues.Entry{} // [] in JSON, not null
			}
			st.Queues[name] = entries
		}
		return st, nil
	})
}

// StatusOf makes the status call from cfg.User's StatusSession and ends
// that session's instance.
func StatusOf(ctx context.Context, cfg client.Config) (Status, error) {
	cfg.Session = StatusSession
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return Status{}, err
	}
	defer c.Close()
	if _, err := c.Begin(ctx); err != nil {
		return Status{}, err
	}
	raw, err := c.Call(ctx, methodStatus, nil, nil)
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return Status{}, fmt.Errorf("status reply: %w", err)
	}
	return st, c.End(ctx)
}

// printStatus writes st a session a paragraph, in name order.
func printStatus(w io.Writer, st Status) error {
	names := make([]string, 0, len(st.Queues))
	for name := range st.Queues {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "current: %s\n", st.Current)
	for _, name := range names {
		entries := st.Queues[name]
		fmt.Fprintf(w, "%s: %d queued\n", name, len(entries))
		for _, e := range entries {
			fmt.Fprintf(w, "  seq %d: %s\n", e.Seq, e.Data)
		}
	}
	return nil
}
