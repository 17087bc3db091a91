package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
	"github.com/f47fa0da/tether/web"
)

// serveConfig is everything `broker serve` reads from flags, the YAML file
// and TETHER_* variables. Precedence: flag > environment > file > default.
type serveConfig struct {
	broker    broker.Config
	logLevel  string
	logFormat string
	file      string
	demoCalls bool  // register the demo page's call handlers (web.DemoHandlers)
	keysErr   error // why snapshot-keys could not be read (see snapshotKeysValue)
}

// serveFlags binds every setting to a flag. The flag name is the setting's
// name; the YAML key is the name with '_' for '-'; the environment variable
// is TETHER_ and the name in upper case with '_' for '-'.
func serveFlags(c *serveConfig, out io.Writer) *flag.FlagSet {
	b := &c.broker
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.file, "config", "", "YAML config file (keys are setting names with _ for -)")
	fs.StringVar(&b.DataDir, "data-dir", b.DataDir, "data directory (Badger); one broker per directory")
	fs.StringVar(&b.MQTTAddr, "mqtt-addr", b.MQTTAddr, "MQTT over TCP listen address (TLS when tls-cert is set)")
	fs.StringVar(&b.WSAddr, "ws-addr", b.WSAddr, `MQTT over WebSocket listen address ("" disables; wss when tls-cert is set)`)
	fs.StringVar(&b.HTTPAddr, "http-addr", b.HTTPAddr, `HTTP address for /healthz, /readyz, /metrics ("" disables)`)
	fs.StringVar(&b.AdminAddr, "admin-addr", b.AdminAddr, "loopback address of the admin endpoint the CLI uses (port 0 picks one)")
	fs.Var(listValue{&b.WSOrigins}, "ws-origins", `comma-separated browser Origins allowed on the WebSocket ("*" = any; empty = same origin)`)
	fs.StringVar(&b.TLSCertFile, "tls-cert", b.TLSCertFile, "PEM certificate file for TLS on MQTT/TCP and WebSocket")
	fs.StringVar(&b.TLSKeyFile, "tls-key", b.TLSKeyFile, "PEM private key file for tls-cert")
	fs.BoolVar(&b.AllowAnonymous, "allow-anonymous", b.AllowAnonymous, "let clients without credentials use plain topics outside sessions/ and tether/")
	fs.Int64Var(&b.MaxClients, "max-clients", b.MaxClients, "most clients connected at once")
	fs.Var(uint32Value{&b.MaxPacketSize}, "max-packet-size", "largest MQTT packet accepted, in bytes")
	fs.Var(int32Value{&b.MaxWritesPending}, "max-writes-pending", "per-client outbound queue, in packets")
	fs.IntVar(&b.ReadBufferSize, "read-buffer", b.ReadBufferSize, "per-client read buffer, in bytes")
	fs.IntVar(&b.WriteBufferSize, "write-buffer", b.WriteBufferSize, "per-client write buffer, in bytes")
	fs.DurationVar(&b.SessionExpiry, "session-expiry", b.SessionExpiry, "longest a disconnected clean=false MQTT session is kept")
	fs.DurationVar(&b.ConnectTimeout, "connect-timeout", b.ConnectTimeout, "how long a new connection may take to send its CONNECT before it is closed")
	fs.DurationVar(&b.ShutdownTimeout, "shutdown-timeout", b.ShutdownTimeout, "how long shutdown waits for in-flight work")
	fs.DurationVar(&b.GCInterval, "gc-interval", b.GCInterval, "Badger value-log GC period")
	fs.DurationVar(&b.SyncDelay, "sync-delay", b.SyncDelay, "least time between the starts of two fsync rounds (0 up to 10ms): fewer fsyncs on a saturated broker, more latency per commit")
	fs.DurationVar(&b.Sessions.TickInterval, "tick-interval", b.Sessions.TickInterval, "how often active sessions get a tick")
	fs.DurationVar(&b.Sessions.SweepInterval, "sweep-interval", b.Sessions.SweepInterval, "how often silent sessions are detached and idle ones leave memory")
	fs.DurationVar(&b.Sessions.DefaultPolicy.Liveness, "liveness", b.Sessions.DefaultPolicy.Liveness, "how long an active session may stay silent before the sweep detaches it")
	fs.Var(rulesValue{&b.Sessions.Rules}, "policies", `session policies by name pattern: "pattern=mode[/window[/liveness]],…", e.g. "quiz*=exclusive/60m"`)
	fs.IntVar(&b.QueueLimits.MaxMessages, "queue-max", b.QueueLimits.MaxMessages, "notifications a session's queue holds (1 keeps only the latest)")
	fs.IntVar(&b.QueueLimits.MaxBytes, "queue-max-bytes", b.QueueLimits.MaxBytes, "bytes of notification data a session's queue holds")
	fs.Var(policyValue{&b.QueueLimits.Policy}, "queue-policy", "what a full queue does with a new notification: drop_oldest, drop_newest or reject")
	fs.Var(queueRulesValue{&b.QueueRules}, "queue-rules", `queue limits by session name pattern: "pattern=max[/max-bytes[/policy]],…", e.g. "gps*=1,inbox*=10000/4194304/reject"`)
	fs.IntVar(&b.DeliveryWindow, "delivery-window", b.DeliveryWindow, "notifications sent to a device and not yet acknowledged, at most")
	fs.IntVar(&b.Sessions.Retention.MaxEvents, "journal-max-events", b.Sessions.Retention.MaxEvents, "journal events kept per session")
	fs.DurationVar(&b.Sessions.Retention.MaxAge, "journal-max-age", b.Sessions.Retention.MaxAge, "journal events older than this are dropped (0 keeps them)")
	fs.Var(snapshotKeysValue{&b.SnapshotKeys, &c.keysErr}, "snapshot-keys", `session snapshot keys: a file of "ID:HEX" lines, or the keys inline ("ID:HEX,…"); the first seals, all open; empty: snapshots off`)
	fs.DurationVar(&b.SnapshotTTL, "snapshot-ttl", b.SnapshotTTL, "how long a sealed session snapshot can be restored from")
	fs.BoolVar(&c.demoCalls, "demo-calls", c.demoCalls, "register the demo page's exactly-once calls demo.buy and demo.count")
	fs.StringVar(&c.logLevel, "log-level", c.logLevel, "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", c.logFormat, "text or json")
	return fs
}

// envName is the environment variable of a setting.
func envName(flagName string) string {
	return "TETHER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// loadServeConfig parses args, then fills what they did not set from
// the environment and then the config file (named by --config or TETHER_CONFIG).
func loadServeConfig(args []string, out io.Writer, lookupEnv func(string) (string, bool)) (*serveConfig, error) {
	c := &serveConfig{broker: broker.DefaultConfig(), logLevel: "info", logFormat: "text", demoCalls: true}
	fs := serveFlags(c, out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("serve: unexpected argument %q", fs.Arg(0))
	}
	fromFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fromFlags[f.Name] = true })
	if !fromFlags["config"] {
		if v, ok := lookupEnv(envName("config")); ok {
			c.file = v
		}
	}
	if c.file != "" {
		if err := applyFile(fs, c.file, fromFlags); err != nil {
			return nil, err
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := lookupEnv(envName(f.Name))
		if err != nil || !ok || fromFlags[f.Name] || f.Name == "config" {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = fmt.Errorf("environment %s=%q: %v", envName(f.Name), v, explain(f, serr))
		}
	})
	if err != nil {
		return nil, err
	}
	for i := range c.broker.QueueRules { // rules without bytes or a policy inherit --queue-max-bytes and --queue-policy
		r := &c.broker.QueueRules[i]
		if r.Limits.MaxBytes == 0 {
			r.Limits.MaxBytes = c.broker.QueueLimits.MaxBytes
		}
		if r.Limits.Policy == "" {
			r.Limits.Policy = c.broker.QueueLimits.Policy
		}
	}
	for i := range c.broker.Sessions.Rules { // rules without a liveness inherit --liveness
		if c.broker.Sessions.Rules[i].Policy.Liveness == 0 {
			c.broker.Sessions.Rules[i].Policy.Liveness = c.broker.Sessions.DefaultPolicy.Liveness
		}
	}
	if c.keysErr != nil {
		return nil, usagef("snapshot-keys: %v", c.keysErr)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		return nil, err
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, fmt.Errorf("log-format: %q is not text or json", c.logFormat)
	}
	return c, flagError(c.broker.Validate())
}

// flagOf maps broker.Config fields (as broker.ConfigError names them) to
// the flags that set them. Settings without a flag keep their Go name.
var flagOf = map[string]string{
	"DataDir": "data-dir", "MQTTAddr": "mqtt-addr", "WSAddr": "ws-addr", "HTTPAddr": "http-addr",
	"AdminAddr": "admin-addr", "WSOrigins": "ws-origins", "TLSCertFile": "tls-cert", "TLSKeyFile": "tls-key",
	"MaxClients": "max-clients", "MaxPacketSize": "max-packet-size", "MaxWritesPending": "max-writes-pending",
	"ReadBufferSize": "read-buffer", "WriteBufferSize": "write-buffer", "SessionExpiry": "session-expiry",
	"ConnectTimeout": "connect-timeout", "ShutdownTimeout": "shutdown-timeout", "GCInterval": "gc-interval", "SyncDelay": "sync-delay",
	"Sessions.TickInterval": "tick-interval", "Sessions.SweepInterval": "sweep-interval",
	"Sessions.DefaultPolicy.Liveness": "liveness", "Sessions.Rules": "policies",
	"Sessions.Retention.MaxEvents": "journal-max-events", "Sessions.Retention.MaxAge": "journal-max-age",
	"SnapshotKeys": "snapshot-keys", "SnapshotTTL": "snapshot-ttl",
	"QueueLimits.MaxMessages": "queue-max", "QueueLimits.MaxBytes": "queue-max-bytes", "QueueLimits.Policy": "queue-policy",
	"QueueRules": "queue-rules", "DeliveryWindow": "delivery-window",
}

// flagName is the flag of a broker.Config field: its own, or that of the
// nearest enclosing field (Sessions.Rules[0].Policy.Window -> policies).
func flagName(field string) (string, bool) {
	for f := field; f != ""; {
		if name, ok := flagOf[f]; ok {
			return name, true
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return "", false
}

// flagError rewrites a *broker.ConfigError to name the flag the user typed
// (here too when the message names another field); other errors pass.
func flagError(err error) error {
	var ce *broker.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	name, ok := flagName(ce.Field)
	switch {
	case !ok:
		name = ce.Field // not settable by flag: only a program can get it wrong
	case flagOf[ce.Field] != name:
		name += " (" + ce.Field + ")" // a part of the flag's value: which one
	}
	msg := ce.Msg
	for field, flagName := range flagOf {
		msg = replaceWord(msg, field, flagName)
	}
	return fmt.Errorf("%s: %s", name, msg)
}

// replaceWord replaces old in s where it stands as a whole word.
func replaceWord(s, old, repl string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, old)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(old)
		whole := (i == 0 || !isWordByte(s[i-1])) && (end == len(s) || !isWordByte(s[end]))
		b.WriteString(s[:i])
		if whole {
			b.WriteString(repl)
		} else {
			b.WriteString(old)
		}
		s = s[end:]
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c == '.' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// brokerConfig is the broker.Config that serve opens: the settings, and
// the demo page's call handlers (unless demo-calls is off) beside any
// handlers already configured, which win.
func (c *serveConfig) brokerConfig() broker.Config {
	cfg := c.broker
	if c.demoCalls {
		h := web.DemoHandlers()
		maps.Copy(h, cfg.Handlers)
		cfg.Handlers = h
	}
	return cfg
}

// applyFile sets every key of the YAML file whose flag was not given.
func applyFile(fs *flag.FlagSet, path string, fromFlags map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := map[string]string{} // flag name -> the file's key for it
	for key := range m {
		name := strings.ReplaceAll(key, "_", "-")
		f := fs.Lookup(name)
		if f == nil || name == "config" {
			return fmt.Errorf("config file %s: unknown setting %q", path, key)
		}
		if other, dup := keys[name]; dup {
			return fmt.Errorf("config file %s: %q and %q are the same setting: keep one", path, min(key, other), max(key, other))
		}
		keys[name] = key
	}
	for key, v := range m {
		name := strings.ReplaceAll(key, "_", "-")
		f := fs.Lookup(name)
		if fromFlags[name] {
			continue
		}
		if err := f.Value.Set(yamlString(v)); err != nil {
			return fmt.Errorf("config file %s: %s: %v", path, key, explain(f, err))
		}
	}
	return nil
}

func yamlString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log-level: %q is not debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger builds the process logger on w.
func (c *serveConfig) newLogger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.logLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// listValue is a comma-separated list flag; each Set replaces the list.
type listValue struct{ p *[]string }

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listValue) Set(s string) error {
	*l.p = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.p = append(*l.p, part)
		}
	}
	return nil
}

// explain says what form f wants when err is the flag package's bare
// "parse error" (the command line's own message shows the usage instead).
func explain(f *flag.Flag, err error) error {
	if !strings.Contains(err.Error(), "parse error") {
		return err
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return err
	}
	switch g.Get().(type) {
	case time.Duration:
		return errors.New("want a duration like 5s, 1m30s or 720h")
	case bool:
		return errors.New("want true or false")
	case int, int64:
		return errors.New("want a whole number")
	}
	return err
}

// int32Value and uint32Value are flags for the mochi capabilities' sized integers.
type int32Value struct{ p *int32 }

func (v int32Value) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*v.p), 10)
}

func (v int32Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return errors.New("not a 32-bit integer")
	}
	*v.p = int32(n)
	return nil
}

type uint32Value struct{ p *uint32 }

func (v uint32Value) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.FormatUint(uint64(*v.p), 10)
}

func (v uint32Value) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return errors.New("not a non-negative 32-bit integer")
	}
	*v.p = uint32(n)
	return nil
}

// rulesValue parses session policy rules: "pattern=mode[/window[/liveness]]"
// separated by commas. Each Set replaces the list.
type rulesValue struct{ p *[]sessions.Rule }

func (v rulesValue) String() string {
	if v.p == nil {
		return ""
	}
	parts := make([]string, len(*v.p))
	for i, r := range *v.p { // as Set reads it: unset fields left out
		fields := []string{string(r.Policy.Mode), "", ""}
		if r.Policy.Window > 0 {
			fields[1] = r.Policy.Window.String()
		}
		if r.Policy.Liveness > 0 {
			fields[2] = r.Policy.Liveness.String()
		}
		parts[i] = r.Pattern + "=" + strings.TrimRight(strings.Join(fields, "/"), "/")
	}
	return strings.Join(parts, ",")
}

// eachRule calls fn for each comma-separated "pattern=a[/b[/c]]" item of
// s (want names the fields, for errors), with the fields split at '/'.
func eachRule(s, want string, fn func(item, pattern string, fields []string) error) error {
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		pattern, spec, ok := strings.Cut(item, "=")
		if !ok || pattern == "" {
			return fmt.Errorf("%q: want %s", item, want)
		}
		fields := strings.Split(spec, "/")
		if len(fields) > 3 {
			return fmt.Errorf("%q: too many /-separated fields", item)
		}
		if err := fn(item, pattern, fields); err != nil {
			return err
		}
	}
	return nil
}

func (v rulesValue) Set(s string) error {
	*v.p = nil
	return eachRule(s, "pattern=mode[/window[/liveness]]", func(item, pattern string, fields []string) error {
		r := sessions.Rule{Pattern: pattern, Policy: sessions.Policy{Mode: sessions.Mode(fields[0])}}
		for i, dst := range []*time.Duration{&r.Policy.Window, &r.Policy.Liveness} {
			if len(fields) > i+1 && fields[i+1] != "" {
				d, err := time.ParseDuration(fields[i+1])
				if err != nil {
					return fmt.Errorf("%q: %v", item, err)
				}
				*dst = d
			}
		}
		check := r
		if len(fields) < 3 || fields[2] == "" { // unset: filled from --liveness after parsing
			check.Policy.Liveness = time.Second
		}
		if err := check.Validate(); err != nil {
			var ce *sessions.ConfigError
			if errors.As(err, &ce) { // Pattern, Policy.Mode… -> pattern, mode…
				return fmt.Errorf("%q: %s %s", item, strings.ToLower(strings.TrimPrefix(ce.Field, "Policy.")), ce.Msg)
			}
			return fmt.Errorf("%q: %v", item, err)
		}
		*v.p = append(*v.p, r)
		return nil
	})
}

// policyValue is a queue overflow policy, checked when set.
type policyValue struct{ p *queues.Policy }

func (v policyValue) String() string {
	if v.p == nil {
		return ""
	}
	return string(*v.p)
}

func (v policyValue) Set(s string) error {
	p := queues.Policy(strings.TrimSpace(s))
	if err := (queues.Limits{MaxMessages: 1, MaxBytes: 1, Policy: p}).Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), queues.ErrInvalid.Error()+": "))
	}
	*v.p = p
	return nil
}

// queueRulesValue parses queue limits by session name pattern:
// "pattern=max[/max-bytes[/policy]]" separated by commas; a rule without
// max-bytes or policy takes --queue-max-bytes and --queue-policy after
// parsing. Each Set replaces the list.
type queueRulesValue struct{ p *[]broker.QueueRule }

func (v queueRulesValue) String() string {
	if v.p == nil {
		return ""
	}
	parts := make([]string, len(*v.p))
	for i, r := range *v.p { // as Set reads it: unset fields left out
		fields := []string{strconv.Itoa(r.Limits.MaxMessages), "", string(r.Limits.Policy)}
		if r.Limits.MaxBytes > 0 {
			fields[1] = strconv.Itoa(r.Limits.MaxBytes)
		}
		parts[i] = r.Pattern + "=" + strings.TrimRight(strings.Join(fields, "/"), "/")
	}
	return strings.Join(parts, ",")
}

func (v queueRulesValue) Set(s string) error {
	*v.p = nil
	return eachRule(s, "pattern=max[/max-bytes[/policy]]", func(item, pattern string, fields []string) error {
		if _, err := path.Match(pattern, ""); err != nil {
			return fmt.Errorf("%q: pattern: %v", item, err)
		}
		r := broker.QueueRule{Pattern: pattern}
		for i, dst := range []*int{&r.Limits.MaxMessages, &r.Limits.MaxBytes} {
			if i >= len(fields) || (i > 0 && fields[i] == "") {
				continue
			}
			n, err := strconv.Atoi(fields[i])
			if err != nil || n < 1 {
				return fmt.Errorf("%q: %s %q is not a positive number", item, []string{"max", "max-bytes"}[i], fields[i])
			}
			*dst = n
		}
		if len(fields) == 3 && fields[2] != "" {
			if err := (policyValue{&r.Limits.Policy}).Set(fields[2]); err != nil {
				return fmt.Errorf("%q: %v", item, err)
			}
		}
		*v.p = append(*v.p, r)
		return nil
	})
}

// snapshotKeysValue reads snapshot keys inline ("ID:HEX,…") or from a file.
// Its value is secret, so no error may quote it: Set never fails (the flag
// package would print the value in its "invalid value" message) but keeps
// its error in err, which loadServeConfig reports.
type snapshotKeysValue struct {
	p   *[]snapshot.Key
	err *error
}

func (v snapshotKeysValue) String() string {
	if v.p == nil || len(*v.p) == 0 {
		return ""
	}
	return fmt.Sprintf("%d keys", len(*v.p)) // never print key material
}

func (v snapshotKeysValue) Set(s string) error {
	*v.p, *v.err = nil, nil
	if strings.TrimSpace(s) == "" {
		return nil
	}
	keys, inlineErr := snapshot.ParseKeys(strings.NewReader(s))
	if inlineErr == nil {
		*v.p = keys
		return nil
	}
	f, err := os.Open(s)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path may be the inline keys: never print it
		}
		*v.err = fmt.Errorf("neither inline keys (%v) nor a key file that can be read (%v)", strings.TrimPrefix(inlineErr.Error(), "snapshot: "), err)
		return nil
	}
	defer f.Close()
	if *v.p, err = snapshot.ParseKeys(f); err != nil {
		*v.err = fmt.Errorf("key file %s: %v", s, err)
	}
	return nil
}
