// Package broker is Tether's composition root: it embeds mochi-mqtt, opens
// the store, wires the parts (auth, and the session parts as they arrive)
// into mochi hooks, and serves the MQTT, WebSocket, HTTP and admin
// listeners. Applications embed it through Open and the methods of Broker.
package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
)

// Broker is a running Tether broker.
type Broker struct {
	cfg      Config
	log      *slog.Logger
	store    *persistence.Store
	tokens   *auth.Tokens
	registry *sessions.Registry
	calls    *calls
	delivery *delivery
	admin    *Admin
	stop     context.CancelFunc // background loops
	wg       sync.WaitGroup
	srv      *mqtt.Server
	metrics  *metrics

	mqttLn, wsLn, httpLn, adminLn net.Listener
	httpSrv, adminSrv             *http.Server
	tcp                           *tcpListener
	ws                            *wsListener // nil without a WebSocket listener

	ready     atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Addrs are the addresses the broker listens on; empty when disabled.
type Addrs struct {
	MQTT, WS, HTTP, Admin string
}

// Open validates cfg, opens the data directory, binds every listener and
// starts serving. The broker is ready when Open returns.
func Open(cfg Config) (_ *Broker, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Broker{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			b.closeListeners()
			if b.registry != nil {
				b.registry.Close()
			}
			if b.store != nil {
				_ = b.store.Close()
			}
		}
	}()

	pcfg := persistence.DefaultConfig()
	pcfg.Dir, pcfg.GCInterval, pcfg.SyncDelay, pcfg.Logger = cfg.DataDir, cfg.GCInterval, cfg.SyncDelay, log
	if b.store, err = persistence.Open(pcfg); err != nil {
		return nil, err
	}
	b.tokens = auth.NewTokens(b.store)

	if err := b.listen(); err != nil {
		return nil, err
	}
	b.srv = mqtt.New(b.mqttOptions())
	b.metrics = newMetrics(b.srv, b.store)
	out := newOutbox(b.srv, log.With("component", "outbox"))
	scfg := cfg.Sessions
	scfg.Logger = log.With("component", "sessions")
	if b.registry, err = sessions.New(scfg, b.store, out); err != nil {
		return nil, err
	}
	b.admin = &Admin{Tokens: b.tokens, Sessions: b.registry, store: b.store, QueueInfo: func(u, s string) (QueueInfo, error) { return b.delivery.info(u, s) }}
	b.delivery = &delivery{store: b.store, registry: b.registry, out: out, limits: cfg.QueueLimits, rules: cfg.QueueRules,
		window: cfg.DeliveryWindow, metrics: newQueueMetrics(b.metrics.reg), cursor: map[string]*cursor{}, pumping: map[string]*pumpDue{}}
	b.calls = &calls{registry: b.registry, delivery: b.delivery, limits: cfg.Sessions, log: log.With("component", "calls"),
		keep: cfg.RepliesKept, timeout: cfg.CallTimeout, handlers: map[string]nonce.Handler{}}
	for method, h := range cfg.Handlers {
		b.calls.handlers[method] = h
	}
	var snaps *snapshots
	if len(cfg.SnapshotKeys) > 0 {
		sealer, err := snapshot.NewSealer(cfg.SnapshotKeys, cfg.SnapshotTTL)
		if err != nil {
			return nil, err
		}
		snaps = &snapshots{sealer: sealer, registry: b.registry, store: b.store}
	}
	acks := &publishQueues{} // one per broker: accepted and refused publishes share each connection's order
	acc := &access{tokens: b.tokens, allowAnonymous: cfg.AllowAnonymous, metrics: b.metrics, log: log.With("component", "access"), srv: b.srv, out: out, acks: acks}
	sessHook := &sessionHook{access: acc, registry: b.registry, calls: b.calls, delivery: b.delivery, snaps: snaps, out: out, log: log.With("component", "sessions"), acks: acks}
	b.delivery.subscribed = sessHook.subscribed
	acks.commitNotifies = sessHook.commitNotifies
	hooks := []mqtt.Hook{
		acc, // first: every later hook sees only permitted packets
		sessHook,
		&mqttState{store: b.store, log: log.With("component", "mqtt-state")},
	}
	for _, h := range hooks {
		if err := b.srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("broker: hook %s: %w", h.ID(), err)
		}
	}
	b.tcp = newTCPListener("mqtt", b.mqttLn, cfg.ConnectTimeout, log.With("component", "mqtt-listener"))
	if err := b.srv.AddListener(b.tcp); err != nil {
		return nil, err
	}
	if b.wsLn != nil {
		origins := originPolicy{samePort: []string{port(b.wsLn)}}
		for _, o := range cfg.WSOrigins {
			if o != "*" {
				o, _ = canonicalOrigin(o) // Validate refused those it cannot read
			}
			origins.allowed = append(origins.allowed, o)
		}
		if b.httpLn != nil {
			origins.samePort = append(origins.samePort, port(b.httpLn))
		}
		b.ws = newWSListener("ws", b.wsLn, origins, cfg.ConnectTimeout, log.With("component", "websocket"))
		if err := b.srv.AddListener(b.ws); err != nil {
			return nil, err
		}
	}
	if err := b.srv.Serve(); err != nil {
		return nil, fmt.Errorf("broker: serve: %w", err)
	}
	b.serveHTTP()
	if err := b.serveAdmin(); err != nil {
		_ = b.srv.Close()
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	b.wg.Add(1)
	go func() { defer b.wg.Done(); b.delivery.expireLoop(ctx, cfg.Sessions.SweepInterval) }()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		clients := func() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }
		trimLoop(ctx, clients, b.metrics.memoryTrims.Inc, log.With("component", "memory"))
	}()
	b.ready.Store(true)
	log.Info("tether started", "data_dir", cfg.DataDir, "mqtt", b.mqttLn.Addr().String(),
		"ws", addrOf(b.wsLn), "http", addrOf(b.httpLn), "tls", cfg.TLSCertFile != "")
	return b, nil
}

func (b *Broker) mqttOptions() *mqtt.Options {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = b.cfg.MaxClients
	caps.MaximumPacketSize = b.cfg.MaxPacketSize
	caps.MaximumClientWritesPending = b.cfg.MaxWritesPending
	caps.MaximumSessionExpiryInterval = uint32(b.cfg.SessionExpiry / time.Second)
	// Retained presence must not vanish after mochi's default 24 h.
	caps.MaximumMessageExpiryInterval = 0
	// Strict MQTT 5 clients reject acks that copy the PUBLISH's properties.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	return &mqtt.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  b.cfg.ReadBufferSize,
		ClientNetWriteBufferSize: b.cfg.WriteBufferSize,
		Logger:                   b.log.With("component", "mqtt"),
		InlineClient:             true,
	}
}

// listen binds every configured address, so that Addrs is known (port 0
// picks a free port) before anything is served.
func (b *Broker) listen() error {
	var tlsCfg *tls.Config
	if b.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(b.cfg.TLSCertFile, b.cfg.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("broker: tls-cert/tls-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	bind := func(name, addr string, secure bool) (net.Listener, error) {
		if addr == "" {
			return nil, nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("broker: %s: %w", name, err)
		}
		if secure && tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		return ln, nil
	}
	var err error
	if b.mqttLn, err = bind("mqtt-addr", b.cfg.MQTTAddr, true); err != nil {
		return err
	}
	if b.wsLn, err = bind("ws-addr", b.cfg.WSAddr, true); err != nil {
		return err
	}
	if b.httpLn, err = bind("http-addr", b.cfg.HTTPAddr, false); err != nil {
		return err
	}
	b.adminLn, err = bind("admin-addr", b.cfg.AdminAddr, false)
	return err
}

func (b *Broker) closeListeners() {
	for _, ln := range []net.Listener{b.mqttLn, b.wsLn, b.httpLn, b.adminLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// Addrs returns the bound addresses.
func (b *Broker) Addrs() Addrs {
	return Addrs{MQTT: addrOf(b.mqttLn), WS: addrOf(b.wsLn), HTTP: addrOf(b.httpLn), Admin: addrOf(b.adminLn)}
}

// Tokens is the broker's token registry.
func (b *Broker) Tokens() *auth.Tokens { return b.tokens }

// Sessions is the broker's session registry: the Go API for applications
// (policies, phases, inspection).
func (b *Broker) Sessions() *sessions.Registry { return b.registry }

// Admin is the broker's operator API, the one the CLI reaches over the admin listener.
func (b *Broker) Admin() *Admin { return b.admin }

// Close shuts down gracefully: readiness turns false, listeners stop
// accepting, clients are disconnected, hooks finish the commits they are
// in, and the store is closed. A second call returns the first's result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.ready.Store(false)
		b.log.Info("tether stopping")
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ShutdownTimeout)
		defer cancel()
		if b.adminSrv != nil {
			_ = b.adminSrv.Shutdown(ctx)
		}
		// Stop accepting and disconnect every client ourselves, and wait
		// until each client's goroutine has run its hooks (and their
		// commits) to the end. Only then close mochi: its Close read-locks
		// the client list twice over, which deadlocks against a client
		// removing itself at the same moment (mochi v2.7.9).
		for _, ln := range []net.Listener{b.mqttLn, b.wsLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		for _, cl := range b.srv.Clients.GetAll() {
			if !cl.Net.Inline && !cl.Closed() {
				_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
		// A client counts as connected until its goroutine has run its
		// disconnect hooks. (mochi's ClientsWg cannot be waited on here: a
		// connection accepted just before the listener closed may still Add.)
		for atomic.LoadInt64(&b.srv.Info.ClientsConnected) > 0 {
			if ctx.Err() != nil {
				b.log.Warn("shutdown timeout: closing the store with clients still finishing")
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Connections accepted but not yet counted as clients must be gone
		// too: mochi's Close races with one still being established.
		for _, conns := range b.connSets() {
			if !conns.stop(ctx) {
				b.log.Warn("shutdown timeout: connections still being established")
			}
		}
		_ = b.srv.Close()
		if b.stop != nil {
			b.stop()
			b.wg.Wait()
		}
		b.registry.Close()
		b.delivery.close()
		if b.httpSrv != nil {
			_ = b.httpSrv.Shutdown(ctx)
		}
		removeAdminFile(b.cfg.DataDir)
		b.closeErr = b.store.Close()
		b.log.Info("tether stopped")
	})
	return b.closeErr
}

// connSets are the connections of the MQTT listeners.
func (b *Broker) connSets() []*connSet {
	var sets []*connSet
	if b.tcp != nil {
		sets = append(sets, &b.tcp.conns)
	}
	if b.ws != nil {
		sets = append(sets, &b.ws.conns)
	}
	return sets
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func port(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}
