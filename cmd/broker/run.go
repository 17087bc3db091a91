package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
)

// usageError is a mistake in the command line; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

const usage = `Tether: an MQTT session broker for gadgets and stateless clients.

Usage:
  broker [serve] [flags]            run the broker (the default command)
  broker token add --user U [...]   issue an auth token (printed once)
  broker token list [--user U]      list tokens (never their secrets)
  broker token revoke ID            revoke a token at once
  broker sessions list [--user U]   list sessions (state, phase, last seen)
  broker sessions show U/S          one session in full
  broker sessions log U/S           a session's journal, one event a line
  broker help                       this text

Run "broker serve -h", "broker token add -h" or "broker sessions log -h"
for the flags of each.
Operator commands work whether or not a broker runs on the data directory:
without one they open it directly, with one they go through its admin
endpoint on loopback.
`

// run dispatches a command line. stop ends signal capture, so that a second
// SIGINT during shutdown kills the process.
func run(ctx context.Context, stop func(), args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return serve(ctx, stop, args, stderr, os.LookupEnv)
	}
	switch args[0] {
	case "serve":
		return serve(ctx, stop, args[1:], stderr, os.LookupEnv)
	case "token":
		return tokenCmd(ctx, args[1:], stdout, stderr)
	case "sessions":
		return sessionsCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usagef("unknown command %q\n\n%s", args[0], usage)
}
