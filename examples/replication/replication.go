// Command replication shows client-side session replication: a device works
// against one broker, that broker is destroyed (process gone, data
// directory deleted), and the device carries on against a second broker
// with its memento and phase intact, because it kept the sealed snapshot
// the first broker sent it.
//
//	go run ./examples/replication
//
// Both brokers share the snapshot keys (in production: a key file given to
// every broker with TETHER_SNAPSHOT_KEYS or --snapshot-keys); nothing else
// is shared between them.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/snapshot"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "replication:", err)
		os.Exit(1)
	}
}

// outcome is what the device saw on the second broker.
type outcome struct {
	Memento string
	Phase   string
	Crashed bool
}

func run(ctx context.Context, out io.Writer) (outcome, error) {
	line, err := snapshot.NewKeyLine("k1")
	if err != nil {
		return outcome{}, err
	}
	keys, err := snapshot.ParseKeys(strings.NewReader(line))
	if err != nil {
		return outcome{}, err
	}
	var kept struct {
		sync.Mutex
		blob string
		n    int
	}
	keep := func(b string) { kept.Lock(); kept.blob, kept.n = b, kept.n+1; kept.Unlock() }
	latest := func() (string, int) { kept.Lock(); defer kept.Unlock(); return kept.blob, kept.n }

	// Broker 1: the device begins, remembers its progress, moves to a new phase.
	dir1, err := os.MkdirTemp("", "tether-replication-1-")
	if err != nil {
		return outcome{}, err
	}
	b1, token1, err := start(dir1, keys)
	if err != nil {
		return outcome{}, err
	}
	d1, err := dial(ctx, b1, token1, "", keep)
	if err != nil {
		return outcome{}, err
	}
	if _, err := d1.Begin(ctx); err != nil {
		return outcome{}, err
	}
	phase := "checkout"
	if err := d1.Remember(ctx, map[string]any{"cart": []string{"kettle", "lamp"}, "step": 3}, &phase); err != nil {
		return outcome{}, err
	}
	// One snapshot per request that changed the session: begin, then remember.
	for _, n := latest(); n < 2; _, n = latest() {
		select {
		case <-ctx.Done():
			return outcome{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	blob, _ := latest()
	fmt.Fprintf(out, "broker 1: remembered step 3, phase %q; the device keeps a %d-byte sealed snapshot\n", phase, len(blob))

	// Broker 1 is destroyed: its process and its data directory are gone.
	d1.Close()
	_ = b1.Close()
	if err := os.RemoveAll(dir1); err != nil {
		return outcome{}, err
	}
	fmt.Fprintln(out, "broker 1: destroyed (closed, data directory deleted)")

	// Broker 2 has never heard of the session; the device presents its snapshot.
	dir2, err := os.MkdirTemp("", "tether-replication-2-")
	if err != nil {
		return outcome{}, err
	}
	defer os.RemoveAll(dir2)
	b2, token2, err := start(dir2, keys)
	if err != nil {
		return outcome{}, err
	}
	defer b2.Close()
	d2, err := dial(ctx, b2, token2, blob, keep)
	if err != nil {
		return outcome{}, err
	}
	defer d2.Close()
	got, err := d2.Begin(ctx)
	if err != nil {
		return outcome{}, err
	}
	fmt.Fprintf(out, "broker 2: begin restored memento %s, phase %q, crashed=%v\n", got.Memento, got.Phase, got.Crashed)
	return outcome{Memento: string(got.Memento), Phase: got.Phase, Crashed: got.Crashed}, d2.End(ctx)
}

// start opens a broker on dir with loopback listeners and issues alice's token.
func start(dir string, keys []snapshot.Key) (*broker.Broker, string, error) {
	cfg := broker.DefaultConfig()
	cfg.DataDir, cfg.SnapshotKeys = dir, keys
	cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "", "", "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	b, err := broker.Open(cfg)
	if err != nil {
		return nil, "", err
	}
	token, _, err := b.Tokens().Add(auth.NewToken{User: "alice", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	return b, token, err
}

func dial(ctx context.Context, b *broker.Broker, token, blob string, keep func(string)) (*client.Client, error) {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = "tcp://"+b.Addrs().MQTT, "alice", token, "cart"
	cfg.Snapshot, cfg.OnSnapshot = blob, keep
	return client.Dial(ctx, cfg)
}
