package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary stand in for device-sim when a scenario
// starts `device-sim broker` as a child (so that it can be kill -9'd).
func TestMain(m *testing.M) {
	if os.Getenv(envExec) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if err != nil {
			os.Stderr.WriteString("device-sim: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmokeWithChaos is the CI proof: the smoke preset with the broker
// killed by SIGKILL and restarted at least three times, devices crashing
// (socket dropped, no DISCONNECT) and switching, must end with every
// invariant holding.
func TestSmokeWithChaos(t *testing.T) {
	sc := presets["smoke"]
	sc.Preset, sc.Duration, sc.KillEvery, sc.Seed, sc.Quiet = "smoke", 14*time.Second, 4*time.Second, time.Now().UnixNano(), true
	sc.CrashEvery = 4 * time.Second
	require.NoError(t, sc.Validate())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := runScenario(ctx, sc, io.Discard)
	require.NoError(t, err)
	t.Log(rep.Table())
	require.GreaterOrEqual(t, rep.Totals.Restarts, int64(3), "broker kill -9 restarts")
	require.Positive(t, rep.Totals.Crashes, "device crashes")
	require.Positive(t, rep.Totals.Calls, "acknowledged calls")
	require.Positive(t, rep.Totals.Notified, "acknowledged notifications")
	for _, inv := range rep.Invariants {
		if inv.Advisory {
			continue // a liveness finding, reported in the table
		}
		require.True(t, inv.Pass, "%s: %d violations, e.g. %v (seed %d)", inv.Name, inv.Violations, inv.Examples, sc.Seed)
	}
	require.True(t, rep.Passed)
}

// TestBrokenBrokerIsCaught proves the checks can fail: a broker that
// breaks a guarantee (a test-only fault, through --broker-cmd) must be
// reported and make device-sim exit non-zero, naming the right invariant.
func TestBrokenBrokerIsCaught(t *testing.T) {
	for _, tc := range []struct {
		name, fault, invariant string
	}{
		{"a call's effect applied twice", "--fault-double-apply 5", "no call effect applied twice"},
		{"an acknowledged notification lost", "--fault-drop-notify 20", "no acknowledged notification lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			report := filepath.Join(dir, "report.json")
			html := filepath.Join(dir, "report.html")
			cmd := os.Args[0] + " broker --data-dir {data-dir} --mqtt-addr {mqtt-addr} " + tc.fault
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var out strings.Builder
			err := run(ctx, []string{"run", "--preset", "smoke", "--devices", "3", "--duration", "4s", "--crash-every", "0", "--switch-every", "0",
				"--drain", "4s", "--broker-cmd", cmd, "--data-dir", filepath.Join(dir, "data"), "--json", report, "--html", html, "--quiet"}, &out, io.Discard)
			require.ErrorIs(t, err, errViolations)
			require.Contains(t, out.String(), "RESULT: FAIL")

			var rep Report
			b, err := os.ReadFile(report)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &rep))
			require.False(t, rep.Passed)
			for _, inv := range rep.Invariants {
				switch {
				case inv.Name == tc.invariant:
					require.False(t, inv.Pass, "%s", inv.Name)
					require.Positive(t, inv.Violations, "%s", inv.Name)
				case inv.Advisory: // a lost notification also leaves its device waiting
				default:
					require.True(t, inv.Pass, "only %q fails, not %q: %v", tc.invariant, inv.Name, inv.Examples)
				}
			}
			require.Positive(t, rep.Totals.Calls)
			require.Positive(t, rep.Totals.Notified)
			page, err := os.ReadFile(html)
			require.NoError(t, err)
			require.Contains(t, string(page), "FAIL")
			require.Contains(t, string(page), "<svg")
		})
	}
}

func TestParseScenario(t *testing.T) {
	yamlFile := filepath.Join(t.TempDir(), "s.yaml")
	require.NoError(t, os.WriteFile(yamlFile, []byte("devices: 7\nnotify_rate: 5\nkill_every: 3s\n"), 0o644))
	presetFile := filepath.Join(t.TempDir(), "p.yaml")
	require.NoError(t, os.WriteFile(presetFile, []byte("preset: chaos\ndevices: 7\n"), 0o644))
	badPresetFile := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(badPresetFile, []byte("preset: nope\n"), 0o644))
	for _, tc := range []struct {
		name string
		args []string
		want func(t *testing.T, s Scenario)
		err  string
	}{
		{name: "preset", args: []string{"--preset", "chaos"}, want: func(t *testing.T, s Scenario) {
			require.Equal(t, 50, s.Devices)
			require.Equal(t, 8*time.Second, s.KillEvery)
		}},
		{name: "file then flags", args: []string{"--config", yamlFile, "--devices", "9"}, want: func(t *testing.T, s Scenario) {
			require.Equal(t, 9, s.Devices)
			require.Equal(t, 5.0, s.NotifyRate)
			require.Equal(t, 3*time.Second, s.KillEvery)
			require.Equal(t, presets["smoke"].CallEvery, s.CallEvery)
		}},
		{name: "flag zeroes a preset value", args: []string{"--preset", "chaos", "--kill-every", "0"}, want: func(t *testing.T, s Scenario) {
			require.Zero(t, s.KillEvery)
		}},
		{name: "unknown preset", args: []string{"--preset", "nope"}, err: "unknown preset"},
		{name: "bad transport", args: []string{"--transport", "udp"}, err: "transport"},
		{name: "fault with broker-cmd", args: []string{"--broker-fault", "--fault-double-apply 1", "--broker-cmd", "x"}, err: "broker-fault"},
		{name: "file names its preset", args: []string{"--config", presetFile}, want: func(t *testing.T, s Scenario) {
			require.Equal(t, "chaos", s.Preset)
			require.Equal(t, 7, s.Devices, "the file's values over its preset's")
			require.Equal(t, 8*time.Second, s.KillEvery, "the preset's where the file is silent")
		}},
		{name: "--preset over the file's", args: []string{"--config", presetFile, "--preset", "smoke"}, want: func(t *testing.T, s Scenario) {
			require.Equal(t, "smoke", s.Preset)
			require.Zero(t, s.KillEvery)
		}},
		{name: "file names an unknown preset", args: []string{"--config", badPresetFile}, err: `unknown preset "nope"`},
		{name: "negative kill-every", args: []string{"--kill-every", "-1s"}, err: "kill-every must be ≥ 0"},
		{name: "negative ramp", args: []string{"--ramp", "-1s"}, err: "ramp must be ≥ 0"},
		{name: "NaN notify rate", args: []string{"--notify-rate", "NaN"}, err: "notify-rate must be 0..100000"},
		{name: "infinite notify rate", args: []string{"--notify-rate", "+Inf"}, err: "notify-rate must be 0..100000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseScenario(tc.args, io.Discard)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.True(t, errors.As(err, new(usageError)))
				return
			}
			require.NoError(t, err)
			tc.want(t, s)
		})
	}
}

// A report's scenario (JSON) can be given back as --config: the same run.
func TestReportScenarioIsAConfigFile(t *testing.T) {
	sc, err := parseScenario([]string{"--preset", "chaos", "--devices", "12", "--ramp", "1500ms", "--seed", "42"}, io.Discard)
	require.NoError(t, err)
	b, err := json.Marshal(Report{Scenario: sc})
	require.NoError(t, err)
	var rep struct {
		Scenario json.RawMessage `json:"scenario"`
	}
	require.NoError(t, json.Unmarshal(b, &rep))
	require.Contains(t, string(rep.Scenario), `"ramp":"1.5s"`, "durations as text")
	file := filepath.Join(t.TempDir(), "again.json")
	require.NoError(t, os.WriteFile(file, rep.Scenario, 0o644))
	again, err := parseScenario([]string{"--config", file}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, sc, again)
	var back Report
	require.NoError(t, json.Unmarshal(b, &back), "and a report reads back")
	require.Equal(t, sc, back.Scenario)
	whole := filepath.Join(t.TempDir(), "report.json")
	require.NoError(t, os.WriteFile(whole, b, 0o644))
	fromReport, err := parseScenario([]string{"--config", whole}, io.Discard)
	require.NoError(t, err, "the whole report, not only its scenario")
	require.Equal(t, sc, fromReport)
}

// --transport ws needs to know where the broker's WebSocket listens.
func TestWSNeedsTheBrokersWSAddress(t *testing.T) {
	sc := presets["smoke"]
	sc.Transport, sc.BrokerCmd = "ws", "tether --data-dir d --mqtt-addr 127.0.0.1:1883"
	_, err := newBrokerControl(sc, t.TempDir())
	require.ErrorContains(t, err, "WebSocket address")
	sc.BrokerCmd += " --ws-addr {ws-addr}"
	_, err = newBrokerControl(sc, t.TempDir())
	require.NoError(t, err)
}

func TestUpdateDoc(t *testing.T) {
	f := filepath.Join(t.TempDir(), "b.md")
	require.NoError(t, os.WriteFile(f, []byte("# B\n\nhand-written\n"), 0o644))
	require.NoError(t, updateDoc(f, "x", "one\n"))
	require.NoError(t, updateDoc(f, "x", "two\n"))
	b, err := os.ReadFile(f)
	require.NoError(t, err)
	require.Equal(t, "# B\n\nhand-written\n\n<!-- begin x -->\ntwo\n<!-- end x -->\n", string(b))
}

// runBench runs a bench subcommand (with --json added to args) and returns
// what it printed and the results it wrote.
func runBench[R any](t *testing.T, cmd func(context.Context, []string, io.Writer, io.Writer) error, args ...string) (string, []R) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "results.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout strings.Builder
	require.NoError(t, cmd(ctx, append(args, "--json", out), &stdout, io.Discard))
	var results []R
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &results))
	return stdout.String(), results
}

// TestBenchConnect runs the connect+begin benchmark small against the real
// broker binary and bare mochi: every device begins (subscribes, on mochi),
// and the rates, latencies, broker CPU and ratio it reports are measured
// values, not zeros. (Two hundred devices: /proc counts CPU in 10 ms ticks,
// and forty connects to bare mochi sometimes took less than one.)
func TestBenchConnect(t *testing.T) {
	stdout, results := runBench[connectResult](t, benchConnectCmd, "--devices", "200", "--concurrency", "8", "--targets", "tether,mochi")
	require.Len(t, results, 2)
	for i, target := range []string{"tether", "mochi"} {
		r := results[i]
		require.Equal(t, target, r.Target)
		require.Empty(t, r.Error, target)
		require.Equal(t, int64(200), r.Latency.Count, "%s: every device started", target)
		require.Positive(t, r.Rate, target)
		require.Positive(t, r.Latency.P50, target)
		require.Positive(t, r.BrokerCPU, "%s: the broker spent CPU on the sessions", target)
	}
	require.Contains(t, stdout, "broker CPU ms/session")
	require.Contains(t, stdout, fmt.Sprintf("Tether connect+begin / mochi connect+subscribe, 8 at once: %.2fx", results[0].Rate/results[1].Rate))

	err := benchConnectCmd(context.Background(), []string{"--targets", "tether,emqx"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, `unknown target "emqx"`)
}

// TestBenchIdle measures a few idle sessions on the real broker binary
// and on bare mochi: every session connects, and the RSS readings are
// the processes' own, not zeros.
func TestBenchIdle(t *testing.T) {
	stdout, results := runBench[idleResult](t, benchIdleCmd, "--sessions", "50", "--targets", "tether,mochi", "--settle", "200ms")
	require.Len(t, results, 2)
	for i, target := range []string{"tether", "mochi"} {
		r := results[i]
		require.Equal(t, target, r.Target)
		require.Empty(t, r.Error, target)
		require.Equal(t, 50, r.Sessions, target)
		require.Positive(t, r.BaseKB, "%s: RSS read after start-up", target)
		require.Greater(t, r.AfterKB, r.BaseKB, "%s: fifty more sessions take memory", target)
	}
	require.Contains(t, stdout, "KiB/session")
}

// TestBenchCalls runs the calls benchmark small against a real broker
// process: every call is answered with the count it should have (the
// benchmark checks exactly-once), and rates and latencies are measured.
func TestBenchCalls(t *testing.T) {
	stdout, results := runBench[callsResult](t, benchCallsCmd, "--sessions", "1,4", "--duration", "300ms")
	require.Len(t, results, 2)
	for i, n := range []int{1, 4} {
		r := results[i]
		require.Empty(t, r.Error)
		require.Equal(t, n, r.Sessions)
		require.Greater(t, r.Calls, int64(n), "every session called more than once")
		require.Equal(t, r.Calls, r.Latency.Count)
		require.Positive(t, r.Rate)
		require.Positive(t, r.BrokerCPU, "the broker spent CPU on the calls")
		require.Positive(t, r.Fsyncs)
	}
	require.Contains(t, stdout, "broker CPU µs/call")

	err := benchCallsCmd(context.Background(), []string{"--sessions", "0"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "--sessions")
}

// TestBenchPubsub runs the pubsub benchmark small against bare mochi and
// the real broker binary, each a process of its own: every durable
// notification arrives, and the rates and latencies are measured values.
func TestBenchPubsub(t *testing.T) {
	stdout, results := runBench[pubsubResult](t, benchPubsubCmd, "--targets", "mochi,tether,tether-enqueue", "--notifiers", "3", "--messages", "300", "--rounds", "2")
	require.Len(t, results, 6, "three targets, two rounds")
	for i, r := range results {
		require.Empty(t, r.Error, r.Target)
		require.Equal(t, 1+i/3, r.Round, "%s: the rounds run one after another", r.Target)
		require.Equal(t, 900, r.Acked, "%s: every publish acknowledged", r.Target)
		require.Positive(t, r.Rate, r.Target)
	}
	for _, tether := range []pubsubResult{results[1], results[4]} {
		require.Equal(t, "tether", tether.Target)
		require.Equal(t, 900, tether.Delivered, "every durable notification delivered")
		require.Zero(t, tether.Lost)
		require.Equal(t, int64(900), tether.Latency.Count)
		require.Positive(t, tether.Latency.P50)
	}
	low, high := min(results[1].Rate/results[0].Rate, results[4].Rate/results[3].Rate), max(results[1].Rate/results[0].Rate, results[4].Rate/results[3].Rate)
	require.Contains(t, stdout, fmt.Sprintf("durable Tether / mochi: %.2fx (median of the rounds: %.2f, %.2f)", low, low, high))
	require.Contains(t, stdout, "2 rounds of every target in turn")

	err := benchPubsubCmd(context.Background(), []string{"--rounds", "0"}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "--rounds")
}

// The table shows each target's median round, and each ratio is the median
// of the rounds' ratios, not a ratio of medians.
func TestPubsubMedians(t *testing.T) {
	rs := []pubsubResult{
		{Target: "mosquitto", Round: 1, Rate: 100}, {Target: "tether", Round: 1, Rate: 40},
		{Target: "mosquitto", Round: 2, Rate: 300}, {Target: "tether", Round: 2, Rate: 60},
		{Target: "mosquitto", Round: 3, Rate: 200}, {Target: "tether", Round: 3, Rate: 140},
	}
	med := medianRounds([]string{"mosquitto", "tether"}, rs)
	require.Equal(t, []float64{200, 60}, []float64{med[0].Rate, med[1].Rate})
	require.Equal(t, []int{3, 2}, []int{med[0].Round, med[1].Round})
	require.Equal(t, []float64{0.2, 0.4, 0.7}, roundRatios(rs, "mosquitto"))
	table := pubsubTable(pubsubConfig{targets: []string{"mosquitto", "tether"}, rounds: 3, notifiers: 1, messages: 1, inflight: 1}, rs)
	require.Contains(t, table, "durable Tether / mosquitto: 0.40x (median of the rounds: 0.20, 0.40, 0.70)")
}
