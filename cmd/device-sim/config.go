package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Scenario is what `device-sim run` does: a preset, then the YAML file,
// then flags, each overriding the one before.
type Scenario struct {
	Preset    string        `yaml:"preset" json:"preset"`
	Devices   int           `yaml:"devices" json:"devices"`     // sessions, one simulated device each (more during a switch)
	Duration  time.Duration `yaml:"duration" json:"duration"`   // load phase; the drain and the checks follow
	Transport string        `yaml:"transport" json:"transport"` // tcp or ws
	Ramp      time.Duration `yaml:"ramp" json:"ramp"`           // devices start spread over this (0: all at once)

	CallEvery   time.Duration `yaml:"call_every" json:"call_every"`     // each device's mean pause between calls (0: no calls)
	PingEvery   time.Duration `yaml:"ping_every" json:"ping_every"`     // each device's explicit pings (0: only the SDK's own)
	NotifyRate  float64       `yaml:"notify_rate" json:"notify_rate"`   // notifications per second, all sessions together (0: none)
	CrashEvery  time.Duration `yaml:"crash_every" json:"crash_every"`   // each device's mean time between crashes (0: none)
	SwitchEvery time.Duration `yaml:"switch_every" json:"switch_every"` // each session's mean time between device switches (0: none)
	CrashMode   string        `yaml:"crash_mode" json:"crash_mode"`     // drop: the socket dies without DISCONNECT (a proxy per device); close: Close without End
	KillEvery   time.Duration `yaml:"kill_every" json:"kill_every"`     // kill -9 and restart the broker this often (0: never)
	Drain       time.Duration `yaml:"drain" json:"drain"`               // how long to wait for acknowledged notifications at the end

	BrokerCmd   string `yaml:"broker_cmd" json:"broker_cmd,omitempty"`     // broker command device-sim starts (and kills); placeholders {data-dir} {mqtt-addr} {ws-addr}
	DataDir     string `yaml:"data_dir" json:"data_dir,omitempty"`         // the broker's data directory (default: a temporary one)
	BrokerFault string `yaml:"broker_fault" json:"broker_fault,omitempty"` // fault flags for the built-in broker, e.g. "--fault-double-apply 5"
	Seed        int64  `yaml:"seed" json:"seed"`

	JSONFile string `yaml:"-" json:"-"`
	HTMLFile string `yaml:"-" json:"-"`
	Keep     bool   `yaml:"-" json:"-"`
	Quiet    bool   `yaml:"-" json:"-"`
}

// maxNotifyRate bounds --notify-rate: more than one notifier can send.
const maxNotifyRate = 100_000

// presets are the named starting points.
var presets = map[string]Scenario{
	// smoke: seconds, for CI; add --kill-every for broker chaos.
	"smoke": {Devices: 10, Duration: 15 * time.Second, Transport: "tcp", Ramp: time.Second,
		CallEvery: 150 * time.Millisecond, PingEvery: 2 * time.Second, NotifyRate: 60,
		CrashEvery: 6 * time.Second, SwitchEvery: 10 * time.Second, CrashMode: "drop", Drain: 20 * time.Second},
	// chaos: everything breaks often, the broker included.
	"chaos": {Devices: 50, Duration: time.Minute, Transport: "tcp", Ramp: 2 * time.Second,
		CallEvery: 200 * time.Millisecond, PingEvery: 2 * time.Second, NotifyRate: 200,
		CrashEvery: 5 * time.Second, SwitchEvery: 10 * time.Second, CrashMode: "drop", KillEvery: 8 * time.Second, Drain: 30 * time.Second},
	// soak: a steady fleet for a long time, occasional crashes.
	"soak": {Devices: 200, Duration: 10 * time.Minute, Transport: "tcp", Ramp: 10 * time.Second,
		CallEvery: time.Second, PingEvery: 5 * time.Second, NotifyRate: 200,
		CrashEvery: 2 * time.Minute, SwitchEvery: 5 * time.Minute, CrashMode: "drop", Drain: 30 * time.Second},
	// connect-storm: many devices connecting at once, then light traffic.
	"connect-storm": {Devices: 2000, Duration: 15 * time.Second, Transport: "tcp",
		CallEvery: 5 * time.Second, NotifyRate: 100, CrashMode: "close", Drain: 30 * time.Second},
}

// parseScenario reads the preset, the YAML file and the flags.
func parseScenario(args []string, stderr io.Writer) (Scenario, error) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	preset := fs.String("preset", "smoke", "smoke, soak, chaos or connect-storm")
	file := fs.String("config", "", "YAML scenario file (keys as in the JSON report's scenario; overrides the preset)")
	var f Scenario
	fs.IntVar(&f.Devices, "devices", 0, "simulated devices (sessions)")
	fs.DurationVar(&f.Duration, "duration", 0, "load phase duration")
	fs.StringVar(&f.Transport, "transport", "", "tcp or ws")
	fs.DurationVar(&f.Ramp, "ramp", 0, "spread device starts over this")
	fs.DurationVar(&f.CallEvery, "call-every", 0, "mean pause between a device's calls")
	fs.DurationVar(&f.PingEvery, "ping-every", 0, "mean pause between a device's explicit pings")
	fs.Float64Var(&f.NotifyRate, "notify-rate", 0, "notifications per second from the built-in notifier")
	fs.DurationVar(&f.CrashEvery, "crash-every", 0, "mean time between a device's crashes")
	fs.DurationVar(&f.SwitchEvery, "switch-every", 0, "mean time between a session's device switches")
	fs.StringVar(&f.CrashMode, "crash-mode", "", "drop (socket dies without DISCONNECT) or close (Close without End)")
	fs.DurationVar(&f.KillEvery, "kill-every", 0, "kill -9 and restart the broker this often")
	fs.DurationVar(&f.Drain, "drain", 0, "how long to wait for acknowledged notifications at the end")
	fs.StringVar(&f.BrokerCmd, "broker-cmd", "", `broker command to start and kill, e.g. "device-sim broker --data-dir {data-dir} --mqtt-addr {mqtt-addr}"`)
	fs.StringVar(&f.DataDir, "data-dir", "", "broker data directory (default: temporary)")
	fs.StringVar(&f.BrokerFault, "broker-fault", "", `fault flags for the built-in broker (test only), e.g. "--fault-double-apply 5"`)
	fs.Int64Var(&f.Seed, "seed", 0, "random seed (0: from the clock)")
	fs.StringVar(&f.JSONFile, "json", "", "write the report as JSON to this file")
	fs.StringVar(&f.HTMLFile, "html", "", "write an HTML report with latency histograms to this file")
	fs.BoolVar(&f.Keep, "keep", false, "keep the temporary data directory")
	fs.BoolVar(&f.Quiet, "quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return Scenario{}, err
	}
	if fs.NArg() > 0 {
		return Scenario{}, usagef("run: unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var b []byte
	if *file != "" {
		var err error
		if b, err = os.ReadFile(*file); err != nil {
			return Scenario{}, fmt.Errorf("config: %w", err)
		}
		// A whole --json report gives its scenario.
		var report struct {
			Scenario yaml.Node `yaml:"scenario"`
		}
		if yaml.Unmarshal(b, &report) == nil && report.Scenario.Kind == yaml.MappingNode {
			if b, err = yaml.Marshal(&report.Scenario); err != nil {
				return Scenario{}, fmt.Errorf("config %s: scenario: %w", *file, err)
			}
		}
		// The file may name its preset; --preset wins over it.
		var named struct {
			Preset string `yaml:"preset"`
		}
		if err := yaml.Unmarshal(b, &named); err != nil {
			return Scenario{}, fmt.Errorf("config %s: %w", *file, err)
		}
		if named.Preset != "" && !set["preset"] {
			*preset = named.Preset
		}
	}
	s, ok := presets[*preset]
	if !ok {
		return Scenario{}, usagef("run: unknown preset %q (want smoke, soak, chaos or connect-storm)", *preset)
	}
	if b != nil {
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
			return Scenario{}, fmt.Errorf("config %s: %w", *file, err)
		}
	}
	s.Preset = *preset
	if set["devices"] {
		s.Devices = f.Devices
	}
	for name, p := range map[string]struct{ dst, v *time.Duration }{
		"duration": {&s.Duration, &f.Duration}, "drain": {&s.Drain, &f.Drain}, "ramp": {&s.Ramp, &f.Ramp},
		"call-every": {&s.CallEvery, &f.CallEvery}, "ping-every": {&s.PingEvery, &f.PingEvery},
		"crash-every": {&s.CrashEvery, &f.CrashEvery}, "switch-every": {&s.SwitchEvery, &f.SwitchEvery},
		"kill-every": {&s.KillEvery, &f.KillEvery},
	} {
		if set[name] {
			*p.dst = *p.v
		}
	}
	if set["transport"] {
		s.Transport = f.Transport
	}
	if set["notify-rate"] {
		s.NotifyRate = f.NotifyRate
	}
	if set["crash-mode"] {
		s.CrashMode = f.CrashMode
	}
	for _, p := range []struct {
		name string
		dst  *string
		v    string
	}{{"broker-cmd", &s.BrokerCmd, f.BrokerCmd}, {"data-dir", &s.DataDir, f.DataDir}, {"broker-fault", &s.BrokerFault, f.BrokerFault}} {
		if set[p.name] {
			*p.dst = p.v
		}
	}
	if set["seed"] {
		s.Seed = f.Seed
	}
	s.JSONFile, s.HTMLFile, s.Keep, s.Quiet = f.JSONFile, f.HTMLFile, f.Keep, f.Quiet
	if s.Seed == 0 {
		s.Seed = time.Now().UnixNano()
	}
	return s, s.Validate()
}

// Validate reports the first setting that cannot work.
func (s Scenario) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ramp", s.Ramp}, {"call-every", s.CallEvery}, {"ping-every", s.PingEvery}, {"crash-every", s.CrashEvery},
		{"switch-every", s.SwitchEvery}, {"kill-every", s.KillEvery}} {
		if d.v < 0 {
			return usagef("run: %s must be ≥ 0 (0 turns it off), got %s", d.name, d.v)
		}
	}
	switch {
	case s.Devices < 1 || s.Devices > maxSessionsPerProcess/3:
		return usagef("run: devices must be 1..%d (each uses up to 3 open files here: the machine allows 20,000 per process)", maxSessionsPerProcess/3)
	case s.Duration <= 0:
		return usagef("run: duration must be positive")
	case s.Transport != "tcp" && s.Transport != "ws":
		return usagef("run: transport %q: want tcp or ws", s.Transport)
	case s.CrashMode != "drop" && s.CrashMode != "close":
		return usagef("run: crash-mode %q: want drop or close", s.CrashMode)
	case s.CrashMode == "drop" && s.Devices > 4000:
		return usagef("run: crash-mode drop proxies each device (4 open files each): at most 4000 devices; use --crash-mode close")
	case !(s.NotifyRate >= 0 && s.NotifyRate <= maxNotifyRate): // NaN fails both
		return usagef("run: notify-rate must be 0..%d notifications per second, got %v", maxNotifyRate, s.NotifyRate)
	case s.Drain <= 0:
		return usagef("run: drain must be positive")
	case s.BrokerFault != "" && s.BrokerCmd != "":
		return usagef("run: --broker-fault applies to the built-in broker; put fault flags in --broker-cmd instead")
	}
	return nil
}

// MarshalJSON writes durations as text ("15s"), not nanoseconds, so that a
// report's scenario can be given back as a --config file (JSON is YAML).
func (s Scenario) MarshalJSON() ([]byte, error) {
	v, t := reflect.ValueOf(s), reflect.TypeOf(s)
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		f := v.Field(i)
		if name == "-" || name == "" || (opts == "omitempty" && f.IsZero()) {
			continue
		}
		var x any = f.Interface()
		if d, ok := x.(time.Duration); ok {
			x = d.String()
		}
		enc, err := json.Marshal(x)
		if err != nil {
			return nil, err
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", name, enc)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON wrote, as the YAML file is read.
func (s *Scenario) UnmarshalJSON(b []byte) error {
	type plain Scenario
	return yaml.Unmarshal(b, (*plain)(s))
}
