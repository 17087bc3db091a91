package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/faults"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/queues"
)

// The simulator's application: exactly-once calls whose effect the
// checks can count. sim.add adds one to the session's counter (in the
// user's application state, committed with the call); sim.get reads it.

// addArgs are sim.add's arguments: the seq the device believes it is at,
// so that a retried call is byte-for-byte the same request.
type addArgs struct {
	K uint64 `json:"k"`
}

// countReply is what sim.add and sim.get answer.
type countReply struct {
	Count uint64 `json:"count"`
}

// simFaults are deliberate bugs for proving that the checks can fail.
type simFaults struct {
	doubleApplyAt int64 // the Nth sim.add handled by this process applies its effect twice (0: never)
}

// simHandlers returns the call handlers of the simulator's application.
func simHandlers(f simFaults) map[string]nonce.Handler {
	var adds atomic.Int64
	counterKey := func(c *nonce.Call) string { return "sim/count/" + c.Session }
	read := func(c *nonce.Call) (uint64, error) {
		var n uint64
		_, err := c.State.GetJSON(counterKey(c), &n)
		return n, err
	}
	return map[string]nonce.Handler{
		"sim.add": func(_ context.Context, c *nonce.Call) (any, error) {
			n, err := read(c)
			if err != nil {
				return nil, err
			}
			n++
			if f.doubleApplyAt > 0 && adds.Add(1) == f.doubleApplyAt {
				n++ // the fault: the effect applied twice
			}
			if err := c.State.SetJSON(counterKey(c), n); err != nil {
				return nil, err
			}
			return countReply{Count: n}, nil
		},
		"sim.get": func(_ context.Context, c *nonce.Call) (any, error) {
			n, err := read(c)
			return countReply{Count: n}, err
		},
	}
}

// noDropLimits are queue limits that neither the simulator nor a
// benchmark ever reaches: no notification meets a policy drop.
var noDropLimits = queues.Limits{MaxMessages: 1 << 20, MaxBytes: 1 << 30, Policy: queues.DropOldest}

// simBrokerConfig is the broker the simulator runs: queues large enough
// that the checks never meet a policy drop.
func simBrokerConfig(dataDir, mqttAddr, wsAddr string, f simFaults, log *slog.Logger) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.DataDir, cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr, cfg.AdminAddr = dataDir, mqttAddr, wsAddr, "", "127.0.0.1:0"
	cfg.WSOrigins = []string{"*"}
	cfg.QueueLimits = noDropLimits
	cfg.MaxClients = 1 << 20
	cfg.Handlers = simHandlers(f)
	cfg.Logger = log
	return cfg
}

// brokerCmd runs `device-sim broker`: a Tether broker with the simulator's
// handlers, for --broker-cmd (so that device-sim can kill -9 it). It
// prints READY once serving and stops on SIGINT/SIGTERM.
func brokerCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "data", "data directory")
	mqttAddr := fs.String("mqtt-addr", "127.0.0.1:1883", "MQTT over TCP address")
	wsAddr := fs.String("ws-addr", "", `MQTT over WebSocket address ("" disables)`)
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	var f simFaults
	fs.Int64Var(&f.doubleApplyAt, "fault-double-apply", 0, "TEST ONLY: the Nth sim.add call applies its effect twice")
	dropNotify := fs.Int64("fault-drop-notify", 0, "TEST ONLY: the Nth notify is acknowledged and never queued")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dropNotify < 0 || f.doubleApplyAt < 0 {
		return usagef("broker: fault counts start at 1 (0: off)")
	}
	faults.DropNotifyAt(*dropNotify)
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return usagef("broker: --log-level %q", *level)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	b, err := broker.Open(simBrokerConfig(*dataDir, *mqttAddr, *wsAddr, f, log))
	if err != nil {
		return err
	}
	a := b.Addrs()
	fmt.Fprintf(stdout, "READY mqtt=%s ws=%s\n", a.MQTT, a.WS)
	<-ctx.Done()
	return b.Close()
}

// decodeCount reads a sim.add or sim.get reply.
func decodeCount(raw json.RawMessage) (uint64, error) {
	var r countReply
	err := json.Unmarshal(raw, &r)
	return r.Count, err
}
