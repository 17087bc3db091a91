package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
)

// pubsubConfig is one `bench pubsub` run: notifiers publishers, each
// sending messages QoS 1 to its own receiver.
type pubsubConfig struct {
	notifiers int
	messages  int // per notifier
	inflight  int // unacknowledged publishes per notifier
	payload   int // padding bytes in each message
	targets   []string
	rounds    int    // every target runs once per round, the rounds one after another
	inProcess bool   // run Tether and mochi in this process, not as their own
	bin       string // Tether's broker binary, when it runs as its own process
	benchFlags
}

// pubsubResult is one target's outcome.
type pubsubResult struct {
	Target    string        `json:"target"`
	Round     int           `json:"round"` // from 1
	What      string        `json:"what"`
	Messages  int           `json:"messages"`
	Acked     int           `json:"acked"`     // PUBACKs the notifiers got
	Delivered int           `json:"delivered"` // distinct messages the receivers got
	Elapsed   time.Duration `json:"elapsed_ns"`
	Rate      float64       `json:"msgs_per_s"` // delivered / (last delivery - first publish)
	PubRate   float64       `json:"acks_per_s"` // PUBACKs / (last PUBACK - first publish)
	Latency   Summary       `json:"notify_to_deliver"`
	Lost      int           `json:"lost,omitempty"` // plain targets only: acknowledged, then dropped by the broker
	// BrokerCPU is the broker process's CPU time (user+system) per
	// delivered message over the run; 0 when it runs inside device-sim.
	BrokerCPU time.Duration `json:"broker_cpu_per_msg_ns,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// pubsubTargets are the brokers `bench pubsub` knows, in run order.
var pubsubTargets = map[string]string{
	"mosquitto":      "Debian mosquitto, plain QoS 1 pub/sub (no persistence)",
	"mochi":          "bare embedded mochi (default capabilities, AllowHook), plain QoS 1 pub/sub",
	"tether-plain":   "Tether, plain QoS 1 pub/sub on anonymous topics (no queues, not durable)",
	"tether":         "Tether durable notifications: service notifier -> fsynced queue -> client SDK device, acked",
	"tether-enqueue": "Tether durable enqueue only: same notifiers, no device attached (msgs/s = PUBACKs/s)",
}

func benchPubsubCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := pubsubConfig{}
	fs := flag.NewFlagSet("bench pubsub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&c.notifiers, "notifiers", 10, "notifiers, each with its own receiving session")
	fs.IntVar(&c.messages, "messages", 5000, "messages per notifier")
	fs.IntVar(&c.inflight, "inflight", 10, "unacknowledged publishes per notifier (1 = wait for each PUBACK)")
	fs.IntVar(&c.payload, "payload", 64, "padding bytes per message")
	targets := fs.String("targets", "mosquitto,mochi,tether-plain,tether,tether-enqueue", "brokers to compare, in run order")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of every target in turn, so that ratios come from runs minutes apart at most; the table shows each target's median round")
	fs.BoolVar(&c.inProcess, "in-process", false, "run Tether and mochi inside device-sim (so that --cpuprofile covers them) instead of as processes of their own, as mosquitto runs")
	c.benchFlags.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, t := range strings.Split(*targets, ",") {
		if _, ok := pubsubTargets[t]; !ok {
			return usagef("bench pubsub: unknown target %q", t)
		}
		c.targets = append(c.targets, t)
	}
	if c.notifiers < 1 || c.messages < 1 || c.inflight < 1 || c.rounds < 1 {
		return usagef("bench pubsub: --notifiers, --messages, --inflight and --rounds must be at least 1")
	}
	if !c.inProcess && slices.ContainsFunc(c.targets, func(t string) bool { return strings.HasPrefix(t, "tether") }) {
		dir, cleanup, err := tempDir("device-sim-pubsub-bin-", false, stderr)
		if err != nil {
			return err
		}
		defer cleanup()
		if c.bin, err = brokerBinary(ctx, c.brokerBin, dir); err != nil {
			return err
		}
	}
	stopProf, err := c.profile()
	if err != nil {
		return err
	}
	defer stopProf()
	var results []pubsubResult
	for round := 1; round <= c.rounds; round++ {
		for _, t := range c.targets {
			fmt.Fprintf(stderr, "bench pubsub: round %d of %d: %s: %d notifiers x %d messages, inflight %d ...\n",
				round, c.rounds, t, c.notifiers, c.messages, c.inflight)
			r := runPubsub(ctx, c, t, stderr)
			r.Round = round
			if r.Error != "" {
				fmt.Fprintf(stderr, "bench pubsub: %s: %s\n", t, r.Error)
			}
			results = append(results, r)
			runtime.GC()
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	table := pubsubTable(c, results)
	if err := c.publish(stdout, "pubsub", table, results, func() string { return pubsubDoc(c, table) }); err != nil {
		return err
	}
	for _, r := range results {
		if r.Error != "" {
			return fmt.Errorf("bench pubsub: %s failed: %s", r.Target, r.Error)
		}
	}
	return nil
}

// pubsubEnv is a started target: where notifiers publish and how a
// receiver is attached.
type pubsubEnv struct {
	url            string
	pubUser, pubPw string
	topic          func(i int) string
	wrap           bool // payloads go in Tether's notify envelope
	enqueueOnly    bool // nothing is delivered: the PUBACKs are the result
	durable        bool // a PUBACK promises delivery: every message must arrive
	// receive starts receiver i, calling got with each message's benchmark
	// data (Tether: the notification's data; plain: the payload).
	receive func(ctx context.Context, i int, got func([]byte)) (stop func(), err error)
	close   func()
	pid     int // the broker's process, 0 when it runs inside device-sim
}

func runPubsub(ctx context.Context, c pubsubConfig, target string, stderr io.Writer) (res pubsubResult) {
	res = pubsubResult{Target: target, What: pubsubTargets[target], Messages: c.notifiers * c.messages}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	dir, cleanup, err := tempDir("device-sim-pubsub-", c.keep, stderr)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer cleanup()
	env, err := startPubsubTarget(ctx, c, target, dir)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer env.close()

	var (
		lat       Latency
		delivered atomic.Int64
		lastDeliv atomic.Int64
		allIn     = make(chan struct{})
		allOnce   sync.Once
		total     = int64(res.Messages)
	)
	for i := range c.notifiers {
		seen := make([]bool, c.messages)
		var mu sync.Mutex
		stop, err := env.receive(ctx, i, func(b []byte) {
			now := time.Now()
			d, err := decodeData(b)
			if err != nil || d.I < 0 || d.I >= len(seen) {
				return
			}
			mu.Lock()
			dup := seen[d.I]
			seen[d.I] = true
			mu.Unlock()
			if dup {
				return
			}
			lat.Add(now.Sub(time.Unix(0, d.T)))
			lastDeliv.Store(now.UnixNano())
			if delivered.Add(1) == total {
				allOnce.Do(func() { close(allIn) })
			}
		})
		if err != nil {
			res.Error = fmt.Sprintf("receiver %d: %v", i, err)
			return res
		}
		defer stop()
	}

	pubs := make([]paho.Client, c.notifiers)
	for i := range pubs {
		if pubs[i], err = dialMQTT(ctx, env.url, env.pubUser, env.pubPw, nil); err != nil {
			res.Error = fmt.Sprintf("notifier %d: %v", i, err)
			return res
		}
		defer pubs[i].Disconnect(100)
	}

	pad := padding(c.payload)
	var (
		acked   atomic.Int64
		lastAck atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		pubErr  error
	)
	cpu0, _ := cpuTime(env.pid)
	start := time.Now()
	for i, cli := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := publishN(ctx, cli, env.topic(i), c.messages, c.inflight, func(k int) []byte { return encodeData(k, pad, env.wrap) })
			acked.Add(int64(n))
			lastAck.Store(time.Now().UnixNano())
			if err != nil {
				errOnce.Do(func() { pubErr = fmt.Errorf("notifier %d after %d PUBACKs: %w", i, n, err) })
			}
		}()
	}
	wg.Wait()
	if env.enqueueOnly {
		lastDeliv.Store(lastAck.Load())
		delivered.Store(acked.Load())
		allOnce.Do(func() { close(allIn) })
	}
	// Every publish is acknowledged: wait for the last delivery, or (when
	// a plain broker dropped some) for deliveries to stop.
	for quiet := time.NewTicker(100 * time.Millisecond); ; {
		select {
		case <-allIn:
		case <-ctx.Done():
		case <-quiet.C:
			if last := lastDeliv.Load(); env.durable || time.Since(time.Unix(0, max(last, lastAck.Load()))) < pubsubQuiet {
				continue
			}
		}
		quiet.Stop()
		break
	}
	res.Acked, res.Delivered = int(acked.Load()), int(delivered.Load())
	if cpu1, err := cpuTime(env.pid); err == nil && env.pid != 0 && res.Delivered > 0 {
		res.BrokerCPU = (cpu1 - cpu0) / time.Duration(res.Delivered)
	}
	if last := lastDeliv.Load(); last > 0 {
		res.Elapsed = time.Unix(0, last).Sub(start)
		res.Rate = float64(res.Delivered) / res.Elapsed.Seconds()
	}
	res.PubRate = float64(res.Acked) / time.Unix(0, lastAck.Load()).Sub(start).Seconds()
	res.Latency = lat.Summary()
	switch {
	case pubErr != nil:
		res.Error = pubErr.Error()
	case res.Delivered < res.Messages && env.durable:
		res.Error = fmt.Sprintf("only %d of %d messages delivered within %s", res.Delivered, res.Messages, c.timeout)
	case res.Delivered < res.Messages:
		// A plain QoS 1 subscriber that falls behind loses what overflows
		// its write queue, as it would with mosquitto's queue limit: a
		// result to report, not a failed run. Durable notifications never.
		res.Lost = res.Messages - res.Delivered
	}
	return res
}

// startPubsubTarget starts target on the data directory dir: as a process
// of its own (mosquitto always; Tether and mochi unless c.inProcess), so
// that every broker runs beside device-sim's clients as it would in
// production, scheduled by the kernel rather than by device-sim's Go
// runtime.
// pubsubQuiet is how long a plain target may deliver nothing, after the
// last PUBACK, before the messages still missing count as dropped.
const pubsubQuiet = 2 * time.Second

func startPubsubTarget(ctx context.Context, c pubsubConfig, target, dir string) (*pubsubEnv, error) {
	plainTopic := func(i int) string { return fmt.Sprintf("bench/%d", i) }
	plain := func(addr string, stop func(), pid int) *pubsubEnv {
		return &pubsubEnv{url: "tcp://" + addr, topic: plainTopic, receive: plainReceiver("tcp://"+addr, plainTopic), close: stop, pid: pid}
	}
	switch target {
	case "mosquitto":
		proc, addr, err := startMosquitto(ctx, dir)
		if err != nil {
			return nil, err
		}
		return plain(addr, func() { _ = proc.stop(5 * time.Second) }, proc.Pid()), nil
	case "mochi":
		if c.inProcess {
			srv, addr, err := startMochi("127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			return plain(addr, func() { _ = srv.Close() }, 0), nil
		}
		proc, addr, err := startMochiProcess(ctx)
		if err != nil {
			return nil, err
		}
		return plain(addr, func() { _ = proc.stop(5 * time.Second) }, proc.Pid()), nil
	case "tether-plain", "tether", "tether-enqueue":
		grants := map[auth.Role][]string{}
		if target != "tether-plain" {
			grants[auth.RoleService] = []string{"bench-notifier"}
			for i := range c.notifiers {
				grants[auth.RoleDevice] = append(grants[auth.RoleDevice], deviceUser(i))
			}
		}
		t, tokens, err := startBenchTether(ctx, c, dir, target == "tether-plain", grants)
		if err != nil {
			return nil, err
		}
		if target == "tether-plain" {
			return plain(t.addr, t.close, t.pid), nil
		}
		url := "tcp://" + t.addr
		receive := tetherReceiver(url, tokens)
		if target == "tether-enqueue" {
			receive = func(context.Context, int, func([]byte)) (func(), error) { return func() {}, nil }
		}
		return &pubsubEnv{
			url: url, pubUser: "bench-notifier", pubPw: tokens["bench-notifier"], wrap: true, enqueueOnly: target == "tether-enqueue", durable: true,
			topic:   func(i int) string { return "tether/notify/" + deviceUser(i) + "/s" },
			receive: receive,
			close:   t.close,
			pid:     t.pid,
		}, nil
	}
	return nil, fmt.Errorf("unknown target %q", target)
}

// benchTether is a Tether started for a benchmark, in this process or as
// the broker binary.
type benchTether struct {
	addr  string
	close func()
	pid   int // 0 in this process
}

// startBenchTether opens Tether on dir with MQTT on a free loopback port
// and queues of noDropLimits, with a token for each user of grants,
// returned by user. anonymous lets anyone use plain topics.
func startBenchTether(ctx context.Context, c pubsubConfig, dir string, anonymous bool, grants map[auth.Role][]string) (*benchTether, map[string]string, error) {
	tokens := map[string]string{}
	mint := func(issue func(users []string, role auth.Role) (map[string]string, error)) error {
		for role, users := range grants {
			toks, err := issue(users, role)
			if err != nil {
				return err
			}
			maps.Copy(tokens, toks)
		}
		return nil
	}
	if c.inProcess {
		b, err := openBenchTether(dir, anonymous)
		if err != nil {
			return nil, nil, err
		}
		if err := mint(func(users []string, role auth.Role) (map[string]string, error) {
			return addTokens(b.Tokens(), users, role)
		}); err != nil {
			_ = b.Close()
			return nil, nil, err
		}
		return &benchTether{addr: b.Addrs().MQTT, close: func() { _ = b.Close() }}, tokens, nil
	}
	// Tokens go straight into the data directory, before the broker opens it.
	if err := mint(func(users []string, role auth.Role) (map[string]string, error) { return mintTokens(dir, users, role) }); err != nil {
		return nil, nil, err
	}
	args := []string{"--queue-max", fmt.Sprint(noDropLimits.MaxMessages), "--queue-max-bytes", fmt.Sprint(noDropLimits.MaxBytes),
		"--demo-calls=false", "--max-clients", fmt.Sprint(4*c.notifiers + 100)}
	if anonymous {
		args = append(args, "--allow-anonymous")
	}
	proc, addr, err := startBrokerBinary(ctx, c.bin, dir, args...)
	if err != nil {
		return nil, nil, err
	}
	return &benchTether{addr: addr, close: func() { _ = proc.stop(10 * time.Second) }, pid: proc.Pid()}, tokens, nil
}

func deviceUser(i int) string { return fmt.Sprintf("bench-d%d", i) }

// openBenchTether opens an in-process Tether on dir: MQTT on a free
// loopback port, nothing else, queues large enough that no notification
// of the benchmark is dropped.
func openBenchTether(dir string, anonymous bool) (*broker.Broker, error) {
	cfg := broker.DefaultConfig()
	cfg.DataDir = dir
	cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "", "", "127.0.0.1:0"
	cfg.AllowAnonymous = anonymous
	cfg.QueueLimits = noDropLimits
	cfg.Logger = slog.New(slog.DiscardHandler)
	return broker.Open(cfg)
}

// plainReceiver subscribes an anonymous paho client to topic(i) at QoS 1.
func plainReceiver(url string, topic func(int) string) func(context.Context, int, func([]byte)) (func(), error) {
	return func(ctx context.Context, i int, got func([]byte)) (func(), error) {
		cli, err := dialMQTT(ctx, url, "", "", nil)
		if err != nil {
			return nil, err
		}
		tok := cli.Subscribe(topic(i), 1, func(_ paho.Client, m paho.Message) { got(m.Payload()) })
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			cli.Disconnect(0)
			return nil, errors.Join(errors.New("subscribe failed"), tok.Error())
		}
		return func() { cli.Disconnect(100) }, nil
	}
}

// tetherReceiver is a client SDK device of session deviceUser(i)/s: it
// begins, then passes each notification's data on and acknowledges it.
func tetherReceiver(url string, tokens map[string]string) func(context.Context, int, func([]byte)) (func(), error) {
	return func(ctx context.Context, i int, got func([]byte)) (func(), error) {
		cfg := client.DefaultConfig()
		cfg.URL, cfg.User, cfg.Token, cfg.Session = url, deviceUser(i), tokens[deviceUser(i)], "s"
		dev, err := client.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		if _, err := dev.Begin(ctx); err != nil {
			dev.Close()
			return nil, err
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-rctx.Done():
					return
				case n := <-dev.Notifications():
					got(n.Data)
					dev.Ack(n.Seq)
				}
			}
		}()
		return func() { cancel(); <-done; dev.Close() }, nil
	}
}

// medianRounds returns each target's median round by msgs/s (the lower
// of the two middle ones for an even count), in the order of targets.
func medianRounds(targets []string, rs []pubsubResult) []pubsubResult {
	var out []pubsubResult
	for _, t := range targets {
		var of []pubsubResult
		for _, r := range rs {
			if r.Target == t {
				of = append(of, r)
			}
		}
		if len(of) == 0 {
			continue
		}
		slices.SortStableFunc(of, func(a, b pubsubResult) int { return cmp.Compare(a.Rate, b.Rate) })
		out = append(out, of[(len(of)-1)/2])
	}
	return out
}

// roundRatios returns durable Tether's rate over other's, one per round
// in which both ran, sorted.
func roundRatios(rs []pubsubResult, other string) []float64 {
	tether, base := map[int]float64{}, map[int]float64{}
	for _, r := range rs {
		switch {
		case r.Rate <= 0:
		case r.Target == "tether":
			tether[r.Round] = r.Rate
		case r.Target == other:
			base[r.Round] = r.Rate
		}
	}
	var out []float64
	for round, t := range tether {
		if o, ok := base[round]; ok {
			out = append(out, t/o)
		}
	}
	slices.Sort(out)
	return out
}

// pubsubTable renders each target's median round and the ratios of
// durable Tether, the median of the rounds' ratios.
func pubsubTable(c pubsubConfig, all []pubsubResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "notify->deliver, QoS 1: %d notifiers -> %d receivers, %d messages each (%d in all), %d unacknowledged per notifier, %d-byte padding\n",
		c.notifiers, c.notifiers, c.messages, c.notifiers*c.messages, c.inflight, c.payload)
	if c.rounds > 1 {
		fmt.Fprintf(&b, "%d rounds of every target in turn; each row is that target's median round by msgs/s\n", c.rounds)
	}
	b.WriteString("\n")
	rs := medianRounds(c.targets, all)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tdelivered\tseconds\tmsgs/s\tPUBACKs/s\tp50 ms\tp99 ms\tbroker CPU µs/msg\t")
	for _, r := range rs {
		p50, p99 := "-", "-"
		if r.Latency.Count > 0 {
			p50, p99 = ms(r.Latency.P50), ms(r.Latency.P99)
		}
		cpu := "-"
		if r.BrokerCPU > 0 {
			cpu = formatFloat(float64(r.BrokerCPU)/float64(time.Microsecond), 0)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Target, thousands(int64(r.Delivered)), formatFloat(r.Elapsed.Seconds(), 2),
			thousands(int64(r.Rate)), thousands(int64(r.PubRate)), p50, p99, cpu)
	}
	tw.Flush()
	b.WriteString("\n")
	for _, r := range rs {
		if r.Lost > 0 {
			fmt.Fprintf(&b, "%s dropped %s of %s acknowledged messages: a subscriber's write queue overflowed (plain QoS 1 has no delivery window)\n",
				r.Target, thousands(int64(r.Lost)), thousands(int64(r.Acked)))
		}
	}
	for _, other := range []string{"mosquitto", "mochi", "tether-plain", "tether-enqueue"} {
		ratios := roundRatios(all, other)
		if len(ratios) == 0 {
			continue
		}
		fmt.Fprintf(&b, "durable Tether / %s: %.2fx", other, ratios[(len(ratios)-1)/2])
		if len(ratios) > 1 {
			each := make([]string, len(ratios))
			for i, x := range ratios {
				each[i] = fmt.Sprintf("%.2f", x)
			}
			fmt.Fprintf(&b, " (median of the rounds: %s)", strings.Join(each, ", "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func pubsubDoc(c pubsubConfig, table string) string {
	var b strings.Builder
	b.WriteString("## Notify -> deliver: durable Tether vs mosquitto vs bare mochi\n\n")
	fmt.Fprintf(&b, "Measured %s on %s by `%s` (all targets in one run).\n\n", today(), machine(), commandLine())
	b.WriteString("```\n" + table + "```\n\n")
	for _, t := range c.targets {
		fmt.Fprintf(&b, "- **%s**: %s.\n", t, pubsubTargets[t])
	}
	b.WriteString("\nmsgs/s counts distinct messages received from the first publish to the last delivery;" +
		" latency is publish -> receipt on the same clock. The notifiers are the same paho code for every target;" +
		" Tether's PUBACK comes after the enqueue is fsynced, and its devices acknowledge each notification (a durable ack).\n")
	return b.String()
}
