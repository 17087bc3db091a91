package main

import (
	"context"
	"fmt"
	"io"

	"github.com/f47fa0da/tether/client"
)

// Device is the seed's client1.js: it begins cfg.Session and prints each
// notification as it arrives, in order, acknowledging it once printed,
// until ctx ends. Notifications queued while it was away come first.
func Device(ctx context.Context, cfg client.Config, out io.Writer) error {
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: begun, %d queued (acked up to seq %d)\n", cfg.Session, b.Queued, b.Acked)
	err = c.HandleNotifications(ctx, func(n client.Notification) error {
		_, err := fmt.Fprintf(out, "%s: seq %d: %s\n", cfg.Session, n.Seq, n.Data)
		return err
	})
	if ctx.Err() != nil {
		return nil // stopped: whatever was not acked yet comes again at the next begin
	}
	return err
}
