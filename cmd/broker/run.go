package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/f47fa0da/tether/snapshot"
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
  broker sessions show U/S          one session in full, with its queue
  broker sessions log U/S           a session's journal, one event a line
  broker queue peek U/S             a session's queued notifications, oldest first
  broker queue limit U/S --max N    bound a session's queue (--reset: as configured)
  broker snapshot-key ID            print a new snapshot key line (ID:HEX) for --snapshot-keys
  broker help                       this text

Run "broker serve -h", "broker token add -h", "broker sessions log -h" or
"broker queue limit -h" for the flags of each.
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
	case "snapshot-key":
		if len(args) == 2 && (args[1] == "-h" || args[1] == "--help" || args[1] == "-help") {
			fmt.Fprintln(stdout, "broker snapshot-key ID: print a new snapshot key line (ID:HEX, 64 hex digits) for --snapshot-keys;\nID is 1-32 bytes without ':', ',', '#', spaces or a leading '-'")
			return nil
		}
		if len(args) != 2 || strings.HasPrefix(args[1], "-") {
			return usagef("snapshot-key: want one key id (not a flag), e.g. broker snapshot-key k2026")
		}
		line, err := snapshot.NewKeyLine(args[1])
		if err != nil {
			return usagef("snapshot-key: %v", err)
		}
		fmt.Fprintln(stdout, line)
		return nil
	case "token":
		return tokenCmd(ctx, args[1:], stdout, stderr)
	case "sessions":
		return sessionsCmd(ctx, args[1:], stdout, stderr)
	case "queue":
		return queueCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usagef("unknown command %q\n\n%s", args[0], usage)
}
