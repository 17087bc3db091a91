package main

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// usageError is a mistake in the command line; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

const usage = `device-sim: a fleet of simulated Tether devices.

Usage:
  device-sim run [--preset smoke|soak|chaos|connect-storm] [flags]
                                   run a scenario and check the invariants
  device-sim bench pubsub [flags]  notify->deliver throughput: durable Tether vs
                                   mosquitto vs bare mochi (one run, ratios)
  device-sim bench idle [flags]    broker RSS per idle connected session
  device-sim bench connect [flags] connect+begin rate (sessions/s)
  device-sim bench calls [flags]   durable exactly-once calls/s and broker CPU per call
  device-sim bench all [flags]     all of them, optionally into docs/benchmarks.md
  device-sim broker [flags]        a Tether broker with the simulator's call
                                   handlers (for --broker-cmd), plus fault flags
  device-sim help                  this text

Run "device-sim run -h" or "device-sim bench pubsub -h" for the flags.
`

// run dispatches a command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("a command is required")
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "broker":
		return brokerCmd(ctx, args[1:], stdout, stderr)
	case "peer":
		return peerCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	if strings.HasPrefix(args[0], "-") {
		return runCmd(ctx, args, stdout, stderr)
	}
	return usagef("unknown command %q\n\n%s", args[0], usage)
}
