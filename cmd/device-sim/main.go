// Command device-sim runs a fleet of simulated devices against Tether: load,
// chaos and correctness checks with a report, and the end-to-end benchmarks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "device-sim:", err)
		os.Exit(2)
	case errors.Is(err, errInterrupted):
		fmt.Fprintln(os.Stderr, "device-sim:", err)
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "device-sim:", err)
		os.Exit(1)
	}
}
