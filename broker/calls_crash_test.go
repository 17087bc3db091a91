package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
)

// The crash tests run the broker in a child process (this test binary,
// re-executed into TestHelperBrokerProcess) so that it can die by SIGKILL
// with nothing flushed, exactly as in production.
const (
	envHelperDir  = "TETHER_HELPER_DATA_DIR"  // the child's data directory; unset: not a child
	envHelperMQTT = "TETHER_HELPER_MQTT_ADDR" // the child's MQTT address (fixed, so devices reconnect to it)
	envCrashAtSeq = "CRASH_AT_SEQ"            // the child SIGKILLs itself after committing this call seq
)

// TestHelperBrokerProcess is the child broker of the crash tests, not a
// test: without its environment it returns at once. It serves shop's "buy"
// on envHelperMQTT, prints READY when serving, and closes on SIGTERM.
func TestHelperBrokerProcess(t *testing.T) {
	dir := os.Getenv(envHelperDir)
	if dir == "" {
		return
	}
	if err := runHelperBroker(dir, os.Getenv(envHelperMQTT), os.Getenv(envCrashAtSeq)); err != nil {
		fmt.Fprintln(os.Stderr, "helper broker:", err)
		os.Exit(2)
	}
}

func runHelperBroker(dir, addr, crashAt string) error {
	if crashAt != "" {
		at, err := strconv.ParseUint(crashAt, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %w", envCrashAtSeq, err)
		}
		broker.SetAfterCallCommit(func(_, _ string, seq uint64) {
			if seq == at { // committed, reply not sent: die with nothing flushed
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Minute)
			}
		})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg := broker.DefaultConfig()
	cfg.DataDir, cfg.MQTTAddr = dir, addr
	cfg.WSAddr, cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	var w io.Writer = io.Discard
	if os.Getenv("TETHER_TEST_LOG") != "" {
		w = os.Stderr
	}
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// In place before serving: a device resending after a restart may
	// arrive before Open returns.
	cfg.Handlers = map[string]nonce.Handler{"buy": (&shop{}).buy}
	b, err := broker.Open(cfg)
	if err != nil {
		return err
	}
	fmt.Println("READY")
	<-ctx.Done()
	return b.Close()
}

// brokerProcess is a running child broker.
type brokerProcess struct {
	cmd    *exec.Cmd
	stdout *lineWatch
	stderr *lineWatch
	exited chan struct{} // closed when the process is gone; then state is set
	state  *os.ProcessState
}

// startBroker runs a child broker on dir and addr with extra environment
// and waits until it serves. The child is killed when the test ends.
func startBroker(t *testing.T, dir, addr string, env ...string) *brokerProcess {
	t.Helper()
	p := &brokerProcess{
		cmd:    exec.Command(os.Args[0], "-test.run=^TestHelperBrokerProcess$", "-test.count=1"),
		stdout: newLineWatch("READY\n"),
		stderr: newLineWatch(""),
		exited: make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), envHelperDir+"="+dir, envHelperMQTT+"="+addr)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("child broker %d stdout:\n%s\nstderr:\n%s", p.cmd.Process.Pid, p.stdout, p.stderr)
		}
	})
	select {
	case <-p.stdout.seen:
	case <-p.exited:
		t.Fatalf("child broker exited before READY (%s):\n%s%s", p.state, p.stdout, p.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("child broker not READY within 20s:\n%s%s", p.stdout, p.stderr)
	}
	return p
}

// wait waits for the child to exit and returns how it ended.
func (p *brokerProcess) wait(t *testing.T, timeout time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.exited:
		return p.state
	case <-time.After(timeout):
		t.Fatalf("child broker still running after %s", timeout)
		return nil
	}
}

// killedBy reports whether the child died of sig.
func killedBy(s *os.ProcessState, sig syscall.Signal) bool {
	ws, ok := s.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// stop shuts the child down cleanly (SIGTERM) and requires a clean exit
// (a race report in the child fails it).
func (p *brokerProcess) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	s := p.wait(t, 20*time.Second)
	require.True(t, s.Success(), "child broker: %s\n%s", s, p.stderr)
}

// lineWatch collects a child's output and closes seen when it first
// contains marker.
type lineWatch struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
	once   sync.Once
}

func newLineWatch(marker string) *lineWatch {
	return &lineWatch{marker: marker, seen: make(chan struct{})}
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.marker != "" && bytes.Contains(w.buf.Bytes(), []byte(w.marker)) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, so that a restarted child can listen where devices reconnect.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// openDir opens the broker in-process on dir (listeners on port 0); it is
// closed when the test ends.
func openDir(t *testing.T, dir string) *broker.Broker {
	t.Helper()
	cfg := brokertest.Config(t)
	cfg.DataDir = dir
	return brokertest.Start(t, cfg)
}

// issueTokens issues a device token for each user in dir, before a child
// broker owns it.
func issueTokens(t *testing.T, dir string, users ...string) map[string]string {
	t.Helper()
	cfg := brokertest.Config(t)
	cfg.DataDir = dir
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	tokens := map[string]string{}
	for _, u := range users {
		tokens[u] = brokertest.Token(t, b, u, auth.RoleDevice)
	}
	require.NoError(t, b.Close())
	return tokens
}

// crashDevice dials user/name at addr with the SDK's defaults but a short
// keepalive. It returns the device and its close function, which also runs
// when the test ends. Safe to call from any goroutine.
func crashDevice(t *testing.T, addr, user, token, name string) (*client.Client, func(), error) {
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Token, cfg.Session = "tcp://"+addr, user, token, name
	cfg.KeepAlive = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	// Client.Close is not idempotent: a second paho Disconnect while the
	// first still waits for a reconnect attempt races inside paho.
	closeOnce := sync.OnceFunc(d.Close)
	t.Cleanup(closeOnce)
	return d, closeOnce, nil
}

// TestCrashBetweenCommitAndReply: the broker is killed (SIGKILL) after call
// seq 3 committed and before its reply went out. Restarted on the same data
// directory and port, it gets seq 3 again from the SDK, which reconnected
// by itself, and answers with the stored reply: the call took effect once.
func TestCrashBetweenCommitAndReply(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	token := issueTokens(t, dir, "alice")["alice"]
	child := startBroker(t, dir, addr, envCrashAtSeq+"=3")

	d, closeDevice, err := crashDevice(t, addr, "alice", token, "shop")
	require.NoError(t, err)
	begun, err := d.Begin(ctx(t))
	require.NoError(t, err)
	require.Equal(t, uint64(1), begun.NextSeq)
	for seq := 1; seq <= 2; seq++ {
		res, err := d.Call(ctx(t), "buy", nil, seq)
		require.NoError(t, err)
		require.Equal(t, bought{Bought: seq, Seq: uint64(seq)}, decode[bought](t, res))
	}

	type result struct {
		res []byte
		err error
	}
	third := make(chan result, 1)
	go func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := d.Call(c, "buy", nil, 3)
		third <- result{res, err}
	}()
	state := child.wait(t, 10*time.Second)
	require.True(t, killedBy(state, syscall.SIGKILL), "the child died of SIGKILL at seq 3, not %s:\n%s", state, child.stderr)
	select {
	case r := <-third:
		t.Fatalf("seq 3 answered by a dead broker: %s, %v", r.res, r.err)
	default:
	}

	child = startBroker(t, dir, addr) // same data, same port, no crash
	var r result
	select {
	case r = <-third:
	case <-time.After(30 * time.Second):
		t.Fatal("seq 3 not answered after the restart")
	}
	require.NoError(t, r.err, "the SDK resent seq 3 on its new connection")
	require.Equal(t, bought{Bought: 3, Seq: 3}, decode[bought](t, r.res), "the stored reply")

	res, err := d.Call(ctx(t), "buy", nil, 4)
	require.NoError(t, err)
	require.Equal(t, bought{Bought: 4, Seq: 4}, decode[bought](t, res), "seq 3 ran once: the count goes on from 3")
	closeDevice()
	child.stop(t)

	b := openDir(t, dir)
	require.Equal(t, 4, counter(t, b, "alice", "shop"))
	sess, err := b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.Equal(t, uint64(4), sess.LastCallSeq)
	require.JSONEq(t, "4", string(sess.Memento))
	require.Equal(t, 4, calls(t, b, "alice", "shop"), "four calls journaled")
}

// TestCrashDuringBurst: 50 sessions call as fast as they can; the broker is
// SIGKILLed in the middle. Afterwards every session's committed state is
// whole (counter, last seq and memento agree: nothing half-applied), holds
// every call a device saw acknowledged (nothing lost) and no call a device
// never sent (nothing invented).
func TestCrashDuringBurst(t *testing.T) {
	const (
		users   = 5
		perUser = 10
		burst   = 1500 * time.Millisecond
		devices = users * perUser
	)
	dir, addr := t.TempDir(), freeAddr(t)
	var names []string
	for u := range users {
		names = append(names, "user"+strconv.Itoa(u))
	}
	tokens := issueTokens(t, dir, names...)
	child := startBroker(t, dir, addr)

	type session struct {
		user, name string
		d          *client.Client
		close      func()
		dialErr    error
		sent       atomic.Uint64 // highest seq sent
		acked      atomic.Uint64 // highest seq whose reply arrived
		bad        atomic.Value  // a wrong reply (string), if any
	}
	all := make([]*session, 0, devices)
	for u := range users {
		for i := range perUser {
			all = append(all, &session{user: names[u], name: "s" + strconv.Itoa(i)})
		}
	}
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.d, s.close, s.dialErr = crashDevice(t, addr, s.user, tokens[s.user], s.name)
		}()
	}
	wg.Wait()
	for _, s := range all {
		require.NoError(t, s.dialErr, "dial %s/%s", s.user, s.name)
		begun, err := s.d.Begin(ctx(t))
		require.NoError(t, err)
		require.Equal(t, uint64(1), begun.NextSeq)
	}

	callCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); ; seq++ {
				s.sent.Store(seq)
				res, err := s.d.Call(callCtx, "buy", nil, seq)
				if err != nil {
					if !errors.Is(err, client.ErrClosed) {
						s.bad.Store(fmt.Sprintf("seq %d: %v", seq, err))
					}
					return
				}
				var got bought
				if err := json.Unmarshal(res, &got); err != nil || got != (bought{Bought: int(seq), Seq: seq}) {
					s.bad.Store(fmt.Sprintf("seq %d: reply %s", seq, res))
					return
				}
				s.acked.Store(seq)
			}
		}()
	}
	time.Sleep(burst)
	require.NoError(t, child.cmd.Process.Signal(syscall.SIGKILL))
	require.True(t, killedBy(child.wait(t, 10*time.Second), syscall.SIGKILL))
	var closing sync.WaitGroup
	for _, s := range all {
		closing.Add(1)
		go func() { defer closing.Done(); s.close() }() // the calls in flight end with ErrClosed
	}
	closing.Wait()
	wg.Wait()

	b := openDir(t, dir)
	var acked, committed uint64
	for _, s := range all {
		who := s.user + "/" + s.name
		require.Nil(t, s.bad.Load(), "%s", who)
		sess, err := b.Sessions().Get(s.user, s.name)
		require.NoError(t, err, who)
		last := sess.LastCallSeq
		require.Equal(t, int(last), counter(t, b, s.user, s.name), "%s: counter and last seq committed together", who)
		memento := "null"
		if last > 0 {
			memento = strconv.FormatUint(last, 10)
		}
		require.JSONEq(t, memento, string(orNull(sess.Memento)), "%s: memento and last seq committed together", who)
		require.GreaterOrEqual(t, last, s.acked.Load(), "%s: an acknowledged call was lost", who)
		require.LessOrEqual(t, last, s.sent.Load(), "%s: a call nobody sent", who)
		if last > 0 {
			r, ok, err := b.StoredReply(s.user, s.name, last)
			require.NoError(t, err)
			require.True(t, ok, "%s: the reply of seq %d", who, last)
			require.JSONEq(t, fmt.Sprintf(`{"bought":%d,"item":"","seq":%d}`, last, last), string(r.OK), who)
		}
		acked += s.acked.Load()
		committed += last
	}
	t.Logf("burst of %s, 50 sessions: %d calls acknowledged, %d committed (%d in doubt at the kill)", burst, acked, committed, committed-acked)
	require.Greater(t, acked, uint64(len(all)), "the burst made calls")
}
