// Command hellopersistent is the shop of seeds/001 ("Persistent Sessions")
// on Tether: a shopper that crashes at random points and restarts, and
// still buys every item of its list exactly once. No toaster bought twice.
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
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
)

const usage = `hellopersistent: the shop of seeds/001 on Tether.

Usage:
  hellopersistent serve    [--data DIR] [--mqtt-addr :1883]
  hellopersistent token    [--data DIR] [--user alice] [--valid 24h]
  hellopersistent shop     [--url tcp://localhost:1883] [--user alice] --token T
                           [--seed N] [--crash-rate 0.3] [--in-flight-wait 0] [--items a,b,…]
  hellopersistent counters [--url tcp://localhost:1883] [--user alice] --token T

token works whether or not "serve" runs on DIR. --token defaults to $SHOP_TOKEN.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintf(os.Stderr, "hellopersistent: %v\n\n%s", err, usage)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "hellopersistent:", err)
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
	data := fs.String("data", "shop-data", "data directory of the shop server")
	ccfg := client.DefaultConfig()
	fs.StringVar(&ccfg.User, "user", "alice", "shopper's user name")
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
		fs.StringVar(&ccfg.Token, "token", os.Getenv("SHOP_TOKEN"), "shopper's auth token (default $SHOP_TOKEN)")
	}
	switch cmd {
	case "serve":
		addr := fs.String("mqtt-addr", ":1883", "MQTT listen address")
		if err := parse(); err != nil {
			return err
		}
		return serve(ctx, *data, *addr, stdout, stderr)
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
	case "shop":
		clientFlags()
		seed := fs.Uint64("seed", 0, "seed of the crash points (0: from the clock)")
		rate := fs.Float64("crash-rate", 0.3, "probability of a crash on each step")
		items := fs.String("items", strings.Join(DefaultList, ","), "the shopping list, comma-separated")
		s := &Shopper{Out: stdout}
		fs.DurationVar(&s.InFlightWait, "in-flight-wait", 0, "how long a shopper crashing in flight waits for the reply")
		fs.DurationVar(&s.Reboot, "reboot", 50*time.Millisecond, "how long a crashed shopper takes to start again")
		if err := parse(); err != nil {
			return err
		}
		if *seed == 0 {
			*seed = uint64(time.Now().UnixNano())
		}
		fmt.Fprintf(stdout, "seed %d, crash rate %.2f\n", *seed, *rate)
		s.Client, s.List, s.Plan = ccfg, strings.Split(*items, ","), NewPlan(*seed, *rate)
		if _, err := s.Run(ctx); err != nil {
			return err
		}
		return printCounters(ctx, ccfg, stdout)
	case "counters":
		clientFlags()
		if err := parse(); err != nil {
			return err
		}
		return printCounters(ctx, ccfg, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}

// serve runs a Tether broker with the shop's handlers until ctx ends.
func serve(ctx context.Context, data, addr string, stdout, stderr io.Writer) error {
	cfg := broker.DefaultConfig()
	cfg.DataDir, cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr = data, addr, "", ""
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := broker.Open(cfg)
	if err != nil {
		return err
	}
	registerShop(b)
	fmt.Fprintf(stdout, "shop on %s (data %s); Ctrl-C stops it\n", b.Addrs().MQTT, data)
	<-ctx.Done()
	return b.Close()
}

// printCounters prints every item's count, one per line, by name.
func printCounters(ctx context.Context, cfg client.Config, stdout io.Writer) error {
	counts, err := Counters(ctx, cfg)
	if err != nil {
		return err
	}
	items := make([]string, 0, len(counts))
	for item := range counts {
		items = append(items, item)
	}
	sort.Strings(items)
	fmt.Fprintln(stdout, "counters:")
	for _, item := range items {
		fmt.Fprintf(stdout, "  %-10s %d\n", item, counts[item])
	}
	return nil
}
