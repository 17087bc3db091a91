package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
)

// errViolations is returned when an invariant failed: main exits 1.
var errViolations = errors.New("invariants violated")

// errInterrupted is returned when the run was stopped (Ctrl-C, SIGTERM)
// before its checks: there is no verdict. main exits 130.
var errInterrupted = errors.New("interrupted before the checks: no verdict (the invariants need the run to end)")

// envExec marks a child started by device-sim (a test binary that
// re-executes itself reads it in TestMain); the real binary ignores it.
const envExec = "DEVICE_SIM_EXEC"

// notifierUser is the built-in notifier's service-role user.
const notifierUser = "sim-notifier"

// sim is one scenario run.
type sim struct {
	sc     Scenario
	broker *brokerControl
	tokens map[string]string
	slots  []*slot

	calls, begins, crashes, switches, restarts atomic.Int64
	notified, delivered, pending, unexpected   atomic.Int64
	restartedAt                                atomic.Int64 // unix nanos the broker last came back
	lat                                        struct{ begin, call, ping, notify, reconnect, restart Latency }

	closers sync.WaitGroup // devices being closed in the background
	fatal   func(error)    // ends the run with this error (no verdict): the broker could not be restarted
	runID   string         // in every notification the run sends
	stalled []*slot        // sessions whose attached device stopped getting acknowledged notifications
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, err := parseScenario(args, stderr)
	if err != nil {
		return err
	}
	rep, err := runScenario(ctx, sc, stderr)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.Table())
	if sc.JSONFile != "" {
		if err := writeJSON(sc.JSONFile, rep); err != nil {
			return err
		}
	}
	if sc.HTMLFile != "" {
		if err := os.WriteFile(sc.HTMLFile, rep.HTML(), 0o644); err != nil {
			return err
		}
	}
	if !rep.Passed {
		return errViolations
	}
	return nil
}

// runScenario runs sc and checks the invariants: load, drain, checks.
func runScenario(ctx context.Context, sc Scenario, stderr io.Writer) (*Report, error) {
	ctx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	s := &sim{sc: sc, fatal: stopRun, runID: strconv.FormatUint(rand.Uint64(), 36)}
	dir := sc.DataDir
	if dir == "" {
		d, cleanup, err := tempDir("device-sim-run-", sc.Keep, stderr)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		dir = d
	}
	bc, err := newBrokerControl(sc, dir)
	if err != nil {
		return nil, err
	}
	s.broker = bc
	users := []string{}
	for i := range sc.Devices {
		users = append(users, simUser(i))
	}
	defer bc.stop() // also after a failed start: it may have opened the broker
	if err := bc.start(ctx, users); err != nil {
		return nil, err
	}
	s.tokens = bc.tokens
	for i := range sc.Devices {
		s.slots = append(s.slots, newSlot(s, i))
	}

	start := time.Now()
	loadCtx, endLoad := context.WithTimeout(ctx, sc.Duration)
	defer endLoad()
	prog := startProgress(s, stderr, sc.Quiet)
	var wg sync.WaitGroup
	for _, sl := range s.slots {
		wg.Add(1)
		go func() { defer wg.Done(); sl.run(loadCtx, ctx) }()
	}
	if sc.NotifyRate > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.notify(loadCtx) }()
	}
	if sc.KillEvery > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); s.chaos(loadCtx) }()
	}
	wg.Wait()
	loadElapsed := time.Since(start)
	for _, sl := range s.slots { // without calls and pings, later successes say nothing about reconnecting
		sl.waitReconnect.Store(false)
	}
	prog.phase("drain")

	// Every session gets a live device, then the acknowledged notifications must all arrive.
	for _, sl := range s.slots {
		if sl.cur.Load() == nil {
			wg.Add(1)
			go func() { defer wg.Done(); sl.beginLoop(ctxFor(ctx, 30*time.Second)) }()
		}
	}
	wg.Wait()
	drainStart := time.Now()
	waitPending := func(d time.Duration) {
		for s.pending.Load() > 0 && time.Since(drainStart) < d && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitPending(sc.Drain / 2)
	// Still waiting after half the drain: a device that is attached gets
	// nothing more. Begin those sessions on a new device (which must get
	// every unacknowledged entry); the stall itself is reported.
	for _, sl := range s.slots {
		if sl.pendingNow() > 0 {
			s.stalled = append(s.stalled, sl)
			sl.crash(sl.cur.Load())
			wg.Add(1)
			go func() { defer wg.Done(); sl.beginLoop(ctxFor(ctx, 30*time.Second)) }()
		}
	}
	wg.Wait()
	waitPending(sc.Drain)
	drained := time.Since(drainStart)
	prog.phase("check")

	// The end: every device crashes, then the checks.
	for _, sl := range s.slots {
		sl.crash(sl.cur.Load())
	}
	s.closers.Wait()
	prog.stop()
	if ctx.Err() != nil {
		// Stopped: what the devices were told is incomplete and the final
		// reads cannot run, so every check would fail for nothing.
		if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
			return nil, cause // s.fatal's
		}
		return nil, fmt.Errorf("%w, after %s of load", errInterrupted, loadElapsed.Round(100*time.Millisecond))
	}
	inv := s.checkInvariants(ctx)
	return s.report(loadElapsed, drained, inv), nil
}

func ctxFor(parent context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(parent, d)
	context.AfterFunc(ctx, cancel)
	return ctx
}

// deviceURL is where a new device connects: through a link of its own
// when crashes must drop the socket, else straight to the broker.
func (s *sim) deviceURL() (string, *link, error) {
	scheme, path := "tcp://", ""
	target := s.broker.mqttAddr
	if s.sc.Transport == "ws" {
		scheme, path, target = "ws://", "/mqtt", s.broker.wsAddr
	}
	if s.sc.CrashMode != "drop" {
		return scheme + target + path, nil, nil
	}
	l, err := newLink(target)
	if err != nil {
		return "", nil, err
	}
	return scheme + l.Addr() + path, l, nil
}

// closeLater closes a device in the background (a dead socket makes paho
// wait for its disconnect timeout).
func (s *sim) closeLater(dev *client.Client) {
	s.closers.Add(1)
	go func() { defer s.closers.Done(); dev.Close() }()
}

// notify is the built-in notifier: a service-role paho client publishing
// at the scenario's rate to random sessions, QoS 1; a notification counts
// as acknowledged when its PUBACK came back. (paho fails the token of a
// publish its connection lost before the PUBACK, with a clean session and
// no reconnect, as here: TestNotifierCountsOnlyPUBACKs.)
func (s *sim) notify(ctx context.Context) {
	const inflight = 32
	var (
		id   int64
		cli  paho.Client
		lost atomic.Bool
		wg   sync.WaitGroup
		sem  = make(chan struct{}, inflight)
		rng  = newRand(s.sc.Seed, 1<<40)
	)
	defer func() {
		wg.Wait()
		if cli != nil {
			cli.Disconnect(100)
		}
	}()
	interval := time.Duration(float64(time.Second) / s.sc.NotifyRate)
	tick := time.NewTicker(max(interval, 100*time.Microsecond))
	defer tick.Stop()
	var owed float64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			owed += now.Sub(last).Seconds() * s.sc.NotifyRate
			last = now
		}
		for ; owed >= 1; owed-- {
			if cli == nil || lost.Load() {
				if cli != nil {
					wg.Wait() // every publish of the old connection has failed or been acknowledged
					cli.Disconnect(0)
					cli = nil
				}
				lost.Store(false)
				dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				c, err := dialMQTT(dctx, s.broker.url(), notifierUser, s.tokens[notifierUser], func(error) { lost.Store(true) })
				cancel()
				if err != nil {
					owed = 0 // the broker is away: this moment's notifications are not sent
					break
				}
				cli = c
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			id++
			sl := s.slots[rng.IntN(len(s.slots))]
			payload := fmt.Appendf(nil, `{"data":{"r":%q,"n":%d,"t":%d}}`, s.runID, id, time.Now().UnixNano())
			tok := cli.Publish("tether/notify/"+sl.user+"/"+sl.session, 1, false, payload)
			wg.Add(1)
			go func(id int64) {
				defer wg.Done()
				defer func() { <-sem }()
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					return
				}
				s.notified.Add(1)
				sl.gotPUBACK(id)
			}(id)
		}
	}
}

// chaos kills the broker with SIGKILL every KillEvery and restarts it on
// the same data directory and addresses.
func (s *sim) chaos(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.sc.KillEvery):
		}
		t0 := time.Now()
		if err := s.broker.killRestart(context.WithoutCancel(ctx)); err != nil {
			s.fatal(fmt.Errorf("broker restart: %w", err)) // the rest of the run would test a dead broker
			return
		}
		now := time.Now()
		s.restarts.Add(1)
		s.lat.restart.Add(now.Sub(t0))
		s.restartedAt.Store(now.UnixNano())
		for _, sl := range s.slots {
			sl.waitReconnect.Store(true)
		}
	}
}

// brokerControl starts the broker the scenario runs against: in this
// process (no chaos), or as a child that can be killed: `device-sim
// broker` itself, or the user's --broker-cmd.
type brokerControl struct {
	dataDir          string
	mqttAddr, wsAddr string
	argv             []string // child command; nil: in-process
	fault            simFaults
	tokens           map[string]string

	b    *broker.Broker
	proc *child
}

func newBrokerControl(sc Scenario, dataDir string) (*brokerControl, error) {
	bc := &brokerControl{dataDir: dataDir}
	var err error
	if bc.mqttAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if bc.wsAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	switch {
	case sc.BrokerCmd != "":
		if err := bc.parseBrokerCmd(sc.BrokerCmd); err != nil {
			return nil, err
		}
		if sc.Transport == "ws" && bc.wsAddr == "" {
			return nil, usagef("run: --transport ws needs the broker's WebSocket address in --broker-cmd (--ws-addr A or {ws-addr})")
		}
	case sc.KillEvery > 0 || sc.BrokerFault != "":
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bc.argv = append([]string{self, "broker", "--data-dir", dataDir, "--mqtt-addr", bc.mqttAddr, "--ws-addr", bc.wsAddr},
			strings.Fields(sc.BrokerFault)...)
	}
	return bc, nil
}

// parseBrokerCmd fills the placeholders {data-dir}, {mqtt-addr} and
// {ws-addr}, or reads those flags' values from the command.
func (bc *brokerControl) parseBrokerCmd(cmd string) error {
	argv := strings.Fields(cmd)
	found := map[string]bool{}
	for i, a := range argv {
		for _, p := range []struct{ ph, val string }{{"{data-dir}", bc.dataDir}, {"{mqtt-addr}", bc.mqttAddr}, {"{ws-addr}", bc.wsAddr}} {
			if strings.Contains(a, p.ph) {
				argv[i] = strings.ReplaceAll(argv[i], p.ph, p.val)
				found[p.ph] = true
			}
		}
	}
	value := func(flag string) string {
		for i, a := range argv {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v
			}
			if a == flag && i+1 < len(argv) {
				return argv[i+1]
			}
		}
		return ""
	}
	if !found["{data-dir}"] {
		if bc.dataDir = value("--data-dir"); bc.dataDir == "" {
			return usagef("run: --broker-cmd must name the data directory (--data-dir D or {data-dir}): device-sim issues the devices' tokens there")
		}
	}
	if !found["{mqtt-addr}"] {
		a := value("--mqtt-addr")
		if a == "" {
			return usagef("run: --broker-cmd must name the MQTT address (--mqtt-addr A or {mqtt-addr})")
		}
		if strings.HasPrefix(a, ":") {
			a = "127.0.0.1" + a
		}
		bc.mqttAddr = a
	}
	if !found["{ws-addr}"] {
		bc.wsAddr = value("--ws-addr")
	}
	bc.argv = argv
	return nil
}

func (bc *brokerControl) url() string { return "tcp://" + bc.mqttAddr }

// start issues the tokens and starts the broker.
func (bc *brokerControl) start(ctx context.Context, users []string) error {
	if bc.argv == nil {
		b, err := broker.Open(simBrokerConfig(bc.dataDir, bc.mqttAddr, bc.wsAddr, bc.fault, slog.New(slog.DiscardHandler)))
		if err != nil {
			return err
		}
		bc.b = b
		if bc.tokens, err = addTokens(b.Tokens(), users, auth.RoleDevice); err != nil {
			return err
		}
		svc, err := addTokens(b.Tokens(), []string{notifierUser}, auth.RoleService)
		bc.tokens[notifierUser] = svc[notifierUser]
		return err
	}
	var err error
	if bc.tokens, err = mintTokens(bc.dataDir, users, auth.RoleDevice); err != nil {
		return err
	}
	svc, err := mintTokens(bc.dataDir, []string{notifierUser}, auth.RoleService)
	if err != nil {
		return err
	}
	bc.tokens[notifierUser] = svc[notifierUser]
	return bc.startChild(ctx)
}

func (bc *brokerControl) startChild(ctx context.Context) error {
	p, err := startChild("broker", bc.argv, envExec+"=1")
	if err != nil {
		return err
	}
	if err := p.waitListening(ctx, bc.mqttAddr, 30*time.Second); err != nil {
		p.kill9()
		return err
	}
	bc.proc = p
	return nil
}

// killRestart kills the child broker with SIGKILL and starts it again.
func (bc *brokerControl) killRestart(ctx context.Context) error {
	if bc.proc == nil {
		return errors.New("the in-process broker cannot be killed")
	}
	bc.proc.kill9()
	return bc.startChild(ctx)
}

func (bc *brokerControl) stop() {
	if bc.b != nil {
		_ = bc.b.Close()
	}
	if bc.proc != nil {
		_ = bc.proc.stop(10 * time.Second)
	}
}
