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
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
	"github.com/f47fa0da/tether/web"
	"github.com/f47fa0da/tether/wire"
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

// demoShop wraps the demo's calls as the broker binary registers them
// (web.DemoHandlers) with what the test reads of the watched session's
// purchases: the handler's runs and the last committed count; and, on
// demand, a slow purchase.
type demoShop struct {
	user, session string       // the watched session
	runs          atomic.Int64 // handler runs (a retried call that got its stored reply does not run)
	committed     atomic.Int64 // count after the last committed buy
	slow          atomic.Bool  // the next buy holds for a while inside the handler
	inflight      atomic.Bool  // a slow buy is inside the handler now
}

func (s *demoShop) handlers() map[string]nonce.Handler {
	h := web.DemoHandlers()
	buy := h[web.MethodBuy]
	h[web.MethodBuy] = func(ctx context.Context, c *nonce.Call) (any, error) {
		res, err := buy(ctx, c)
		if err != nil || c.User != s.user || c.Session != s.session {
			return res, err
		}
		reply, ok := res.(web.ShopReply)
		if !ok {
			return nil, fmt.Errorf("demo.buy replied %T", res)
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
			s.committed.Store(reply.Count)
			s.inflight.Store(false)
		})
		return res, nil
	}
	return h
}

// restartable is a broker the test stops and starts again on the same data
// directory and the same ports, as a crash-and-restart would.
type restartable struct {
	cfg broker.Config
	mu  sync.Mutex
	b   *broker.Broker
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
// against a real broker with the demo's calls as `broker serve` registers
// them: begin (with 2 missed ticks for "lost", not the default 3), ticks
// and the countdown, notifications published by a Go service client over
// MQTT (in order, acked, and those queued while the page was away), exactly-once
// buys across a reload mid-call, a broker restart (the lost banner comes and
// goes, a purchase made while it was down is sent once), a page closed with
// a purchase unsent, a takeover by a second tab, the client API, expiry, a
// token revoked under an open page, and end. The broker has snapshot keys:
// the page keeps the session's newest sealed snapshot in localStorage and
// presents it at begin, which restores a session on a broker that never
// had it (another node with the same keys), where the page reads the
// counter afresh since that broker has no reply of the last purchase.
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
	shop := &demoShop{user: "alice", session: "e2e-1"}
	cfg.Handlers = shop.handlers()
	srv := &restartable{cfg: cfg}
	require.NoError(t, srv.start())
	t.Cleanup(func() { _ = srv.stop() })
	alice := brokertest.Token(t, srv.broker(), "alice", auth.RoleDevice)
	// The application side: a service user that notifies sessions over MQTT.
	notifierToken := brokertest.Token(t, srv.broker(), "shop-app", auth.RoleService)

	// Elsewhere: another broker with the same snapshot keys and none of the
	// sessions, which lets the demo's page (a different origin) connect.
	cfgElsewhere := brokertest.Config(t)
	cfgElsewhere.Sessions.TickInterval = cfg.Sessions.TickInterval
	cfgElsewhere.Sessions.Rules = rules
	cfgElsewhere.SnapshotKeys = keys
	cfgElsewhere.WSOrigins = []string{"http://" + cfg.HTTPAddr}
	cfgElsewhere.Handlers = web.DemoHandlers()
	elsewhere := brokertest.Start(t, cfgElsewhere)
	aliceElsewhere := brokertest.Token(t, elsewhere, "alice", auth.RoleDevice)
	bobElsewhere := brokertest.Token(t, elsewhere, "bob", auth.RoleDevice)
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
		n, _ := strconv.Atoi(r.FormValue("n"))
		if err := notifyOverMQTT("tcp://"+cfg.MQTTAddr, "shop-app", notifierToken, "alice", "e2e-1", r.FormValue("text"), n); err != nil {
			answer(w, err)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]int{"published": n})
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

	shots := screenshotDir(t)
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
		"TETHER_E2E_TOKEN2_ELSEWHERE="+bobElsewhere,
		"TETHER_E2E_TICK_MS="+strconv.Itoa(int(cfg.Sessions.TickInterval/time.Millisecond)),
		"TETHER_E2E_CHROMIUM="+chromiumPath,
		"TETHER_E2E_SHOTS="+shots,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("e2e.mjs output:\n%s", out)
	logScreenshots(t, shots)
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

// notifyOverMQTT is a Go service client: it connects as service user
// notifier and publishes n notifications for user/session on the
// documented topic (tether/notify/U/S, QoS 1), each acknowledged once the
// broker has it durably queued. A connection per batch: the broker under
// it restarts during the test.
func notifyOverMQTT(url, notifier, token, user, session, text string, n int) error {
	c := paho.NewClient(brokertest.ClientOptions(url, notifier, token))
	if err := brokertest.Wait(c.Connect()); err != nil {
		return fmt.Errorf("service client: connect: %w", err)
	}
	defer c.Disconnect(250)
	topic := wire.NotifyRoot + "/" + user + "/" + session
	for i := range n {
		payload, err := json.Marshal(map[string]any{"data": map[string]any{"text": text + " " + strconv.Itoa(i+1)}})
		if err != nil {
			return err
		}
		if err := brokertest.Wait(c.Publish(topic, 1, false, payload)); err != nil {
			return fmt.Errorf("service client: publish %d on %s: %w", i+1, topic, err)
		}
	}
	return nil
}

// screenshotDir is where the browser script writes its screenshots:
// $TETHER_E2E_SHOTS, or web/test-output (git-ignored), emptied first so
// that what is there is this run's. Unlike t.TempDir it outlives the test.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TETHER_E2E_SHOTS")
	if dir == "" {
		dir = "test-output"
		require.NoError(t, os.RemoveAll(dir))
	}
	dir, err := filepath.Abs(dir)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// logScreenshots names every screenshot in dir, failures first.
func logScreenshots(t *testing.T, dir string) {
	t.Helper()
	shots, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	sort.SliceStable(shots, func(i, j int) bool {
		return strings.HasPrefix(filepath.Base(shots[i]), "failure-") && !strings.HasPrefix(filepath.Base(shots[j]), "failure-")
	})
	for _, p := range shots {
		t.Logf("screenshot: %s", p)
	}
	if len(shots) == 0 {
		t.Logf("no screenshots in %s", dir)
	}
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
