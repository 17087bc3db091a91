package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/brokertest"
)

func TestWebSocketPubSub(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "ws://" + b.Addrs().WS + "/mqtt"
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	sub := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", token))
	got := brokertest.NewMessages(4)
	require.NoError(t, brokertest.Wait(sub.Subscribe("sessions/alice/web/#", 1, got.Handler)))
	// One side over TCP, the other over WebSocket: the same broker, the same ACL.
	pub := brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token))
	require.NoError(t, brokertest.Wait(pub.Publish("sessions/alice/web/data", 1, false, "over tcp")))
	require.Equal(t, "over tcp", string(got.Next(t, 2*time.Second).Payload()))

	_, err := brokertest.Connect(t, brokertest.ClientOptions(url, "alice", "bad"))
	require.Error(t, err)
}

func TestWebSocketOrigin(t *testing.T) {
	dial := func(t *testing.T, addr, origin string) int {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial("ws://"+addr+"/mqtt", h)
		if err == nil {
			c.Close()
		}
		require.NotNil(t, resp, "dial error: %v", err)
		return resp.StatusCode
	}
	t.Run("default same origin", func(t *testing.T) {
		b := brokertest.Start(t, brokertest.Config(t))
		ws, httpAddr := b.Addrs().WS, b.Addrs().HTTP
		require.Equal(t, http.StatusSwitchingProtocols, dial(t, ws, ""), "non-browser clients send no Origin")
		require.Equal(t, http.StatusSwitchingProtocols, dial(t, ws, "http://"+httpAddr), "the demo page's own origin")
		require.Equal(t, http.StatusForbidden, dial(t, ws, "http://evil.example"))
		require.Equal(t, http.StatusForbidden, dial(t, ws, "http://127.0.0.1:1"), "same host, other port")
	})
	t.Run("allow list", func(t *testing.T) {
		cfg := brokertest.Config(t)
		cfg.WSOrigins = []string{"https://app.example.com", "https://Admin.Example.com:443/", "http://[::1]:8080"}
		b := brokertest.Start(t, cfg)
		require.Equal(t, http.StatusSwitchingProtocols, dial(t, b.Addrs().WS, "https://app.example.com"))
		require.Equal(t, http.StatusSwitchingProtocols, dial(t, b.Addrs().WS, "https://admin.example.com"),
			"an entry matches as browsers send the origin: lower case, no default port")
		require.Equal(t, http.StatusSwitchingProtocols, dial(t, b.Addrs().WS, "http://[::1]:8080"))
		require.Equal(t, http.StatusForbidden, dial(t, b.Addrs().WS, "https://app.example.com:8443"))
		require.Equal(t, http.StatusForbidden, dial(t, b.Addrs().WS, "http://app.example.com"))
		require.Equal(t, http.StatusForbidden, dial(t, b.Addrs().WS, "http://"+b.Addrs().HTTP))
	})
	t.Run("entries that are not origins are refused", func(t *testing.T) {
		for _, o := range []string{"app.example.com", "https://app.example.com/app", "https://user@app.example.com", "https://app.example.com?x=1", "https://"} {
			cfg := brokertest.Config(t)
			cfg.WSOrigins = []string{o}
			var ce *broker.ConfigError
			require.ErrorAs(t, cfg.Validate(), &ce, "origin %q", o)
			require.Equal(t, "WSOrigins", ce.Field)
		}
	})
}

// TestMosquittoClients drives the broker with Debian's mosquitto_pub and
// mosquitto_sub (installed by `make test`), over MQTT 3.1.1 and 5.
func TestMosquittoClients(t *testing.T) {
	for _, bin := range []string{"mosquitto_pub", "mosquitto_sub"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed: run `make deps` (the test command installs it)", bin)
		}
	}
	cfg := brokertest.Config(t)
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	b := brokertest.Start(t, cfg)
	host, port, _ := strings.Cut(b.Addrs().MQTT, ":")
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := []string{"-h", host, "-p", port, "-u", "alice", "-P", token}

	for _, v := range []string{"311", "5"} {
		t.Run("v"+v, func(t *testing.T) {
			topic := "sessions/alice/kitchen/v" + v
			sub := exec.CommandContext(ctx, "mosquitto_sub", append(base, "-V", v, "-t", "sessions/alice/kitchen/#", "-C", "1", "-W", "10")...)
			var out bytes.Buffer
			sub.Stdout = &out
			require.NoError(t, sub.Start())
			// Publish until the subscriber has subscribed and got one.
			done := make(chan error, 1)
			go func() { done <- sub.Wait() }()
			for i := 0; ; i++ {
				pub := exec.CommandContext(ctx, "mosquitto_pub", append(base, "-V", v, "-q", "1", "-t", topic, "-m", "hello")...)
				require.NoError(t, pub.Run())
				select {
				case err := <-done:
					require.NoError(t, err)
					require.Equal(t, "hello\n", out.String())
					return
				case <-time.After(200 * time.Millisecond):
				}
				require.Less(t, i, 40, "mosquitto_sub received nothing")
			}
		})
	}

	t.Run("cross-user subscribe refused", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "mosquitto_sub", append(base, "-t", "sessions/bob/#", "-C", "1", "-W", "3")...).CombinedOutput()
		require.Contains(t, string(out), "denied", "err=%v", err)
	})
	t.Run("v5 publish refused with reason", func(t *testing.T) {
		for _, qos := range []string{"1", "2"} {
			out, _ := exec.CommandContext(ctx, "mosquitto_pub", append(base, "-V", "5", "-q", qos, "-t", "sessions/bob/x/req", "-m", "x")...).CombinedOutput()
			require.Contains(t, strings.ToLower(string(out)), "not authorized", "QoS %s", qos)
		}
		require.NotContains(t, logs.String(), "level=ERROR", "a refused publish is not the broker's error")
	})
	t.Run("bad token refused", func(t *testing.T) {
		// The CONNACK code on the wire, as docs/protocol.md states it: 3.1.1
		// return code 5 (not authorized), MQTT 5 reason 0x86 = 134.
		for v, want := range map[string]string{"311": "received CONNACK (5)", "5": "received CONNACK (134)"} {
			out, err := exec.CommandContext(ctx, "mosquitto_pub", "-d", "-V", v, "-h", host, "-p", port, "-u", "alice", "-P", "nope", "-t", "sessions/alice/x/req", "-m", "x").CombinedOutput()
			require.Error(t, err)
			require.Contains(t, string(out), want, "MQTT %s", v)
		}
	})
}

func TestHealthAndShutdown(t *testing.T) {
	cfg := brokertest.Config(t)
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	b := brokertest.Start(t, cfg)
	httpAddr := b.Addrs().HTTP
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get("http://" + httpAddr + path)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	c := brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token))
	ws := brokertest.MustConnect(t, brokertest.ClientOptions("ws://"+b.Addrs().WS+"/mqtt", "alice", token))
	require.NoError(t, b.Close())
	brokertest.WaitFor(t, 5*time.Second, "clients disconnected", func() bool { return !c.IsConnectionOpen() && !ws.IsConnectionOpen() })
	require.Contains(t, logs.String(), `msg="tether stopped"`)
	require.NotContains(t, logs.String(), "level=ERROR", "a clean shutdown logs no error")
	require.NoError(t, b.Close(), "a second Close is harmless")
	_, err := http.Get("http://" + httpAddr + "/healthz")
	require.Error(t, err, "the HTTP listener is closed")
}

// syncBuffer is a bytes.Buffer for a logger that several goroutines use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A connection that sends no CONNECT within ConnectTimeout is closed, over
// TCP and over an upgraded WebSocket; one that connected stays, however
// long it is then silent (keepalive 0).
func TestSilentConnectionsClosed(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.ConnectTimeout = 300 * time.Millisecond
	b := brokertest.Start(t, cfg)
	closed := func(t *testing.T, read func() error) {
		t.Helper()
		start := time.Now()
		err := read()
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "still open after %s", time.Since(start))
		require.Error(t, err)
	}
	t.Run("tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", b.Addrs().MQTT)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		closed(t, func() error { _, err := c.Read(make([]byte, 1)); return err })
	})
	t.Run("websocket", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		ws, _, err := d.Dial("ws://"+b.Addrs().WS+"/mqtt", nil)
		require.NoError(t, err)
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		closed(t, func() error { _, _, err := ws.ReadMessage(); return err })
	})
	t.Run("websocket port, no request", func(t *testing.T) {
		c, err := net.Dial("tcp", b.Addrs().WS)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		closed(t, func() error { _, err := c.Read(make([]byte, 1)); return err })
	})
	t.Run("websocket refused, kept alive", func(t *testing.T) {
		c, err := net.Dial("tcp", b.Addrs().WS)
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")) // no upgrade: 400, and HTTP/1.1 keeps the connection
		require.NoError(t, err)
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		closed(t, func() error { _, err := r.ReadByte(); return err })
	})
	t.Run("connected stays", func(t *testing.T) {
		token := brokertest.Token(t, b, "alice", auth.RoleDevice)
		c := brokertest.MustConnect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", token).SetKeepAlive(0))
		time.Sleep(3 * cfg.ConnectTimeout)
		got := brokertest.NewMessages(1)
		require.NoError(t, brokertest.Wait(c.Subscribe("sessions/alice/s/data", 1, got.Handler)))
		require.NoError(t, brokertest.Wait(c.Publish("sessions/alice/s/data", 1, false, "still here")))
		require.Equal(t, "still here", string(got.Next(t, 2*time.Second).Payload()))
	})
}
