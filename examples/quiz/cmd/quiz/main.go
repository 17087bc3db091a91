// Command quiz runs the quiz example: the server (a Tether broker with the
// quiz's session rule), token issuing, a self-answering candidate, and the
// report of a candidate's journal.
package main

import (
	"context"
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
	"github.com/f47fa0da/tether/examples/quiz"
	"github.com/f47fa0da/tether/sessions"
)

const usage = `quiz: the online quiz of seeds/000 on Tether.

Usage:
  quiz serve     [--data DIR] [--mqtt-addr ADDR] [--window 60m] [--tick 5s] [--liveness 15s]
  quiz token     [--data DIR] --user U [--name N] [--email E] [--valid 24h]
  quiz candidate [--url tcp://localhost:1883] --user U --token T [--pace 1s] [--tick 5s] [--busy-wait 20s]
  quiz report    [--data DIR] --user U

token and report work whether or not "quiz serve" runs on DIR.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintf(os.Stderr, "quiz: %v\n\n%s", err, usage)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "quiz:", err)
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
	data := fs.String("data", "quiz-data", "data directory of the quiz server")
	user := fs.String("user", "", "candidate's user name")
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
		if *user == "" && cmd != "serve" {
			return usageError{fmt.Errorf("%s: --user is required", cmd)}
		}
		return nil
	}
	switch cmd {
	case "serve":
		addr := fs.String("mqtt-addr", ":1883", "MQTT listen address")
		window := fs.Duration("window", quiz.DefaultWindow, "time a candidate has from the first start")
		tick := fs.Duration("tick", 5*time.Second, "how often candidates get the time left")
		liveness := fs.Duration("liveness", 15*time.Second, "silence after which a device no longer holds its quiz")
		if err := parse(); err != nil {
			return err
		}
		return serve(ctx, *data, *addr, *window, *tick, *liveness, stdout, stderr)
	case "token":
		name := fs.String("name", "", "candidate's name")
		email := fs.String("email", "", "candidate's email")
		valid := fs.Duration("valid", 24*time.Hour, "how long the token is valid")
		if err := parse(); err != nil {
			return err
		}
		var issued broker.TokenIssued
		nt := auth.NewToken{User: *user, Name: *name, Email: *email, Role: auth.RoleDevice, ValidUntil: time.Now().Add(*valid)}
		if err := broker.RunAdmin(ctx, *data, "token.add", nt, &issued); err != nil {
			return err
		}
		fmt.Fprintln(stdout, issued.Token)
		return nil
	case "candidate":
		cfg := client.DefaultConfig()
		fs.StringVar(&cfg.URL, "url", "tcp://localhost:1883", "broker URL")
		fs.StringVar(&cfg.Token, "token", os.Getenv("QUIZ_TOKEN"), "candidate's auth token (default $QUIZ_TOKEN)")
		fs.DurationVar(&cfg.TickInterval, "tick", cfg.TickInterval, "the server's tick interval (the candidate pings at this rate)")
		c := &quiz.Candidate{Out: stdout}
		fs.DurationVar(&c.Pace, "pace", time.Second, "time spent on each question")
		fs.DurationVar(&c.BusyWait, "busy-wait", 20*time.Second, "how long to retry while the quiz is open on another device")
		if err := parse(); err != nil {
			return err
		}
		cfg.User = *user
		c.Client = cfg
		err := c.Run(ctx)
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			fmt.Fprintln(stdout, "stopped: run the candidate again to resume")
			return nil
		}
		return err
	case "report":
		if err := parse(); err != nil {
			return err
		}
		return quiz.Report(ctx, stdout, *data, *user)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}

// serve runs a Tether broker whose quiz session is exclusive, with the
// window from the first start, until ctx ends.
func serve(ctx context.Context, data, addr string, window, tick, liveness time.Duration, stdout, stderr io.Writer) error {
	cfg := broker.DefaultConfig()
	cfg.DataDir, cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr = data, addr, "", ""
	cfg.Sessions.TickInterval = tick
	cfg.Sessions.Rules = []sessions.Rule{quiz.Rule(window, liveness)}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	b, err := broker.Open(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "quiz server on %s (data %s): window %s, ticks every %s; Ctrl-C stops it\n",
		b.Addrs().MQTT, data, window, tick)
	<-ctx.Done()
	return b.Close()
}
