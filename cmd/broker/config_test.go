package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/queues"
)

// env is a fake environment for loadServeConfig.
type env map[string]string

func (e env) lookup(k string) (string, bool) {
	v, ok := e[k]
	return v, ok
}

// writeYAML writes a config file into a temp directory and returns its path.
func writeYAML(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tether.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestServeConfigDefaults(t *testing.T) {
	c, err := loadServeConfig(nil, io.Discard, env{}.lookup)
	require.NoError(t, err)
	want := broker.DefaultConfig()
	require.Equal(t, want, c.broker)
	require.Equal(t, "info", c.logLevel)
	require.Equal(t, "text", c.logFormat)
	require.Empty(t, c.file)
}

func TestServeConfigPrecedence(t *testing.T) {
	const file = `
mqtt_addr: "127.0.0.1:1001"
max_clients: 10
session_expiry: 2h
allow_anonymous: true
log_level: warn
`
	tests := []struct {
		name  string
		args  []string
		env   env
		check func(t *testing.T, c *serveConfig)
	}{
		{"file over default", nil, nil, func(t *testing.T, c *serveConfig) {
			require.Equal(t, "127.0.0.1:1001", c.broker.MQTTAddr)
			require.Equal(t, int64(10), c.broker.MaxClients)
			require.Equal(t, 2*time.Hour, c.broker.SessionExpiry)
			require.True(t, c.broker.AllowAnonymous)
			require.Equal(t, "warn", c.logLevel)
			require.Equal(t, ":8083", c.broker.WSAddr, "unset everywhere: default")
		}},
		{"env over file", nil, env{
			"TETHER_MQTT_ADDR": "127.0.0.1:2002", "TETHER_MAX_CLIENTS": "20",
			"TETHER_SESSION_EXPIRY": "3h", "TETHER_ALLOW_ANONYMOUS": "false", "TETHER_WS_ADDR": "",
		}, func(t *testing.T, c *serveConfig) {
			require.Equal(t, "127.0.0.1:2002", c.broker.MQTTAddr)
			require.Equal(t, int64(20), c.broker.MaxClients)
			require.Equal(t, 3*time.Hour, c.broker.SessionExpiry)
			require.False(t, c.broker.AllowAnonymous)
			require.Empty(t, c.broker.WSAddr, `TETHER_WS_ADDR="" disables the WebSocket`)
			require.Equal(t, "warn", c.logLevel, "file still applies where env is silent")
		}},
		{"flag over env and file", []string{"--mqtt-addr", "127.0.0.1:3003", "--max-clients", "30", "--allow-anonymous=true", "--log-level", "debug"}, env{
			"TETHER_MQTT_ADDR": "127.0.0.1:2002", "TETHER_MAX_CLIENTS": "20", "TETHER_ALLOW_ANONYMOUS": "false", "TETHER_LOG_LEVEL": "error",
		}, func(t *testing.T, c *serveConfig) {
			require.Equal(t, "127.0.0.1:3003", c.broker.MQTTAddr)
			require.Equal(t, int64(30), c.broker.MaxClients)
			require.True(t, c.broker.AllowAnonymous)
			require.Equal(t, "debug", c.logLevel)
			require.Equal(t, 2*time.Hour, c.broker.SessionExpiry, "file still applies where flag and env are silent")
		}},
		{"flag over file", []string{"--session-expiry", "4h"}, nil, func(t *testing.T, c *serveConfig) {
			require.Equal(t, 4*time.Hour, c.broker.SessionExpiry)
			require.Equal(t, "127.0.0.1:1001", c.broker.MQTTAddr)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeYAML(t, file)
			for _, via := range []struct {
				name string
				args []string
				env  env
			}{
				{"--config", []string{"--config", path}, env{}},
				{"TETHER_CONFIG", nil, env{"TETHER_CONFIG": path}},
			} {
				t.Run(via.name, func(t *testing.T) {
					e := env{}
					for k, v := range tt.env {
						e[k] = v
					}
					for k, v := range via.env {
						e[k] = v
					}
					c, err := loadServeConfig(append(via.args, tt.args...), io.Discard, e.lookup)
					require.NoError(t, err)
					require.Equal(t, path, c.file)
					tt.check(t, c)
				})
			}
		})
	}
}

func TestServeConfigFlagOverConfigEnv(t *testing.T) {
	fromFlag := writeYAML(t, "max_clients: 1\n")
	fromEnv := writeYAML(t, "max_clients: 2\n")
	c, err := loadServeConfig([]string{"--config", fromFlag}, io.Discard, env{"TETHER_CONFIG": fromEnv}.lookup)
	require.NoError(t, err)
	require.Equal(t, fromFlag, c.file)
	require.Equal(t, int64(1), c.broker.MaxClients)
}

func TestServeConfigOrigins(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		args []string
		env  env
		want []string
	}{
		{"yaml list", "ws_origins:\n  - https://a.example\n  - https://b.example:8443\n", nil, nil,
			[]string{"https://a.example", "https://b.example:8443"}},
		{"yaml flow list", "ws_origins: [\"*\"]\n", nil, nil, []string{"*"}},
		{"yaml comma string", "ws_origins: \"https://a.example, https://b.example\"\n", nil, nil,
			[]string{"https://a.example", "https://b.example"}},
		{"env replaces file list", "ws_origins: [https://a.example]\n", nil, env{"TETHER_WS_ORIGINS": "https://c.example"},
			[]string{"https://c.example"}},
		{"flag replaces file list", "ws_origins: [https://a.example]\n", []string{"--ws-origins", "https://d.example,https://e.example"}, nil,
			[]string{"https://d.example", "https://e.example"}},
		{"empty list is same origin", "ws_origins: []\n", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--config", writeYAML(t, tt.yaml)}, tt.args...)
			c, err := loadServeConfig(args, io.Discard, tt.env.lookup)
			require.NoError(t, err)
			require.Equal(t, tt.want, c.broker.WSOrigins)
		})
	}
}

func TestServeConfigUnknownKey(t *testing.T) {
	for _, key := range []string{"mqtt_adr", "config", "logger"} {
		t.Run(key, func(t *testing.T) {
			path := writeYAML(t, "mqtt_addr: \":1883\"\n"+key+": x\n")
			_, err := loadServeConfig([]string{"--config", path}, io.Discard, env{}.lookup)
			require.ErrorContains(t, err, `unknown setting "`+key+`"`)
			require.ErrorContains(t, err, path)
		})
	}
}

func TestServeConfigBadValues(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   env
		yaml  string
		want  []string // each must appear in the error
		usage bool     // a command-line mistake: main exits 2
	}{
		{"negative packet size", []string{"--max-packet-size", "-1"}, nil, "", []string{"max-packet-size"}, true},
		{"tiny packet size", []string{"--max-packet-size", "100"}, nil, "", []string{"max-packet-size", "1024"}, false},
		{"writes pending overflow", []string{"--max-writes-pending", "3000000000"}, nil, "", []string{"max-writes-pending"}, true},
		{"writes pending below the delivery window", []string{"--max-writes-pending", "100"}, nil, "", []string{"max-writes-pending", "twice the delivery window (64)"}, false},
		{"unknown flag", []string{"--mqtt-adr", ":1"}, nil, "", []string{"mqtt-adr"}, true},
		{"stray argument", []string{"extra"}, nil, "", []string{`"extra"`}, true},
		{"env mqtt-addr", nil, env{"TETHER_MQTT_ADDR": "nonsense"}, "", []string{"mqtt-addr", "nonsense"}, false},
		{"env not a number", nil, env{"TETHER_MAX_CLIENTS": "many"}, "", []string{"TETHER_MAX_CLIENTS", "many"}, false},
		{"env not a bool", nil, env{"TETHER_ALLOW_ANONYMOUS": "yes please"}, "", []string{"TETHER_ALLOW_ANONYMOUS", "want true or false"}, false},
		{"env number wanted", nil, env{"TETHER_QUEUE_MAX": "abc"}, "", []string{"TETHER_QUEUE_MAX", "want a whole number"}, false},
		{"env duration wanted", nil, env{"TETHER_TICK_INTERVAL": "5"}, "", []string{"TETHER_TICK_INTERVAL", "want a duration like 5s"}, false},
		{"yaml duration wanted", nil, nil, "tick_interval: soon\n", []string{"tick_interval", "want a duration like 5s"}, false},
		{"empty mqtt-addr", []string{"--mqtt-addr", ""}, nil, "", []string{"mqtt-addr"}, false},
		{"bad ws-addr", []string{"--ws-addr", "8083"}, nil, "", []string{"ws-addr"}, false},
		{"admin not loopback", []string{"--admin-addr", "0.0.0.0:1"}, nil, "", []string{"admin-addr", "loopback"}, false},
		{"admin hostname", []string{"--admin-addr", "example.com:1"}, nil, "", []string{"admin-addr", "loopback"}, false},
		{"log format", []string{"--log-format", "xml"}, nil, "", []string{"log-format", "xml"}, false},
		{"log level", nil, env{"TETHER_LOG_LEVEL": "loud"}, "", []string{"log-level", "loud"}, false},
		{"cert without key", []string{"--tls-cert", "cert.pem"}, nil, "", []string{"tls-cert", "tls-key"}, false},
		{"key without cert", nil, nil, "tls_key: key.pem\n", []string{"tls-cert", "tls-key"}, false},
		{"origin not an origin", []string{"--ws-origins", "example.com"}, nil, "", []string{"ws-origins", "example.com"}, false},
		{"origin with path", []string{"--ws-origins", "https://a.example/app"}, nil, "", []string{"ws-origins"}, false},
		{"empty data-dir", []string{"--data-dir", ""}, nil, "", []string{"data-dir"}, false},
		{"zero max-clients", []string{"--max-clients", "0"}, nil, "", []string{"max-clients"}, false},
		{"small buffer", []string{"--read-buffer", "16"}, nil, "", []string{"read-buffer"}, false},
		{"short session expiry", []string{"--session-expiry", "10ms"}, nil, "", []string{"session-expiry"}, false},
		{"session expiry past MQTT's", []string{"--session-expiry", "1193047h"}, nil, "", []string{"session-expiry", "at most", "1193046h"}, false},
		{"zero shutdown timeout", []string{"--shutdown-timeout", "0s"}, nil, "", []string{"shutdown-timeout"}, false},
		{"zero connect timeout", []string{"--connect-timeout", "0s"}, nil, "", []string{"connect-timeout", "must be positive"}, false},
		{"yaml duration without unit", nil, nil, "session_expiry: 10\n", []string{"session_expiry"}, false},
		{"yaml not a number", nil, nil, "max_clients: lots\n", []string{"max_clients"}, false},
		{"yaml gc interval", nil, nil, "gc_interval: -1m\n", []string{"gc-interval"}, false},
		{"yaml syntax", nil, nil, "mqtt_addr: [\n", []string{"config file"}, false},
		{"yaml key twice", nil, nil, "mqtt_addr: \":1\"\nmqtt-addr: \":2\"\n", []string{"config file", `"mqtt-addr" and "mqtt_addr"`, "same setting"}, false},
		{"negative journal age", []string{"--journal-max-age", "-1h"}, nil, "", []string{"journal-max-age", "-1h0m0s", "negative"}, false},
		{"zero journal events", []string{"--journal-max-events", "0"}, nil, "", []string{"journal-max-events", "at least 1"}, false},
		{"zero snapshot ttl", []string{"--snapshot-ttl", "0s"}, nil, "", []string{"snapshot-ttl", "positive"}, false},
		{"zero snapshot ttl with keys", []string{"--snapshot-ttl", "0s", "--snapshot-keys", "k1:" + strings.Repeat("ab", 32)}, nil, "", []string{"snapshot-ttl", "positive"}, false},
		{"short tick interval", []string{"--tick-interval", "5ms"}, nil, "", []string{"tick-interval", "10ms", "5ms"}, false},
		{"short sweep interval", nil, env{"TETHER_SWEEP_INTERVAL": "1ms"}, "", []string{"sweep-interval", "10ms"}, false},
		{"short liveness", nil, nil, "liveness: 500ms\n", []string{"liveness", "1s", "500ms"}, false},
		{"policy mode", []string{"--policies", "quiz*=sometimes"}, nil, "", []string{"policies", "mode", "sometimes"}, true},
		{"policy liveness zero", []string{"--policies", "quiz*=takeover/10m/0s"}, nil, "", []string{"policies", "liveness", "at least 1s"}, true},
		{"policy pattern", []string{"--policies", "[=exclusive"}, nil, "", []string{"policies", "pattern"}, true},
		{"policy negative window", []string{"--policies", "quiz*=exclusive/-1m"}, nil, "", []string{"policies", "window", "negative"}, true},
		{"queue policy", []string{"--queue-policy", "drop_all"}, nil, "", []string{"queue-policy", "drop_all", "reject"}, true},
		{"zero queue max", []string{"--queue-max", "0"}, nil, "", []string{"queue-max", "at least 1"}, false},
		{"yaml queue bytes", nil, nil, "queue_max_bytes: -1\n", []string{"queue-max-bytes", "at least 1"}, false},
		{"queue rule without max", []string{"--queue-rules", "gps*="}, nil, "", []string{"queue-rules", "gps*=", "max"}, true},
		{"queue rule zero", []string{"--queue-rules", "gps*=0"}, nil, "", []string{"queue-rules", "positive"}, true},
		{"queue rule pattern", []string{"--queue-rules", "[=1"}, nil, "", []string{"queue-rules", "pattern"}, true},
		{"queue rule policy", []string{"--queue-rules", "gps*=1/10/keep"}, nil, "", []string{"queue-rules", "keep"}, true},
		{"queue rule fields", []string{"--queue-rules", "gps*=1/2/reject/4"}, nil, "", []string{"queue-rules", "too many"}, true},
		{"zero delivery window", []string{"--delivery-window", "0"}, nil, "", []string{"delivery-window", "1..1000"}, false},
		{"delivery window over writes", []string{"--delivery-window", "100"}, nil, "", []string{"max-writes-pending", "twice the delivery window"}, false},
		{"zero gc interval", []string{"--gc-interval", "0s"}, nil, "", []string{"gc-interval", "positive"}, false},
		{"long sync delay", []string{"--sync-delay", "50ms"}, nil, "", []string{"sync-delay", "0 up to 10ms", "50ms"}, false},
		{"yaml negative sync delay", nil, nil, "sync_delay: -1ms\n", []string{"sync-delay", "0 up to 10ms"}, false},
		{"tiny write buffer", []string{"--write-buffer", "16"}, nil, "", []string{"write-buffer", "256"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.yaml != "" {
				args = append([]string{"--config", writeYAML(t, tt.yaml)}, args...)
			}
			_, err := loadServeConfig(args, io.Discard, tt.env.lookup)
			require.Error(t, err)
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
			// The user typed flags, not Go names.
			require.NotContains(t, err.Error(), "sessions: ")
			for field := range flagOf {
				require.NotRegexp(t, `(^|[^A-Za-z.])`+regexp.QuoteMeta(field)+`($|[^A-Za-z])`, err.Error(), "names the Go field %s", field)
			}
			require.Equal(t, tt.usage, errors.As(err, new(usageError)), "usageError? %T: %v", err, err)
		})
	}
}

// TestServeConfigQueues reads queue limits and rules from flags, file and
// environment; a rule without bytes or a policy takes the defaults given.
func TestServeConfigQueues(t *testing.T) {
	yaml := writeYAML(t, "queue_rules: [\"gps*=1\", \"inbox*=100/2048/reject\"]\nqueue_max_bytes: 4096\n")
	c, err := loadServeConfig([]string{"--config", yaml, "--queue-max", "50", "--delivery-window", "16"}, io.Discard,
		env{"TETHER_QUEUE_POLICY": "drop_newest"}.lookup)
	require.NoError(t, err)
	require.Equal(t, queues.Limits{MaxMessages: 50, MaxBytes: 4096, Policy: queues.DropNewest}, c.broker.QueueLimits)
	require.Equal(t, []broker.QueueRule{
		{Pattern: "gps*", Limits: queues.Limits{MaxMessages: 1, MaxBytes: 4096, Policy: queues.DropNewest}},
		{Pattern: "inbox*", Limits: queues.Limits{MaxMessages: 100, MaxBytes: 2048, Policy: queues.Reject}},
	}, c.broker.QueueRules)
	require.Equal(t, 16, c.broker.DeliveryWindow)
}

func TestServeConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.yaml")
	_, err := loadServeConfig(nil, io.Discard, env{"TETHER_CONFIG": path}.lookup)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "config file")
}

func TestServeConfigHelp(t *testing.T) {
	var out strings.Builder
	_, err := loadServeConfig([]string{"-h"}, &out, env{}.lookup)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, out.String(), "-max-packet-size")
}

// readmeSettings returns the rows of README.md's configuration table:
// setting name -> default cell.
func readmeSettings(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	require.True(t, ok, "README.md has a Configuration section")
	section, _, _ = strings.Cut(section, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `([a-z-]+)` \\|([^|]*)\\|")
	rows := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		rows[m[1]] = strings.TrimSpace(m[2])
	}
	require.NotEmpty(t, rows)
	return rows
}

// TestReadmeDocumentsEverySetting keeps the README's configuration table
// and the flags of serve in step: same names, same defaults.
func TestReadmeDocumentsEverySetting(t *testing.T) {
	rows := readmeSettings(t)
	defaults, err := loadServeConfig(nil, io.Discard, env{}.lookup)
	require.NoError(t, err)
	fs := serveFlags(defaults, io.Discard)

	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	fs.VisitAll(func(f *flag.Flag) {
		t.Run(f.Name, func(t *testing.T) {
			require.Contains(t, string(data), "| `"+f.Name+"` |", "README.md configuration table lacks %s", f.Name)
			cell, ok := rows[f.Name]
			require.True(t, ok)
			require.Equal(t, f.DefValue, readmeDefault(cell), "README default of %s", f.Name)
		})
	})
	for name := range rows {
		require.NotNil(t, fs.Lookup(name), "README.md documents %s, which is not a flag of serve", name)
	}
}

// readmeDefault turns a README default cell into the flag's DefValue form:
// "`168h`" -> "168h0m0s", "`data`" -> "data", prose or empty -> "".
func readmeDefault(cell string) string {
	v, ok := strings.CutPrefix(cell, "`")
	if !ok {
		return ""
	}
	v = strings.TrimSuffix(v, "`")
	if d, err := time.ParseDuration(v); err == nil && strings.ContainsAny(v, "hms") {
		return d.String()
	}
	return v
}
