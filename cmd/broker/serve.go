package main

import (
	"context"
	"io"

	"github.com/f47fa0da/tether/broker"
)

// serve runs the broker until ctx ends (SIGINT/SIGTERM), then shuts it down
// gracefully. After the first signal stop() restores the default handling,
// so a second signal kills the process at once.
func serve(ctx context.Context, stop func(), args []string, stderr io.Writer, lookupEnv func(string) (string, bool)) error {
	c, err := loadServeConfig(args, stderr, lookupEnv)
	if err != nil {
		return err
	}
	cfg := c.brokerConfig()
	cfg.Logger = c.newLogger(stderr)
	b, err := broker.Open(cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop()
	cfg.Logger.Info("signal received: shutting down (send it again to force)")
	return b.Close()
}
