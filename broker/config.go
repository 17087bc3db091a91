package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path"
	"time"

	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
)

// Config is everything the broker needs to run. Fill it from DefaultConfig
// and change fields; Open calls Validate.
type Config struct {
	DataDir   string // Badger data directory
	MQTTAddr  string // MQTT over TCP (TLS when TLSCertFile is set)
	WSAddr    string // MQTT over WebSocket; empty disables it
	HTTPAddr  string // health, readiness and metrics; empty disables it
	AdminAddr string // operator API for the CLI; loopback only

	// WSOrigins are the browser Origins allowed to open a WebSocket, e.g.
	// "https://app.example.com"; "*" allows any. Empty means same origin: the
	// page's host must be the WebSocket's host, on the HTTP or WebSocket port.
	WSOrigins []string

	TLSCertFile string // PEM certificate for MQTT/TCP and WebSocket (wss)
	TLSKeyFile  string // PEM private key for TLSCertFile

	// AllowAnonymous lets clients without credentials use plain MQTT topics
	// outside sessions/ and tether/, so Tether can also be an ordinary broker.
	AllowAnonymous bool

	MaxClients       int64         // connected clients at once
	MaxPacketSize    uint32        // largest MQTT packet accepted, bytes
	MaxWritesPending int32         // per-client outbound queue, packets
	ReadBufferSize   int           // per-client read buffer, bytes
	WriteBufferSize  int           // per-client write buffer, bytes
	SessionExpiry    time.Duration // longest time a disconnected clean=false MQTT session is kept

	ShutdownTimeout time.Duration // how long Close waits for in-flight work
	GCInterval      time.Duration // Badger value-log GC period

	RepliesKept uint64        // exactly-once replies kept per session (retries within this many calls get the stored reply)
	CallTimeout time.Duration // context deadline given to call handlers

	// Handlers are the exactly-once call handlers by method, in place when
	// the broker starts serving (Broker.Handle adds more later).
	Handlers map[string]nonce.Handler

	// QueueLimits bound every session's notification queue unless a
	// QueueRules pattern (or LimitQueue) says otherwise.
	QueueLimits queues.Limits
	QueueRules  []QueueRule
	// DeliveryWindow is how many notifications may be sent to a device and
	// not yet acknowledged; more follow as it acks.
	DeliveryWindow int

	// SnapshotKeys seal and open session snapshots (client-side
	// replication); the first seals, all open. None: snapshots are off.
	SnapshotKeys []snapshot.Key
	// SnapshotTTL is how long a sealed snapshot can be restored from.
	SnapshotTTL time.Duration

	// Sessions tunes the session registry (ticks, sweep, journal, policies).
	Sessions sessions.Config

	// Logger receives the broker's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the settings of `go run ./cmd/broker`.
func DefaultConfig() Config {
	return Config{
		DataDir:          "data",
		MQTTAddr:         ":1883",
		WSAddr:           ":8083",
		HTTPAddr:         ":8080",
		AdminAddr:        "127.0.0.1:0",
		MaxClients:       100_000,
		MaxPacketSize:    256 << 10,
		MaxWritesPending: 1024,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		SessionExpiry:    7 * 24 * time.Hour,
		ShutdownTimeout:  10 * time.Second,
		GCInterval:       5 * time.Minute,
		Sessions:         sessions.DefaultConfig(),
		RepliesKept:      1000,
		QueueLimits:      queues.DefaultLimits(),
		DeliveryWindow:   256,
		SnapshotTTL:      30 * 24 * time.Hour,
		CallTimeout:      10 * time.Second,
	}
}

// Validate reports the first setting that cannot work, naming it.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data-dir: must not be empty")
	}
	for _, a := range []struct{ name, addr string }{{"mqtt-addr", c.MQTTAddr}, {"ws-addr", c.WSAddr}, {"http-addr", c.HTTPAddr}} {
		if a.addr == "" && a.name == "mqtt-addr" {
			return errors.New("mqtt-addr: must not be empty")
		}
		if a.addr != "" {
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				return fmt.Errorf("%s: %q is not host:port: %v", a.name, a.addr, err)
			}
		}
	}
	host, _, err := net.SplitHostPort(c.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin-addr: %q is not host:port: %v", c.AdminAddr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("admin-addr: %q must be a loopback address", c.AdminAddr)
	}
	for _, o := range c.WSOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			return fmt.Errorf("ws-origins: %q is not an origin like https://host[:port]", o)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("tls-cert and tls-key: set both or neither")
	}
	switch {
	case c.MaxClients < 1:
		return fmt.Errorf("max-clients: must be at least 1, got %d", c.MaxClients)
	case c.MaxPacketSize < 1024:
		return fmt.Errorf("max-packet-size: must be at least 1024 bytes, got %d", c.MaxPacketSize)
	case c.MaxWritesPending < 16:
		return fmt.Errorf("max-writes-pending: must be at least 16, got %d", c.MaxWritesPending)
	case c.ReadBufferSize < 256 || c.WriteBufferSize < 256:
		return fmt.Errorf("read-buffer and write-buffer: must be at least 256 bytes, got %d and %d", c.ReadBufferSize, c.WriteBufferSize)
	case c.SessionExpiry < time.Second:
		return fmt.Errorf("session-expiry: must be at least 1s, got %s", c.SessionExpiry)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("shutdown-timeout: must be positive, got %s", c.ShutdownTimeout)
	case c.GCInterval <= 0:
		return fmt.Errorf("gc-interval: must be positive, got %s", c.GCInterval)
	}
	if err := c.QueueLimits.Validate(); err != nil {
		return fmt.Errorf("queue limits: %w", err)
	}
	for _, r := range c.QueueRules {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return fmt.Errorf("queue-rules: pattern %q: %v", r.Pattern, err)
		}
		if err := r.Limits.Validate(); err != nil {
			return fmt.Errorf("queue-rules: %q: %w", r.Pattern, err)
		}
	}
	if c.DeliveryWindow < 1 || c.DeliveryWindow > queues.MaxBatch {
		return fmt.Errorf("delivery-window: must be 1..%d, got %d", queues.MaxBatch, c.DeliveryWindow)
	}
	if len(c.SnapshotKeys) > 0 {
		if _, err := snapshot.NewSealer(c.SnapshotKeys, c.SnapshotTTL); err != nil {
			return fmt.Errorf("snapshot-keys: %w", err)
		}
	}
	if c.RepliesKept < 1 {
		return errors.New("replies-kept: must be at least 1")
	}
	if c.CallTimeout <= 0 {
		return fmt.Errorf("call-timeout: must be positive, got %s", c.CallTimeout)
	}
	return c.Sessions.Validate()
}
