// Command broker runs the Tether broker and its operator commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, stop, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "broker:", message(err))
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "broker:", message(err))
		os.Exit(1)
	}
}

// message is err's text without the "broker: " the broker package's own
// errors start with, which the command's prefix would double.
func message(err error) string { return strings.TrimPrefix(err.Error(), "broker: ") }
