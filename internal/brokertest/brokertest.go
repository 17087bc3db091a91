// Package brokertest starts real Tether brokers for tests: loopback port 0
// listeners, Badger in t.TempDir(), and real paho clients.
package brokertest

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
)

// Config returns a broker config for tests: every listener on 127.0.0.1:0
// and the data directory in t.TempDir(). Logs go to the test's output when
// TETHER_TEST_LOG is set.
func Config(t testing.TB) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	var w io.Writer = io.Discard
	if os.Getenv("TETHER_TEST_LOG") != "" {
		w = os.Stderr
	}
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// Start opens a broker with cfg and closes it when the test ends.
func Start(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Token issues a token for user with role, valid for an hour.
func Token(t testing.TB, b *broker.Broker, user string, role auth.Role) string {
	t.Helper()
	secret, _, err := b.Tokens().Add(auth.NewToken{User: user, Role: role, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	return secret
}

var clientSeq atomic.Int64

// ClientOptions are paho options for url with credentials, a unique client
// id, no auto-reconnect, and a default handler so early messages are acked.
func ClientOptions(url, user, password string) *paho.ClientOptions {
	return paho.NewClientOptions().
		AddBroker(url).
		SetClientID(fmt.Sprintf("test-%d-%d", os.Getpid(), clientSeq.Add(1))).
		SetUsername(user).SetPassword(password).
		SetProtocolVersion(4). // no silent fallback to 3.1 on a refused CONNECT
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) {})
}

// Connect connects with opts and returns the client and the connect error.
func Connect(t testing.TB, opts *paho.ClientOptions) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return c, fmt.Errorf("connect timed out")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(100) })
	}
	return c, tok.Error()
}

// MustConnect is Connect that fails the test on error.
func MustConnect(t testing.TB, opts *paho.ClientOptions) paho.Client {
	t.Helper()
	c, err := Connect(t, opts)
	require.NoError(t, err)
	return c
}

// Wait waits for a paho token and returns its error.
func Wait(tok paho.Token) error {
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("timed out")
	}
	return tok.Error()
}

// WaitFor polls cond every 10 ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Messages collects what a subscription receives.
type Messages struct{ ch chan paho.Message }

// NewMessages returns a collector with room for n messages.
func NewMessages(n int) *Messages { return &Messages{ch: make(chan paho.Message, n)} }

// Handler is the paho handler that feeds the collector.
func (m *Messages) Handler(_ paho.Client, msg paho.Message) { m.ch <- msg }

// Next returns the next message or fails the test after timeout.
func (m *Messages) Next(t testing.TB, timeout time.Duration) paho.Message {
	t.Helper()
	select {
	case msg := <-m.ch:
		return msg
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
		return nil
	}
}

// None asserts no message arrives within d.
func (m *Messages) None(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case msg := <-m.ch:
		t.Fatalf("unexpected message on %s: %q", msg.Topic(), msg.Payload())
	case <-time.After(d):
	}
}
