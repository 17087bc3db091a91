package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// callsResult is the durable call rate of one run.
type callsResult struct {
	Sessions int           `json:"sessions"`
	Calls    int64         `json:"calls"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Rate     float64       `json:"calls_per_s"`
	Latency  Summary       `json:"call"`
	// BrokerCPU is the broker process's CPU time (user+system) per call.
	BrokerCPU time.Duration `json:"broker_cpu_per_call_ns"`
	// Fsyncs is the disk's raw rate of 4 KiB append + fsync, measured
	// just before the run on the same disk: one session's limit.
	Fsyncs float64 `json:"fsyncs_per_s"`
	Error  string  `json:"error,omitempty"`
}

func benchCallsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var bf benchFlags
	fs := flag.NewFlagSet("bench calls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	counts := fs.String("sessions", "1,10,100", "comma-separated numbers of sessions calling at once, each of its own user (one run each)")
	dur := fs.Duration("duration", 5*time.Second, "how long each run calls")
	bf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if bf.brokerBin != "" {
		fmt.Fprintln(stderr, "bench calls: --broker-bin does not apply: the calls need the simulator's handlers, so the broker is `device-sim broker`")
	}
	if *dur <= 0 || *dur > bf.timeout {
		return usagef("bench calls: --duration must be positive and at most --timeout (%s)", bf.timeout)
	}
	ns, err := parseCounts("bench calls: --sessions", *counts, maxSessionsPerProcess)
	if err != nil {
		return err
	}
	dir, cleanup, err := tempDir("device-sim-calls-", bf.keep, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	stopProfile, err := bf.profile()
	if err != nil {
		return err
	}
	var results []callsResult
	for _, n := range ns {
		fmt.Fprintf(stderr, "bench calls: %d sessions calling for %s ...\n", n, *dur)
		r := runCalls(ctx, bf, dir, n, *dur)
		if r.Error != "" {
			fmt.Fprintf(stderr, "bench calls: %s\n", r.Error)
		}
		results = append(results, r)
	}
	stopProfile()
	table := callsTable(results)
	if err := bf.publish(stdout, "calls", table, results, func() string {
		return fmt.Sprintf("## Durable calls, broker capacity\n\nMeasured %s on %s by `%s`.\n\n```\n%s```\n\n"+
			"Each session is a connection of its own user (token minted beforehand) to a Tether broker process"+
			" (`device-sim broker`: the broker with the simulator's handlers) that begins once and then calls `sim.add`"+
			" back to back: read the session's counter from the user's application state, add one, write it, all in the"+
			" call's transaction with its reply and journal event, fsynced (a sync round) before the reply. Every reply's"+
			" count is checked to be one more than the last. The devices are the minimal MQTT client of `bench connect`,"+
			" so that the 2 cores go to the broker; `go test -bench Calls ./broker` measures the same calls made with the"+
			" Go SDK in the broker's process. fsyncs/s is the raw rate of 4 KiB append + fsync on the same disk,"+
			" measured just before each run: the limit of one session without group commit. Broker CPU is the broker"+
			" process's user+system time (/proc/PID/stat) over the run, per call.\n", today(), machine(), commandLine(), table)
	}); err != nil {
		return err
	}
	for _, r := range results {
		if r.Error != "" {
			return errors.New("bench calls: " + r.Error)
		}
	}
	return nil
}

func callsTable(rs []callsResult) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sessions\tcalls\tseconds\tcalls/s\tp50 ms\tp99 ms\tbroker CPU µs/call\tfsyncs/s\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Sessions, thousands(r.Calls), formatFloat(r.Elapsed.Seconds(), 2),
			thousands(int64(r.Rate)), ms(r.Latency.P50), ms(r.Latency.P99),
			formatFloat(float64(r.BrokerCPU)/float64(time.Microsecond), 0), thousands(int64(r.Fsyncs)))
	}
	tw.Flush()
	return b.String()
}

func runCalls(ctx context.Context, bf benchFlags, root string, n int, dur time.Duration) (res callsResult) {
	res = callsResult{Sessions: n}
	ctx, cancel := context.WithTimeout(ctx, bf.timeout)
	defer cancel()
	var err error
	if res.Fsyncs, err = fsyncRate(root, time.Second); err != nil {
		res.Error = err.Error()
		return res
	}
	proc, addr, tokens, err := startFleetBroker(ctx, root, "calls-", n, startSimBroker)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer func() { _ = proc.stop(10 * time.Second) }()
	sessions, _, err := connectMany(ctx, "tcp://"+addr, n, min(n, 64), tokens, lightBegin)
	defer func() {
		for _, s := range sessions {
			s.close()
		}
	}()
	if err != nil {
		res.Error = err.Error()
		return res
	}

	var (
		lat   Latency
		calls atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
	)
	cpu0, _ := cpuTime(proc.Pid())
	t0 := time.Now()
	end := t0.Add(dur)
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.conn.SetDeadline(end.Add(30 * time.Second)) // a broker that stops answering fails the run
			for want := uint64(1); time.Now().Before(end) && ctx.Err() == nil; want++ {
				c0 := time.Now()
				ok, err := s.call("sim.add", addArgs{K: s.nextSeq})
				if err == nil {
					var got uint64
					if got, err = decodeCount(ok); err == nil && got != want {
						err = fmt.Errorf("call %d of %s counted %d: not exactly once", want, s.req, got)
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				lat.Add(time.Since(c0))
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	if cpu1, cerr := cpuTime(proc.Pid()); cerr == nil && calls.Load() > 0 {
		res.BrokerCPU = (cpu1 - cpu0) / time.Duration(calls.Load())
	}
	res.Calls = calls.Load()
	res.Rate = float64(res.Calls) / res.Elapsed.Seconds()
	res.Latency = lat.Summary()
	if len(errs) > 0 {
		res.Error = fmt.Sprintf("%d of %d sessions failed; first: %v", len(errs), n, errs[0])
	}
	return res
}

// startSimBroker runs `device-sim broker` (Tether with the simulator's
// handlers) on dir as a process of its own and waits until it listens.
func startSimBroker(ctx context.Context, dir string) (*child, string, error) {
	return startSelf(ctx, "tether broker (device-sim broker)", func(addr string) []string {
		return []string{"broker", "--data-dir", dir, "--mqtt-addr", addr}
	})
}

// fsyncRate measures 4 KiB append + fsync in dir for about d.
func fsyncRate(dir string, d time.Duration) (float64, error) {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4<<10)
	n, t0 := 0, time.Now()
	for time.Since(t0) < d {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
