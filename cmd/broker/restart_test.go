package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// binDir holds the broker binary built once for the whole package run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-broker-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var built struct {
	once sync.Once
	path string
	err  error
}

// brokerBinary builds this package's binary on first use and returns its path.
func brokerBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		path := filepath.Join(binDir, "broker")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		built.path = path
	})
	require.NoError(t, built.err)
	return built.path
}

// processEnv is the test's environment without TETHER_* variables, so the
// runner's environment cannot change what the binary does.
func processEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TETHER_") {
			env = append(env, kv)
		}
	}
	return env
}

// startedLog collects a broker's stderr and picks out the JSON line
// "tether started" with the bound addresses.
type startedLog struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	addrs   map[string]string
	started chan struct{}
}

func newStartedLog() *startedLog { return &startedLog{started: make(chan struct{})} }

func (l *startedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i]
		l.partial = l.partial[i+1:]
		var rec map[string]any
		if l.addrs != nil || json.Unmarshal(line, &rec) != nil || rec["msg"] != "tether started" {
			continue
		}
		l.addrs = map[string]string{}
		for _, k := range []string{"mqtt", "ws", "http"} {
			s, _ := rec[k].(string)
			l.addrs[k] = s
		}
		close(l.started)
	}
	return len(p), nil
}

func (l *startedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// brokerProcess is `broker serve` running as a child process.
type brokerProcess struct {
	cmd              *exec.Cmd
	log              *startedLog
	done             chan struct{} // closed when the process has exited
	mqtt, ws, http   string
	dataDir, binPath string
}

// startBroker runs the binary on dataDir with every listener on port 0 and
// waits for its "tether started" line. The process is killed when the test
// ends if it is still running.
func startBroker(t *testing.T, dataDir string) *brokerProcess {
	t.Helper()
	bin := brokerBinary(t)
	p := &brokerProcess{log: newStartedLog(), done: make(chan struct{}), dataDir: dataDir, binPath: bin}
	p.cmd = exec.Command(bin, "serve", "--data-dir", dataDir,
		"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--log-format", "json", "--shutdown-timeout", "5s")
	p.cmd.Env = processEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	require.NoError(t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("broker stderr:\n%s", p.log)
		}
	})
	select {
	case <-p.log.started:
	case <-p.done:
		t.Fatalf("broker exited before starting (%s):\n%s", p.cmd.ProcessState, p.log)
	case <-time.After(10 * time.Second):
		t.Fatalf("broker did not log \"tether started\" within 10s:\n%s", p.log)
	}
	p.log.mu.Lock()
	p.mqtt, p.ws, p.http = p.log.addrs["mqtt"], p.log.addrs["ws"], p.log.addrs["http"]
	p.log.mu.Unlock()
	for name, a := range map[string]string{"mqtt": p.mqtt, "ws": p.ws, "http": p.http} {
		require.Regexp(t, `^127\.0\.0\.1:[1-9][0-9]*$`, a, "bound %s address", name)
	}
	return p
}

func (p *brokerProcess) url() string { return "tcp://" + p.mqtt }

// wait waits for the process to exit and returns its state.
func (p *brokerProcess) wait(t *testing.T, timeout time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState
	case <-time.After(timeout):
		t.Fatalf("broker still running %s later:\n%s", timeout, p.log)
		return nil
	}
}

// cli runs an operator command of the binary and returns its stdout and stderr.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, brokerBinary(t), args...)
	cmd.Env = processEnv()
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

var tokenPattern = regexp.MustCompile(`^tt1_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`)

// addToken issues a token for user with the binary and returns it.
func addToken(t *testing.T, dataDir, user string) string {
	t.Helper()
	stdout, stderr, err := cli(t, "token", "add", "--user", user, "--data-dir", dataDir)
	require.NoError(t, err, "token add: %s", stderr)
	tok := strings.TrimSuffix(stdout, "\n")
	require.Regexp(t, tokenPattern, tok, "stdout of token add is exactly the token")
	return tok
}

// TestRestartAfterKill proves what README.md promises survives kill -9:
// tokens, retained messages, and clean=false clients with their subscriptions.
func TestRestartAfterKill(t *testing.T) {
	dir := t.TempDir()
	first := startBroker(t, dir)

	// Issued while the broker holds the directory: this goes through admin.json.
	token := addToken(t, dir, "alice")
	require.FileExists(t, filepath.Join(dir, "admin.json"))

	clientA := fmt.Sprintf("restart-a-%d", os.Getpid())
	optsA := func(url string) *paho.ClientOptions {
		return brokertest.ClientOptions(url, "alice", token).SetClientID(clientA).SetCleanSession(false)
	}
	a := brokertest.MustConnect(t, optsA(first.url()))
	require.NoError(t, brokertest.Wait(a.Subscribe("sessions/alice/room/#", 1, nil)))
	a.Disconnect(250)

	b := brokertest.MustConnect(t, brokertest.ClientOptions(first.url(), "alice", token))
	retained := fmt.Sprintf("state-%d", time.Now().UnixNano())
	require.NoError(t, brokertest.Wait(b.Publish("sessions/alice/room/state", 1, true, retained)))
	b.Disconnect(250)

	// A device mid-session: begun, memento and phase committed, never ended.
	dev := sessionDevice(t, first.url(), token, "shop")
	begun, err := dev.Begin(context.Background())
	require.NoError(t, err)
	phase := "test_started"
	require.NoError(t, dev.Remember(context.Background(), map[string]int{"item": 4}, &phase))

	require.NoError(t, first.cmd.Process.Kill())
	state := first.wait(t, 5*time.Second)
	require.False(t, state.Success(), "kill -9 is not a clean exit: %s", state)

	second := startBroker(t, dir)

	t.Run("token survives", func(t *testing.T) {
		c, err := brokertest.Connect(t, brokertest.ClientOptions(second.url(), "alice", token))
		require.NoError(t, err)
		require.True(t, c.IsConnectionOpen())
		// Control: authentication is really checked after the restart.
		bad := []byte(token)
		if i := len(bad) - 5; bad[i] == 'A' { // not the last character: its low bits are padding
			bad[i] = 'B'
		} else {
			bad[i] = 'A'
		}
		_, err = brokertest.Connect(t, brokertest.ClientOptions(second.url(), "alice", string(bad)))
		require.Error(t, err)
	})

	t.Run("retained message survives", func(t *testing.T) {
		msgs := brokertest.NewMessages(4)
		sub := brokertest.MustConnect(t, brokertest.ClientOptions(second.url(), "alice", token))
		require.NoError(t, brokertest.Wait(sub.Subscribe("sessions/alice/room/state", 1, msgs.Handler)))
		msg := msgs.Next(t, 5*time.Second)
		require.Equal(t, "sessions/alice/room/state", msg.Topic())
		require.Equal(t, retained, string(msg.Payload()))
		require.True(t, msg.Retained())
	})

	t.Run("session survives", func(t *testing.T) {
		out, _, err := cli(t, "sessions", "show", "alice/shop", "--json", "--data-dir", dir)
		require.NoError(t, err)
		var s struct {
			State, Nonce, Phase string
			Memento             json.RawMessage
		}
		require.NoError(t, json.Unmarshal([]byte(out), &s))
		require.Equal(t, "detached", s.State, "no connection survives a restart")
		require.Equal(t, begun.Nonce, s.Nonce)
		require.Equal(t, "test_started", s.Phase)
		require.JSONEq(t, `{"item":4}`, string(s.Memento))

		again := sessionDevice(t, second.url(), token, "shop")
		resumed, err := again.Begin(context.Background())
		require.NoError(t, err)
		require.True(t, resumed.Crashed)
		require.Equal(t, "test_started", resumed.Phase)
		require.JSONEq(t, `{"item":4}`, string(resumed.Memento))
	})

	t.Run("clean=false subscription survives", func(t *testing.T) {
		msgs := brokertest.NewMessages(4)
		a := paho.NewClient(optsA(second.url()).SetDefaultPublishHandler(msgs.Handler))
		ct := a.Connect()
		require.NoError(t, brokertest.Wait(ct))
		t.Cleanup(func() { a.Disconnect(100) })
		require.True(t, ct.(*paho.ConnectToken).SessionPresent(), "the restarted broker knows client %s", clientA)

		pub := brokertest.MustConnect(t, brokertest.ClientOptions(second.url(), "alice", token))
		require.NoError(t, brokertest.Wait(pub.Publish("sessions/alice/room/x", 1, false, "after-restart")))
		msg := msgs.Next(t, 5*time.Second)
		require.Equal(t, "sessions/alice/room/x", msg.Topic())
		require.Equal(t, "after-restart", string(msg.Payload()))
	})
}

// TestServeSIGTERM checks the graceful path: ready before, clients cut,
// exit status 0 within seconds, admin.json removed and the store closed.
func TestServeSIGTERM(t *testing.T) {
	dir := t.TempDir()
	p := startBroker(t, dir)

	for path, want := range map[string]int{"/readyz": http.StatusOK, "/healthz": http.StatusOK} {
		resp, err := http.Get("http://" + p.http + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, path)
	}

	token := addToken(t, dir, "alice")
	var lost atomic.Bool
	c := brokertest.MustConnect(t, brokertest.ClientOptions(p.url(), "alice", token).
		SetConnectionLostHandler(func(paho.Client, error) { lost.Store(true) }))
	require.True(t, c.IsConnectionOpen())

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	start := time.Now()
	state := p.wait(t, 5*time.Second)
	require.Equal(t, 0, state.ExitCode(), "exit status after SIGTERM:\n%s", p.log)
	t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))

	brokertest.WaitFor(t, 5*time.Second, "client to see the connection drop", lost.Load)
	require.Contains(t, p.log.String(), `"msg":"tether stopped"`)
	require.NoFileExists(t, filepath.Join(dir, "admin.json"))

	// The store was closed: the CLI now opens the directory itself.
	stdout, stderr, err := cli(t, "token", "list", "--json", "--data-dir", dir)
	require.NoError(t, err, stderr)
	var toks []struct{ User, Role string }
	require.NoError(t, json.Unmarshal([]byte(stdout), &toks))
	require.Len(t, toks, 1)
	require.Equal(t, "alice", toks[0].User)
}

// sessionDevice dials a session with the Go client; it stays connected
// until the test ends (the broker under it may be killed first).
func sessionDevice(t *testing.T, url, token, session string) *client.Client {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session, cfg.ManualPing = url, "alice", token, session, true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// TestServeSecondSignalForcesExit: while a graceful shutdown is held up
// (here by an HTTP client stuck in the middle of its request headers, which
// http.Server.Shutdown waits for until the read-header timeout, 10s), a
// second SIGINT or SIGTERM ends the process at once, by the signal.
func TestServeSecondSignalForcesExit(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startBroker(t, t.TempDir())
			stuck, err := net.Dial("tcp", p.http)
			require.NoError(t, err)
			t.Cleanup(func() { _ = stuck.Close() })
			_, err = stuck.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // no blank line: the request never ends
			require.NoError(t, err)
			time.Sleep(200 * time.Millisecond) // the server has read it: the connection is active

			require.NoError(t, p.cmd.Process.Signal(sig))
			brokertest.WaitFor(t, 5*time.Second, "the first signal to start the shutdown", func() bool {
				return strings.Contains(p.log.String(), "signal received: shutting down")
			})
			select {
			case <-p.done:
				t.Fatalf("the shutdown was not held up, so this test proves nothing:\n%s", p.log)
			case <-time.After(time.Second):
			}

			require.NoError(t, p.cmd.Process.Signal(sig))
			second := time.Now()
			state := p.wait(t, 3*time.Second)
			t.Logf("exited %s after the second signal", time.Since(second).Round(time.Millisecond))
			ws, ok := state.Sys().(syscall.WaitStatus)
			require.True(t, ok)
			require.True(t, ws.Signaled(), "killed by the second signal, not a graceful exit: %s", state)
			require.Equal(t, sig, ws.Signal())
			require.NotContains(t, p.log.String(), `"msg":"tether stopped"`)
		})
	}
}
