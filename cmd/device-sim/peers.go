package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	mochiauth "github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/persistence"
)

// The brokers the benchmarks compare: Tether (in-process or its binary),
// Debian's mosquitto (a subprocess) and a bare embedded mochi.

// mosquittoBin is Debian's broker.
const mosquittoBin = "/usr/sbin/mosquitto"

// startMosquitto runs mosquitto on a free loopback port with a generated
// config: anonymous, no persistence, no limit on queued QoS 1 messages (so
// a slow subscriber loses nothing and the run stays comparable).
func startMosquitto(ctx context.Context, dir string) (*child, string, error) {
	if _, err := os.Stat(mosquittoBin); err != nil {
		return nil, "", fmt.Errorf("mosquitto: %w (install Debian's mosquitto: make deps)", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := strings.Cut(addr, ":")
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n", port)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, "", err
	}
	c, err := startChild("mosquitto", []string{mosquittoBin, "-c", conf})
	if err != nil {
		return nil, "", err
	}
	if err := c.waitListening(ctx, addr, 10*time.Second); err != nil {
		c.kill9()
		return nil, "", err
	}
	return c, addr, nil
}

// startMochi runs a bare embedded mochi: default capabilities, anyone
// allowed, one TCP listener on addr ("127.0.0.1:0" picks a port).
func startMochi(addr string) (*mqtt.Server, string, error) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(mochiauth.AllowHook), nil); err != nil {
		return nil, "", err
	}
	if strings.HasSuffix(addr, ":0") {
		a, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		addr = a
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		return nil, "", err
	}
	if err := srv.Serve(); err != nil {
		return nil, "", err
	}
	return srv, addr, nil
}

// startMochiProcess runs a bare mochi as a process of its own (this
// binary's `peer mochi`) on a free loopback port, and waits until it
// listens.
func startMochiProcess(ctx context.Context) (*child, string, error) {
	return startSelf(ctx, "mochi", func(addr string) []string { return []string{"peer", "mochi", "--addr", addr} })
}

// startSelf runs this binary (a test binary too: envExec) with the
// arguments args gives for a free loopback address, and waits until it
// listens there.
func startSelf(ctx context.Context, name string, args func(addr string) []string) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	proc, err := startChild(name, append([]string{self}, args(addr)...), envExec+"=1")
	if err != nil {
		return nil, "", err
	}
	if err := proc.waitListening(ctx, addr, 30*time.Second); err != nil {
		proc.kill9()
		return nil, "", err
	}
	return proc, addr, nil
}

// peerCmd runs a comparison broker in this process until ctx ends, so that
// the idle benchmark can read its RSS alone: `device-sim peer mochi --addr A`.
func peerCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "mochi" {
		return usagef("peer: want `peer mochi --addr host:port`")
	}
	fs := flag.NewFlagSet("peer mochi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:1883", "listen address")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	srv, _, err := startMochi(*addr)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return srv.Close()
}

// brokerBinary returns the path of Tether's broker binary: bin if set,
// else a fresh `go build ./cmd/broker` into dir (run inside the module).
func brokerBinary(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	out := filepath.Join(dir, "tether-broker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/f47fa0da/tether/cmd/broker")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/broker (run inside the tether module or pass --broker-bin): %v\n%s", err, b)
	}
	return out, nil
}

// startBrokerBinary runs Tether's broker binary on dir, MQTT on a free
// loopback port (WebSocket and HTTP off), and waits until it listens.
func startBrokerBinary(ctx context.Context, bin, dir string, extra ...string) (*child, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	argv := append([]string{bin, "serve", "--data-dir", dir, "--mqtt-addr", addr, "--ws-addr", "", "--http-addr", "", "--log-level", "warn"}, extra...)
	c, err := startChild("tether broker", argv)
	if err != nil {
		return nil, "", err
	}
	if err := c.waitListening(ctx, addr, 30*time.Second); err != nil {
		c.kill9()
		return nil, "", err
	}
	return c, addr, nil
}

// mintTokens issues a token for each user straight into the data
// directory dir (no broker may have it open) and returns them by user.
func mintTokens(dir string, users []string, role auth.Role) (map[string]string, error) {
	pcfg := persistence.DefaultConfig()
	pcfg.Dir, pcfg.Logger = dir, slog.New(slog.DiscardHandler)
	store, err := persistence.Open(pcfg)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	return addTokens(auth.NewTokens(store), users, role)
}

// addTokens issues tokens for users on toks, 16 at a time (commits share fsyncs).
func addTokens(toks *auth.Tokens, users []string, role auth.Role) (map[string]string, error) {
	out := make(map[string]string, len(users))
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		work = make(chan string)
	)
	until := time.Now().Add(30 * 24 * time.Hour)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				secret, _, err := toks.Add(auth.NewToken{User: u, Role: role, ValidUntil: until, Name: "device-sim"})
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					out[u] = secret
				}
				mu.Unlock()
			}
		}()
	}
	for _, u := range users {
		work <- u
	}
	close(work)
	wg.Wait()
	return out, errors.Join(errs...)
}
