package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket (subprotocol "mqtt") with an Origin
// allow-list; mochi's own WebSocket listener accepts every Origin.
type wsListener struct {
	id             string
	ln             net.Listener
	connectTimeout time.Duration // for the CONNECT once upgraded (connectBy)
	srv            *http.Server
	upgrader       websocket.Upgrader
	origins        originPolicy
	log            *slog.Logger
	establish      listeners.EstablishFn
	closeOnce      sync.Once
	conns          connSet // upgraded connections until mochi returns from them
}

// originPolicy decides which browser Origins may open a WebSocket.
type originPolicy struct {
	allowed  []string // origins in canonicalOrigin's form, or "*"
	samePort []string // ports counted as same-origin on the request's host (HTTP and WS listeners)
}

// allow reports whether a request with this Origin header may upgrade.
// Requests without Origin come from non-browser clients and are allowed:
// the Origin check protects browsers' users, token auth protects the broker.
func (p originPolicy) allow(origin, host string) bool {
	if origin == "" || slices.Contains(p.allowed, "*") {
		return true
	}
	if o, err := canonicalOrigin(origin); err == nil && slices.Contains(p.allowed, o) {
		return true
	}
	if len(p.allowed) > 0 {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	reqHost, _, err := net.SplitHostPort(host)
	if err != nil {
		reqHost = host
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Hostname() == reqHost && slices.Contains(p.samePort, port)
}

// canonicalOrigin is origin as browsers send it, so that an allow-list
// entry matches however it was typed: scheme and host in lower case, no
// default port (80 for http, 443 for https). Anything but
// scheme://host[:port] is refused.
func canonicalOrigin(origin string) (string, error) {
	u, err := url.Parse(origin)
	switch {
	case err != nil:
		return "", err
	case u.Scheme == "" || u.Hostname() == "" || u.Opaque != "":
		return "", errors.New("want scheme://host[:port]")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(origin, "?"):
		return "", errors.New("an origin has no user, path, query or fragment")
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	port := u.Port()
	if port == map[string]string{"http": "80", "https": "443"}[scheme] {
		port = ""
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("host %q: %v", host, err)
		}
		host = "[" + host + "]" // IPv6
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

func newWSListener(id string, ln net.Listener, origins originPolicy, connectTimeout time.Duration, log *slog.Logger) *wsListener {
	l := &wsListener{id: id, ln: ln, origins: origins, connectTimeout: connectTimeout, log: log}
	l.upgrader = websocket.Upgrader{
		Subprotocols:    []string{"mqtt", "mqttv3.1"},
		ReadBufferSize:  2048,
		WriteBufferSize: 2048,
		CheckOrigin: func(r *http.Request) bool {
			ok := l.origins.allow(r.Header.Get("Origin"), r.Host)
			if !ok {
				l.log.Info("websocket origin refused", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
			}
			return ok
		},
	}
	// A connection that sends no request, or no next one once kept alive
	// (one refused an upgrade, say), gets the same time as a silent MQTT
	// one; an upgraded one is the handler's.
	l.srv = &http.Server{Handler: http.HandlerFunc(l.serveHTTP), ReadHeaderTimeout: connectTimeout, IdleTimeout: connectTimeout}
	return l
}

func (l *wsListener) ID() string                  { return l.id }
func (l *wsListener) Address() string             { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string            { return "ws" }
func (l *wsListener) Init(log *slog.Logger) error { return nil }

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	// The broker closes the listener itself at shutdown: net.ErrClosed is
	// as clean an end as http.ErrServerClosed.
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		l.log.Error("websocket listener stopped", "error", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx)
		l.conns.stop(ctx)
	})
	closeClients(l.id)
}

func (l *wsListener) serveHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	conn := &wsConn{Conn: c.NetConn(), ws: c}
	if !l.conns.add(conn) {
		return // shutting down
	}
	reserveStack32K(0)
	defer l.conns.done(conn)
	defer c.Close()
	if err := l.establish(l.id, &corkConn{Conn: connectBy(conn, l.connectTimeout)}); err != nil {
		l.log.Debug("websocket client ended", "error", err)
	}
}

// wsConn carries the MQTT byte stream in binary WebSocket messages; a
// message may hold any part of a packet [MQTT-6.0.0-2].
type wsConn struct {
	net.Conn
	ws *websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("broker: websocket text frame; MQTT needs binary frames") // [MQTT-6.0.0-1]
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wm.Lock()
	defer c.wm.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }
