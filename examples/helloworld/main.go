// Command helloworld is the hello world of seeds/001 ("Hello World") on
// Tether: a pulse notifies two logical sessions of one user, client1 every
// 2nd tick and client2 every 3rd, each queue limited to the newest 10; a
// device program prints what its session gets; a status call shows every
// queue's contents.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
)

const usage = `helloworld: the hello world of seeds/001 on Tether.

Usage:
  helloworld serve  [--data DIR] [--mqtt-addr :1883] [--user alice] [--every 1s] [--quiet]
  helloworld token  [--data DIR] [--user alice] [--valid 24h]
  helloworld device [--url tcp://localhost:1883] [--user alice] --token T [--session client1]
  helloworld status [--url tcp://localhost:1883] [--user alice] --token T [--json]

token works whether or not "serve" runs on DIR. --token defaults to $HELLO_TOKEN.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintf(os.Stderr, "helloworld: %v\n\n%s", err, usage)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "helloworld:", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("no command")}
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "hello-data", "data directory of the server")
	ccfg := client.DefaultConfig()
	fs.StringVar(&ccfg.User, "user", "alice", "the user whose sessions are notified")
	parse := func() error {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		if fs.NArg() > 0 {
			return usageError{fmt.Errorf("%s: unexpected argument %q", cmd, fs.Arg(0))}
		}
		return nil
	}
	clientFlags := func() {
		fs.StringVar(&ccfg.URL, "url", "tcp://localhost:1883", "broker URL")
		fs.StringVar(&ccfg.Token, "token", os.Getenv("HELLO_TOKEN"), "the user's auth token (default $HELLO_TOKEN)")
	}
	switch cmd {
	case "serve":
		addr := fs.String("mqtt-addr", ":1883", "MQTT listen address")
		every := fs.Duration("every", time.Second, "pulse interval")
		quiet := fs.Bool("quiet", false, "do not print a line per notification")
		if err := parse(); err != nil {
			return err
		}
		if *every <= 0 {
			return usageError{fmt.Errorf("serve: --every must be positive, got %s", *every)}
		}
		out := stdout
		if *quiet {
			out = nil
		}
		return serve(ctx, *data, *addr, ccfg.User, *every, stdout, out, stderr)
	case "token":
		valid := fs.Duration("valid", 24*time.Hour, "how long the token is valid")
		if err := parse(); err != nil {
			return err
		}
		var issued broker.TokenIssued
		nt := auth.NewToken{User: ccfg.User, Role: auth.RoleDevice, ValidUntil: time.Now().Add(*valid)}
		if err := broker.RunAdmin(ctx, *data, "token.add", nt, &issued); err != nil {
			return err
		}
		fmt.Fprintln(stdout, issued.Token)
		return nil
	case "device":
		clientFlags()
		fs.StringVar(&ccfg.Session, "session", Client1, "the session to receive: client1, client2, or any other")
		if err := parse(); err != nil {
			return err
		}
		return Device(ctx, ccfg, stdout)
	case "status":
		clientFlags()
		asJSON := fs.Bool("json", false, "print the reply as JSON")
		if err := parse(); err != nil {
			return err
		}
		st, err := StatusOf(ctx, ccfg)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		return printStatus(stdout, st)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}

// serve runs a Tether broker with the status call and the pulse until ctx
// ends. It says where it listens on stdout; the pulse writes to pulseOut
// (nil: quiet).
func serve(ctx context.Context, data, addr, user string, every time.Duration, stdout, pulseOut, stderr io.Writer) error {
	cfg := broker.DefaultConfig()
	cfg.DataDir, cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr = data, addr, "", ""
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := broker.Open(cfg)
	if err != nil {
		return err
	}
	registerStatus(b)
	p := &Pulse{B: b, User: user, Out: pulseOut}
	if err := p.Init(); err != nil {
		return errors.Join(err, b.Close())
	}
	fmt.Fprintf(stdout, "hello world on %s (data %s): a pulse every %s for %s; Ctrl-C stops it\n", b.Addrs().MQTT, data, every, user)
	err = p.Run(ctx, every, 0)
	if errors.Is(err, ctx.Err()) {
		err = nil // stopped
	}
	return errors.Join(err, b.Close())
}
