package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/f47fa0da/tether/auth"
)

// maxSessionsPerProcess keeps both ends of the benchmark under the
// machine's 20,000 open files per process (device-sim holds the client
// ends, the broker the server ends).
const maxSessionsPerProcess = 18000

func randomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func simUser(i int) string { return "sim" + strconv.Itoa(i) }

// startFleetBroker makes a data directory under root (named prefix…)
// holding a device token for each of n simulated users, and starts a
// broker on it with start. It returns the tokens by user.
func startFleetBroker(ctx context.Context, root, prefix string, n int,
	start func(ctx context.Context, dir string) (*child, string, error)) (*child, string, map[string]string, error) {
	dir, err := os.MkdirTemp(root, prefix)
	if err != nil {
		return nil, "", nil, err
	}
	tokens, err := mintSimTokens(dir, n)
	if err != nil {
		return nil, "", nil, err
	}
	proc, addr, err := start(ctx, dir)
	return proc, addr, tokens, err
}

// mintSimTokens issues a device token for each of the users simUser(0..n-1)
// straight into the data directory dir (see mintTokens).
func mintSimTokens(dir string, n int) (map[string]string, error) {
	users := make([]string, n)
	for i := range users {
		users[i] = simUser(i)
	}
	return mintTokens(dir, users, auth.RoleDevice)
}

// idleResult is the memory one broker holds per idle connected session.
type idleResult struct {
	Target     string  `json:"target"`
	Sessions   int     `json:"sessions"`
	BaseKB     int64   `json:"rss_before_kb"`
	AfterKB    int64   `json:"rss_after_kb"`
	PerSession float64 `json:"kb_per_session"`
	Error      string  `json:"error,omitempty"`
}

var idleTargets = map[string]string{
	"tether":    "Tether broker binary (defaults), each session: CONNECT with will, SUBSCRIBE res/tick/notify, begin",
	"mosquitto": "Debian mosquitto, each client: plain CONNECT",
	"mochi":     "bare mochi (default capabilities) in its own process, each client: plain CONNECT",
}

func benchIdleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var bf benchFlags
	fs := flag.NewFlagSet("bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sessions", "1000,10000", "comma-separated numbers of idle sessions")
	targets := fs.String("targets", "tether,mosquitto,mochi", "brokers to measure")
	conc := fs.Int("concurrency", 64, "sessions connecting at once")
	settle := fs.Duration("settle", 5*time.Second, "wait before each RSS reading (Tether returns memory to the OS a second after clients stop arriving; that takes about 2 s at 10,000)")
	bf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ns, err := parseCounts("bench idle: --sessions", *sizes, maxSessionsPerProcess)
	if err != nil {
		return err
	}
	dir, cleanup, err := tempDir("device-sim-idle-", bf.keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	var results []idleResult
	for _, t := range strings.Split(*targets, ",") {
		if _, ok := idleTargets[t]; !ok {
			return usagef("bench idle: unknown target %q", t)
		}
		for _, n := range ns {
			fmt.Fprintf(stderr, "bench idle: %s with %d sessions ...\n", t, n)
			r := runIdle(ctx, bf, t, n, *conc, *settle, dir)
			if r.Error != "" {
				fmt.Fprintf(stderr, "bench idle: %s: %s\n", t, r.Error)
			}
			results = append(results, r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	table := idleTable(results)
	if err := bf.publish(stdout, "idle", table, results, func() string {
		var b strings.Builder
		b.WriteString("## Memory per idle connected session\n\n")
		fmt.Fprintf(&b, "Measured %s on %s by `%s`.\n\n```\n%s```\n\n", today(), machine(), commandLine(), table)
		for _, t := range strings.Split(*targets, ",") {
			fmt.Fprintf(&b, "- **%s**: %s.\n", t, idleTargets[t])
		}
		b.WriteString("\nThe broker runs in its own process; its VmRSS (/proc/PID/status) is read after start-up and again once every" +
			" session is connected (and begun), each after the same settle pause for every target (Tether returns memory to the OS a" +
			" second after the number of clients holds still: the settle lets that finish); the delta is divided by the sessions. The clients run in" +
			" device-sim's process, so each process holds one end of each connection (the machine allows 20,000 open files per process).\n")
		return b.String()
	}); err != nil {
		return err
	}
	for _, r := range results {
		if r.Error != "" {
			return fmt.Errorf("bench idle: %s failed: %s", r.Target, r.Error)
		}
	}
	return nil
}

func runIdle(ctx context.Context, bf benchFlags, target string, n, conc int, settle time.Duration, root string) (res idleResult) {
	res = idleResult{Target: target, Sessions: n}
	ctx, cancel := context.WithTimeout(ctx, bf.timeout)
	defer cancel()
	var (
		bin  string
		mode = lightConnect
		err  error
	)
	if target == "tether" {
		mode = lightBegin
		if bin, err = brokerBinary(ctx, bf.brokerBin, root); err != nil {
			res.Error = err.Error()
			return res
		}
	}
	proc, addr, tokens, err := startSessionBroker(ctx, root, target, bin, n)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() { _ = proc.stop(10 * time.Second) }()
	sleepCtx(ctx, settle)
	if res.BaseKB, err = proc.rssKB(); err != nil {
		res.Error = err.Error()
		return res
	}
	sessions, _, err := connectMany(ctx, "tcp://"+addr, n, conc, tokens, mode)
	defer func() {
		for _, s := range sessions {
			s.close()
		}
	}()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	sleepCtx(ctx, settle)
	if res.AfterKB, err = proc.rssKB(); err != nil {
		res.Error = err.Error()
		return res
	}
	res.PerSession = float64(res.AfterKB-res.BaseKB) / float64(n)
	return res
}

// connectMany starts n sessions simSession(i) as far as mode says, conc
// at a time, and returns them with each one's start time.
func connectMany(ctx context.Context, url string, n, conc int, tokens map[string]string, mode lightMode) ([]*lightSession, *Latency, error) {
	var (
		out  = make([]*lightSession, n)
		lat  Latency
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				s, err := dialLightSession(ctx, hostPort(url), simUser(i), tokens[simUser(i)], "s", mode)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				lat.Add(time.Since(t0))
				out[i] = s
			}
		}()
	}
	wg.Wait()
	var got []*lightSession
	for _, s := range out {
		if s != nil {
			got = append(got, s)
		}
	}
	if len(errs) > 0 {
		return got, &lat, fmt.Errorf("%d of %d sessions failed; first: %w", n-len(got), n, errs[0])
	}
	return got, &lat, ctx.Err()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func idleTable(rs []idleResult) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tsessions\tRSS before MiB\tRSS after MiB\tKiB/session\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", r.Target, thousands(int64(r.Sessions)), formatFloat(float64(r.BaseKB)/1024, 1),
			formatFloat(float64(r.AfterKB)/1024, 1), formatFloat(r.PerSession, 2))
	}
	tw.Flush()
	return b.String()
}

// connectResult is the connect+begin rate of one run.
type connectResult struct {
	Target      string        `json:"target"`
	Devices     int           `json:"devices"`
	Concurrency int           `json:"concurrency"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	Rate        float64       `json:"sessions_per_s"`
	Latency     Summary       `json:"connect_begin"`
	// BrokerCPU is the broker process's CPU time (user+system) per
	// session over the run: the rate one core could sustain is its inverse.
	BrokerCPU time.Duration `json:"broker_cpu_per_session_ns"`
	Error     string        `json:"error,omitempty"`
}

func benchConnectCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var bf benchFlags
	fs := flag.NewFlagSet("bench connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("devices", 4000, "devices connecting and beginning")
	concs := fs.String("concurrency", "16,64,256,1024", "comma-separated numbers of devices connecting at once (one run each)")
	targetList := fs.String("targets", "tether,mosquitto,mochi", "brokers to measure, in turn at each concurrency (mosquitto and mochi: CONNECT and SUBSCRIBE, no begin)")
	bf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var targets []string
	for _, t := range strings.Split(*targetList, ",") {
		if _, ok := connectTargets[t]; !ok {
			return usagef("bench connect: unknown target %q (want tether, mosquitto or mochi)", t)
		}
		targets = append(targets, t)
	}
	if *n < 1 || *n > maxSessionsPerProcess {
		return usagef("bench connect: --devices must be 1..%d", maxSessionsPerProcess)
	}
	cs, err := parseCounts("bench connect: --concurrency", *concs, *n)
	if err != nil {
		return err
	}
	dir, cleanup, err := tempDir("device-sim-connect-", bf.keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	bin, err := brokerBinary(ctx, bf.brokerBin, dir)
	if err != nil {
		return err
	}
	var results []connectResult
	for _, c := range cs {
		for _, t := range targets {
			fmt.Fprintf(stderr, "bench connect: %s: %d devices, %d at once ...\n", t, *n, c)
			r := runConnect(ctx, bf, bin, dir, t, *n, c)
			if r.Error != "" {
				fmt.Fprintf(stderr, "bench connect: %s: %s\n", t, r.Error)
			}
			results = append(results, r)
		}
	}
	b := connectTable(results)
	if err := bf.publish(stdout, "connect", b, results, func() string {
		return fmt.Sprintf("## Connect + begin rate\n\nMeasured %s on %s by `%s`.\n\n```\n%s```\n\n"+
			"Each device is a separate MQTT connection of its own user (token minted beforehand) to the broker binary in its own"+
			" process: CONNECT with the SDK's will, SUBSCRIBE to res/tick/notify, publish begin and wait for its reply (the begin"+
			" is committed, fsynced, before the reply). The devices are a minimal MQTT 3.1.1 client on mochi's packet codec that"+
			" sends the three packets at once, so that device-sim costs little next to the broker; both run on the same 2 cores."+
			" mosquitto (Debian's, no persistence) and mochi (bare, default capabilities) get the same CONNECT and SUBSCRIBE from"+
			" the same client and no begin, which they do not have: the rate of a plain broker's connect and subscribe, in turn"+
			" with Tether's runs. The rate is devices / wall time from the first CONNECT to the last begin reply (SUBACK);"+
			" p50/p99 are per device; broker CPU is the broker process's user+system time (/proc/PID/stat) over the run, per"+
			" session.\n", today(), machine(), commandLine(), b)
	}); err != nil {
		return err
	}
	for _, r := range results {
		if r.Error != "" {
			return errors.New("bench connect: " + r.Error)
		}
	}
	return nil
}

// startSessionBroker starts target for n light sessions, its data in a
// new directory under root: Tether (the binary bin) holding a device token
// for each simulated user, returned by user; mosquitto or bare mochi, no
// tokens.
func startSessionBroker(ctx context.Context, root, target, bin string, n int) (*child, string, map[string]string, error) {
	switch target {
	case "tether":
		return startFleetBroker(ctx, root, "tether-", n, func(ctx context.Context, dir string) (*child, string, error) {
			return startBrokerBinary(ctx, bin, dir, "--max-clients", strconv.Itoa(n+100))
		})
	case "mosquitto":
		dir, err := os.MkdirTemp(root, "mosquitto-")
		if err != nil {
			return nil, "", nil, err
		}
		proc, addr, err := startMosquitto(ctx, dir)
		return proc, addr, nil, err
	case "mochi":
		proc, addr, err := startMochiProcess(ctx)
		return proc, addr, nil, err
	}
	return nil, "", nil, fmt.Errorf("unknown target %q", target)
}

// connectTargets are the brokers `bench connect` knows and what each
// device does there.
var connectTargets = map[string]lightMode{"tether": lightBegin, "mosquitto": lightSubscribe, "mochi": lightSubscribe}

// connectTable renders the results, with Tether's rate over each plain
// broker's at the same concurrency.
func connectTable(results []connectResult) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tdevices\tat once\tseconds\tsessions/s\tp50 ms\tp99 ms\tbroker CPU ms/session\t")
	tether := map[int]float64{}
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Target, thousands(int64(r.Devices)), r.Concurrency, formatFloat(r.Elapsed.Seconds(), 2),
			thousands(int64(r.Rate)), ms(r.Latency.P50), ms(r.Latency.P99), ms(r.BrokerCPU))
		if r.Target == "tether" && r.Error == "" {
			tether[r.Concurrency] = r.Rate
		}
	}
	tw.Flush()
	var ratios []string
	for _, r := range results {
		if t, ok := tether[r.Concurrency]; ok && r.Target != "tether" && r.Error == "" && r.Rate > 0 {
			ratios = append(ratios, fmt.Sprintf("Tether connect+begin / %s connect+subscribe, %d at once: %.2fx", r.Target, r.Concurrency, t/r.Rate))
		}
	}
	if len(ratios) > 0 {
		b.WriteString("\n" + strings.Join(ratios, "\n") + "\n")
	}
	return b.String()
}

func runConnect(ctx context.Context, bf benchFlags, bin, root, target string, n, conc int) (res connectResult) {
	res = connectResult{Target: target, Devices: n, Concurrency: conc}
	ctx, cancel := context.WithTimeout(ctx, bf.timeout)
	defer cancel()
	proc, addr, tokens, err := startSessionBroker(ctx, root, target, bin, n)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() { _ = proc.stop(10 * time.Second) }()
	cpu0, _ := cpuTime(proc.Pid())
	t0 := time.Now()
	sessions, lat, err := connectMany(ctx, "tcp://"+addr, n, conc, tokens, connectTargets[target])
	res.Elapsed = time.Since(t0)
	if cpu1, cerr := cpuTime(proc.Pid()); cerr == nil && len(sessions) > 0 {
		res.BrokerCPU = (cpu1 - cpu0) / time.Duration(len(sessions))
	}
	for _, s := range sessions {
		s.close()
	}
	res.Rate = float64(len(sessions)) / res.Elapsed.Seconds()
	res.Latency = lat.Summary()
	if err != nil {
		res.Error = err.Error()
	}
	return res
}
