package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
)

const chromiumPath = "/usr/bin/chromium"

// browserDeps returns node's path, failing the test (never skipping it)
// when the browser test's peers are missing.
func browserDeps(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the browser test needs Node.js; run `make deps`")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: run `make deps` (installs Debian's chromium)", chromiumPath)
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core")); err != nil {
		t.Fatal("web/node_modules is missing: run `make deps` (npm ci in web/)")
	}
	return node
}

// demoShop is the demo's buy handler as the broker will register it, with
// counters the test reads: the handler's runs and the last committed count.
type demoShop struct {
	runs      atomic.Int64 // handler runs (a retried call that got its stored reply does not run)
	committed atomic.Int64 // count after the last committed buy
	slow      atomic.Bool  // the next buy holds for a while inside the handler
	inflight  atomic.Bool  // a slow buy is inside the handler now
}

func (s *demoShop) buy(ctx context.Context, c *nonce.Call) (any, error) {
	var n int
	if _, err := c.State.GetJSON("demo.count", &n); err != nil {
		return nil, err
	}
	n++
	if err := c.State.SetJSON("demo.count", n); err != nil {
		return nil, err
	}
	s.runs.Add(1)
	if s.slow.CompareAndSwap(true, false) {
		s.inflight.Store(true)
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.AfterCommit(func() {
		s.committed.Store(int64(n))
		s.inflight.Store(false)
	})
	return map[string]int{"count": n}, nil
}

// restartable is a broker the test stops and starts again on the same data
// directory and the same ports, as a crash-and-restart would.
type restartable struct {
	cfg  broker.Config
	shop *demoShop
	mu   sync.Mutex
	b    *broker.Broker
}

func (r *restartable) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b != nil {
		return errors.New("already running")
	}
	b, err := broker.Open(r.cfg)
	if err != nil {
		return err
	}
	b.Handle("demo.buy", r.shop.buy)
	r.b = b
	return nil
}

func (r *restartable) stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b == nil {
		return errors.New("not running")
	}
	err := r.b.Close()
	r.b = nil
	return err
}

func (r *restartable) broker() *broker.Broker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b
}

// freeAddrs returns n loopback addresses whose ports were free a moment ago:
// the broker must come back on the same ports after a restart.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addrs = append(addrs, ln.Addr().String())
		defer ln.Close()
	}
	return addrs
}

// TestBrowserDemo drives the demo page in headless Chromium (web/test/e2e.mjs)
// against a real broker: begin, ticks and the countdown, notifications (in
// order, acked, and those queued while the page was away), exactly-once
// buys across a reload mid-call, a broker restart (the lost banner comes and
// goes, a purchase made while it was down is sent once), a page closed with
// a purchase unsent, a takeover by a second tab, the client API, expiry, a
// token revoked under an open page, and end. The broker has snapshot keys:
// the page keeps the session's newest sealed snapshot in localStorage and
// presents it at begin, which restores a session on a broker that never
// had it (another node with the same keys).
func TestBrowserDemo(t *testing.T) {
	node := browserDeps(t)

	keyLine, err := snapshot.NewKeyLine("e2e")
	require.NoError(t, err)
	keys, err := snapshot.ParseKeys(strings.NewReader(keyLine))
	require.NoError(t, err)
	rules := []sessions.Rule{
		{Pattern: "e2e-*", Policy: sessions.Policy{Mode: sessions.Takeover, Window: 10 * time.Minute, Liveness: 30 * time.Second}},
		{Pattern: "short-*", Policy: sessions.Policy{Mode: sessions.Takeover, Window: 3 * time.Second, Liveness: 30 * time.Second}},
	}

	addrs := freeAddrs(t, 3)
	cfg := brokertest.Config(t)
	cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr = addrs[0], addrs[1], addrs[2]
	cfg.Sessions.TickInterval = 400 * time.Millisecond
	cfg.Sessions.Rules = rules
	cfg.SnapshotKeys = keys
	shop := &demoShop{}
	srv := &restartable{cfg: cfg, shop: shop}
	require.NoError(t, srv.start())
	t.Cleanup(func() { _ = srv.stop() })
	alice := brokertest.Token(t, srv.broker(), "alice", auth.RoleDevice)

	// Elsewhere: another broker with the same snapshot keys and none of the
	// sessions, which lets the demo's page (a different origin) connect.
	cfgElsewhere := brokertest.Config(t)
	cfgElsewhere.Sessions.TickInterval = cfg.Sessions.TickInterval
	cfgElsewhere.Sessions.Rules = rules
	cfgElsewhere.SnapshotKeys = keys
	cfgElsewhere.WSOrigins = []string{"http://" + cfg.HTTPAddr}
	elsewhere := brokertest.Start(t, cfgElsewhere)
	aliceElsewhere := brokertest.Token(t, elsewhere, "alice", auth.RoleDevice)
	bob := brokertest.Token(t, srv.broker(), "bob", auth.RoleDevice)
	carol, carolTok, err := srv.broker().Tokens().Add(auth.NewToken{User: "carol", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)

	// The script asks for restarts and reads the shop's counters here.
	control := http.NewServeMux()
	control.HandleFunc("POST /stop", func(w http.ResponseWriter, _ *http.Request) { answer(w, srv.stop()) })
	control.HandleFunc("POST /start", func(w http.ResponseWriter, _ *http.Request) { answer(w, srv.start()) })
	control.HandleFunc("POST /revoke-carol", func(w http.ResponseWriter, _ *http.Request) {
		_, err := srv.broker().Tokens().Revoke(carolTok.ID)
		answer(w, err)
	})
	control.HandleFunc("POST /slow", func(w http.ResponseWriter, _ *http.Request) { shop.slow.Store(true); answer(w, nil) })
	control.HandleFunc("POST /notify", func(w http.ResponseWriter, r *http.Request) {
		// The application side: n notifications for alice/e2e-1, through the broker's Go API.
		n, _ := strconv.Atoi(r.FormValue("n"))
		var seqs []uint64
		for i := range n {
			seq, err := srv.broker().Notify("alice", "e2e-1", map[string]any{"text": r.FormValue("text") + " " + strconv.Itoa(i+1)})
			if err != nil {
				answer(w, err)
				return
			}
			seqs = append(seqs, seq)
		}
		_ = json.NewEncoder(w).Encode(seqs)
	})
	control.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		queued, err := srv.broker().Outq("alice", "e2e-1", 100)
		if err != nil {
			answer(w, err)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"runs": shop.runs.Load(), "count": shop.committed.Load(), "inflight": shop.inflight.Load(), "queued": len(queued),
		})
	})
	ctl := httptest.NewServer(control)
	t.Cleanup(ctl.Close)

	shots := os.Getenv("TETHER_E2E_SHOTS") // keep screenshots somewhere to look at
	if shots == "" {
		shots = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("test", "e2e.mjs"))
	cmd.Env = append(os.Environ(),
		"TETHER_E2E_URL=http://"+cfg.HTTPAddr+"/",
		"TETHER_E2E_WS=ws://"+cfg.WSAddr+"/mqtt",
		"TETHER_E2E_CONTROL="+ctl.URL,
		"TETHER_E2E_USER=alice", "TETHER_E2E_TOKEN="+alice,
		"TETHER_E2E_USER2=bob", "TETHER_E2E_TOKEN2="+bob,
		"TETHER_E2E_USER3=carol", "TETHER_E2E_TOKEN3="+carol,
		"TETHER_E2E_WS_ELSEWHERE=ws://"+elsewhere.Addrs().WS+"/mqtt", "TETHER_E2E_TOKEN_ELSEWHERE="+aliceElsewhere,
		"TETHER_E2E_TICK_MS="+strconv.Itoa(int(cfg.Sessions.TickInterval/time.Millisecond)),
		"TETHER_E2E_CHROMIUM="+chromiumPath,
		"TETHER_E2E_SHOTS="+shots,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("e2e.mjs output:\n%s", out)
	t.Logf("screenshots in %s", shots)
	require.NoError(t, err, "the browser script failed (see its output and the screenshots above)")

	var result struct {
		Count int64 `json:"count"`
	}
	line := lastLine(string(out), "RESULT ")
	require.NotEmpty(t, line, "the script printed no RESULT line")
	require.NoError(t, json.Unmarshal([]byte(line), &result))

	// What the page showed is what the broker committed, each purchase once.
	require.Equal(t, int64(6), result.Count, "purchases the page counted")
	require.Equal(t, result.Count, shop.committed.Load(), "count committed on the broker")
	require.Equal(t, result.Count, shop.runs.Load(), "handler runs: a purchase ran twice or was lost")
	s, err := srv.broker().Sessions().Get("alice", "e2e-1")
	require.NoError(t, err)
	require.Equal(t, sessions.StateEnded, s.State, "the page ended its session")
	queued, err := srv.broker().Outq("alice", "e2e-1", 100)
	require.NoError(t, err)
	require.Empty(t, queued, "every notification was acknowledged")
	short, err := srv.broker().Sessions().Get("bob", "short-1")
	require.NoError(t, err)
	require.Equal(t, sessions.StateExpired, short.State)
	moved, err := elsewhere.Sessions().Get("alice", "e2e-snap")
	require.NoError(t, err)
	require.Equal(t, sessions.StateEnded, moved.State, "the session restored elsewhere was carried on there and ended")
}

func answer(w http.ResponseWriter, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	_, _ = fmt.Fprintln(w, "ok")
}

func lastLine(out, prefix string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if rest, ok := strings.CutPrefix(lines[i], prefix); ok {
			return rest
		}
	}
	return ""
}
