package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path"
	"strings"
	"time"

	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
)

// maxSessionExpiry is the longest SessionExpiry: MQTT carries expiry
// intervals as 32-bit seconds.
const maxSessionExpiry = time.Duration(math.MaxUint32) * time.Second

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
	// ConnectTimeout is how long a new connection (TCP, or WebSocket once
	// upgraded) may take to send its CONNECT; a silent one is closed.
	ConnectTimeout time.Duration

	ShutdownTimeout time.Duration // how long Close waits for in-flight work
	GCInterval      time.Duration // Badger value-log GC period
	SyncDelay       time.Duration // least time between sync rounds' starts (persistence.Config.SyncDelay); 0 = none

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
		MaxWritesPending: 128, // its channel is allocated whole for every client: 1 KiB at 128
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		SessionExpiry:    7 * 24 * time.Hour,
		ConnectTimeout:   10 * time.Second,
		ShutdownTimeout:  10 * time.Second,
		GCInterval:       5 * time.Minute,
		Sessions:         sessions.DefaultConfig(),
		RepliesKept:      1000,
		QueueLimits:      queues.DefaultLimits(),
		DeliveryWindow:   64,
		SnapshotTTL:      30 * 24 * time.Hour,
		CallTimeout:      10 * time.Second,
	}
}

// ConfigError is a Config setting that cannot work. Field is its Go name
// in Config (MQTTAddr, Sessions.TickInterval, QueueRules[1].Limits); Msg
// may name other fields the same way. A program that reads settings under
// names of its own (cmd/broker's flags) can so name the one the user typed.
type ConfigError struct {
	Field string
	Msg   string // e.g. "must be at least 1024 bytes, got 100"
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Msg }

// limitsField names the field of invalid limits l that is wrong.
func limitsField(l queues.Limits) string {
	switch {
	case l.MaxMessages < 1:
		return "QueueLimits.MaxMessages"
	case l.MaxBytes < 1:
		return "QueueLimits.MaxBytes"
	}
	return "QueueLimits.Policy"
}

func configErrorf(field, format string, a ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Validate reports the first setting that cannot work, as a *ConfigError.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return configErrorf("DataDir", "must not be empty")
	}
	if c.MQTTAddr == "" {
		return configErrorf("MQTTAddr", "must not be empty")
	}
	for _, a := range []struct{ field, addr string }{{"MQTTAddr", c.MQTTAddr}, {"WSAddr", c.WSAddr}, {"HTTPAddr", c.HTTPAddr}} {
		if a.addr != "" {
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				return configErrorf(a.field, "%q is not host:port: %v", a.addr, err)
			}
		}
	}
	host, _, err := net.SplitHostPort(c.AdminAddr)
	if err != nil {
		return configErrorf("AdminAddr", "%q is not host:port: %v", c.AdminAddr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return configErrorf("AdminAddr", "%q must be a loopback address", c.AdminAddr)
	}
	for _, o := range c.WSOrigins {
		if o == "*" {
			continue
		}
		if _, err := canonicalOrigin(o); err != nil {
			return configErrorf("WSOrigins", "%q is not an origin like https://host[:port]: %v", o, err)
		}
	}
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		return configErrorf("TLSKeyFile", "must be set with TLSCertFile")
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		return configErrorf("TLSCertFile", "must be set with TLSKeyFile")
	case c.MaxClients < 1:
		return configErrorf("MaxClients", "must be at least 1, got %d", c.MaxClients)
	case c.MaxPacketSize < 1024:
		return configErrorf("MaxPacketSize", "must be at least 1024 bytes, got %d", c.MaxPacketSize)
	case c.MaxWritesPending < 16:
		return configErrorf("MaxWritesPending", "must be at least 16, got %d", c.MaxWritesPending)
	case c.ReadBufferSize < 256:
		return configErrorf("ReadBufferSize", "must be at least 256 bytes, got %d", c.ReadBufferSize)
	case c.WriteBufferSize < 256:
		return configErrorf("WriteBufferSize", "must be at least 256 bytes, got %d", c.WriteBufferSize)
	case c.SessionExpiry < time.Second || c.SessionExpiry > maxSessionExpiry:
		return configErrorf("SessionExpiry", "must be at least 1s and at most %s (MQTT's largest expiry interval), got %s", maxSessionExpiry, c.SessionExpiry)
	case c.ConnectTimeout <= 0:
		return configErrorf("ConnectTimeout", "must be positive, got %s", c.ConnectTimeout)
	case c.ShutdownTimeout <= 0:
		return configErrorf("ShutdownTimeout", "must be positive, got %s", c.ShutdownTimeout)
	case c.GCInterval <= 0:
		return configErrorf("GCInterval", "must be positive, got %s", c.GCInterval)
	case c.SyncDelay < 0 || c.SyncDelay > persistence.MaxSyncDelay:
		return configErrorf("SyncDelay", "must be 0 up to %s, got %s", persistence.MaxSyncDelay, c.SyncDelay)
	}
	if err := c.QueueLimits.Validate(); err != nil {
		return configErrorf(limitsField(c.QueueLimits), "%s", strings.TrimPrefix(err.Error(), queues.ErrInvalid.Error()+": "))
	}
	for i, r := range c.QueueRules {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return configErrorf(fmt.Sprintf("QueueRules[%d].Pattern", i), "%q: %v", r.Pattern, err)
		}
		if err := r.Limits.Validate(); err != nil {
			return configErrorf(fmt.Sprintf("QueueRules[%d].Limits", i), "%q: %v", r.Pattern, err)
		}
	}
	if c.DeliveryWindow < 1 || c.DeliveryWindow > queues.MaxBatch {
		return configErrorf("DeliveryWindow", "must be 1..%d, got %d", queues.MaxBatch, c.DeliveryWindow)
	}
	if c.DeliveryWindow > int(c.MaxWritesPending)/2 {
		// mochi drops a publish that finds a client's write queue full; a
		// notification dropped there would be skipped by the device's
		// cumulative ack. Half the queue stays free for replies and ticks.
		return configErrorf("MaxWritesPending", "must be at least twice the delivery window (%d), got %d", c.DeliveryWindow, c.MaxWritesPending)
	}
	if c.SnapshotTTL <= 0 { // refused even without keys: a setting that is set must make sense
		return configErrorf("SnapshotTTL", "must be positive, got %s", c.SnapshotTTL)
	}
	if len(c.SnapshotKeys) > 0 {
		if _, err := snapshot.NewSealer(c.SnapshotKeys, c.SnapshotTTL); err != nil {
			return configErrorf("SnapshotKeys", "%v", err)
		}
		// A remember the broker accepts must still seal.
		if err := snapshot.CheckLimits(c.Sessions.MaxMemento, c.Sessions.MaxPhase); err != nil {
			return configErrorf("Sessions.MaxMemento", "%v", err)
		}
	}
	if c.RepliesKept < 1 {
		return configErrorf("RepliesKept", "must be at least 1, got %d", c.RepliesKept)
	}
	if c.CallTimeout <= 0 {
		return configErrorf("CallTimeout", "must be positive, got %s", c.CallTimeout)
	}
	if err := c.Sessions.Validate(); err != nil {
		var se *sessions.ConfigError
		if errors.As(err, &se) {
			return configErrorf("Sessions."+se.Field, "%s", se.Msg)
		}
		return err
	}
	return nil
}
