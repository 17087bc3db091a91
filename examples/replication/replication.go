// Command replication shows client-side session replication: a device works
// against one broker, that broker is destroyed — its process killed with
// SIGKILL and its data directory deleted — and the device carries on against
// a second broker with its memento and phase intact, because it kept the
// sealed snapshot the first broker sent it.
//
//	go run ./examples/replication
//
// Both brokers are the real broker binary (built from cmd/broker unless
// -broker-bin names one), each a child process with its own data directory.
// They share only the snapshot keys (in production: a key file given to
// every broker with TETHER_SNAPSHOT_KEYS or --snapshot-keys). The device
// buys with the binary's demo.buy call, an exactly-once call whose memento
// commits with it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/snapshot"
)

func main() {
	bin := flag.String("broker-bin", "", "broker binary to run (default: build cmd/broker)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if _, err := run(ctx, os.Stdout, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "replication:", err)
		os.Exit(1)
	}
}

// progress is the device's memento: how far its purchase has gone.
type progress struct {
	Cart   []string `json:"cart"`
	Step   int      `json:"step"`
	Bought int      `json:"bought"`
}

// outcome is what happened, for the test to check.
type outcome struct {
	Killed      string       // how broker 1's process ended
	DataDirGone bool         // broker 1's data directory no longer exists
	OnBroker1   progress     // the device's progress when broker 1 died
	Resumed     client.Begun // the device's begin on broker 2, presenting its blob
	BuyCount    int64        // demo.buy's reply on broker 2 (that broker's own counter)
	Carried     progress     // the progress the device committed on broker 2
	Final       client.Begun // a later begin on broker 2 by a device that kept nothing
}

// device is the application on the gadget: it keeps the latest sealed
// snapshot the way it would keep it on flash.
type device struct {
	mu   sync.Mutex
	blob string
	n    int
}

func (d *device) keep(blob string) { d.mu.Lock(); d.blob, d.n = blob, d.n+1; d.mu.Unlock() }

func (d *device) kept() (string, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.blob, d.n
}

func run(ctx context.Context, out io.Writer, bin string) (res outcome, err error) {
	work, err := os.MkdirTemp("", "tether-replication-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		if bin, err = buildBroker(ctx, work); err != nil {
			return res, err
		}
	}
	keys, err := snapshot.NewKeyLine("k1")
	if err != nil {
		return res, err
	}
	dev := &device{}

	// Broker 1: the device begins, fills its cart and buys twice.
	dir1, err := os.MkdirTemp(work, "broker-1-")
	if err != nil {
		return res, err
	}
	b1, token1, err := open(ctx, bin, dir1, keys)
	if err != nil {
		return res, err
	}
	defer b1.stop()
	d1, err := dial(ctx, b1, token1, "", dev)
	if err != nil {
		return res, err
	}
	defer d1.Close()
	if _, err := d1.Begin(ctx); err != nil {
		return res, err
	}
	p := progress{Cart: []string{"kettle", "lamp"}, Step: 1}
	phase := "shopping"
	if err := d1.Remember(ctx, p, &phase); err != nil {
		return res, err
	}
	for range 2 {
		p.Step, p.Bought = p.Step+1, p.Bought+1
		if _, err := d1.Call(ctx, "demo.buy", nil, p); err != nil {
			return res, err
		}
	}
	phase = "checkout"
	if err := d1.Remember(ctx, p, &phase); err != nil {
		return res, err
	}
	// A snapshot is written before its request's reply, on the same
	// connection: each is kept by now (begin, remember, two calls, remember).
	blob, n := dev.kept()
	if n != 5 {
		return res, fmt.Errorf("the device kept %d snapshots from broker 1, want 5", n)
	}
	res.OnBroker1 = p
	fmt.Fprintf(out, "broker 1: bought %d, step %d, phase %q; the device keeps a %d-byte sealed snapshot\n", p.Bought, p.Step, phase, len(blob))

	// Broker 1 is destroyed: kill -9, then its data directory is deleted.
	if res.Killed, err = b1.kill(ctx); err != nil {
		return res, err
	}
	if err := os.RemoveAll(dir1); err != nil {
		return res, err
	}
	_, err = os.Stat(dir1)
	res.DataDirGone = errors.Is(err, os.ErrNotExist)
	d1.Close()
	fmt.Fprintf(out, "broker 1: destroyed (%s, data directory deleted)\n", res.Killed)

	// Broker 2 has never heard of the session; the device presents its snapshot.
	dir2, err := os.MkdirTemp(work, "broker-2-")
	if err != nil {
		return res, err
	}
	b2, token2, err := open(ctx, bin, dir2, keys)
	if err != nil {
		return res, err
	}
	defer b2.stop()
	d2, err := dial(ctx, b2, token2, blob, dev)
	if err != nil {
		return res, err
	}
	defer d2.Close()
	if res.Resumed, err = d2.Begin(ctx); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "broker 2: begin restored memento %s, phase %q, crashed=%v, next call seq %d\n",
		res.Resumed.Memento, res.Resumed.Phase, res.Resumed.Crashed, res.Resumed.NextSeq)

	// The device carries on from its memento, as if nothing had happened.
	var resumed progress
	if err := json.Unmarshal(res.Resumed.Memento, &resumed); err != nil {
		return res, fmt.Errorf("restored memento %s: %w", res.Resumed.Memento, err)
	}
	resumed.Step, resumed.Bought = resumed.Step+1, resumed.Bought+1
	reply, err := d2.Call(ctx, "demo.buy", nil, resumed)
	if err != nil {
		return res, err
	}
	var shop struct {
		Count int64 `json:"count"`
	}
	if err := json.Unmarshal(reply, &shop); err != nil {
		return res, fmt.Errorf("demo.buy reply %s: %w", reply, err)
	}
	res.BuyCount = shop.Count
	resumed.Step++
	phase = "paid"
	if err := d2.Remember(ctx, resumed, &phase); err != nil {
		return res, err
	}
	res.Carried = resumed
	fmt.Fprintf(out, "broker 2: bought %d in all, step %d, phase %q (demo.buy's own counter says %d: "+
		"application state stayed on broker 1, the memento came with the device)\n", resumed.Bought, resumed.Step, phase, shop.Count)
	d2.Close()

	// A device that kept nothing begins on broker 2: the session is there.
	d3, err := dial(ctx, b2, token2, "", &device{})
	if err != nil {
		return res, err
	}
	defer d3.Close()
	if res.Final, err = d3.Begin(ctx); err != nil {
		return res, err
	}
	fmt.Fprintf(out, "broker 2: a later begin finds memento %s, phase %q\n", res.Final.Memento, res.Final.Phase)
	return res, d3.End(ctx)
}

// open issues alice's token on dir, then starts a broker on it.
func open(ctx context.Context, bin, dir, keys string) (*brokerProcess, string, error) {
	token, err := issueToken(ctx, bin, dir, "alice")
	if err != nil {
		return nil, "", err
	}
	b, err := startBroker(ctx, bin, dir, keys)
	return b, token, err
}

func dial(ctx context.Context, b *brokerProcess, token, blob string, dev *device) (*client.Client, error) {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = b.url(), "alice", token, "cart"
	cfg.Snapshot, cfg.OnSnapshot = blob, dev.keep
	return client.Dial(ctx, cfg)
}
