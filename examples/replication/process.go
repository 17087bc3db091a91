package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildBroker builds the broker binary (cmd/broker) into dir and returns
// its path.
func buildBroker(ctx context.Context, dir string) (string, error) {
	path := filepath.Join(dir, "broker")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/f47fa0da/tether/cmd/broker").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build cmd/broker: %v\n%s", err, out)
	}
	return path, nil
}

// brokerProcess is `broker serve` running as a child process.
type brokerProcess struct {
	cmd     *exec.Cmd
	dataDir string
	mqtt    string        // bound MQTT address, from its "tether started" line
	done    chan struct{} // closed once the process has exited
	mu      sync.Mutex
	log     bytes.Buffer // everything it wrote, for errors
}

// env is this process's environment without TETHER_* variables (so the
// caller's cannot change what the brokers do), plus extra.
func env(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TETHER_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// issueToken runs `broker token add` on dataDir and returns the token.
func issueToken(ctx context.Context, bin, dataDir, user string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "token", "add", "--user", user, "--data-dir", dataDir)
	cmd.Env, cmd.Stdout, cmd.Stderr = env(), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("token add: %v: %s", err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// startBroker runs bin on dataDir with MQTT on a free loopback port, the
// other listeners off, and snapshot keys from the environment, and waits
// for it to report its address.
func startBroker(ctx context.Context, bin, dataDir, keys string) (*brokerProcess, error) {
	p := &brokerProcess{dataDir: dataDir, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "--data-dir", dataDir,
		"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "", "--http-addr", "", "--admin-addr", "127.0.0.1:0",
		"--log-format", "json")
	p.cmd.Env = env("TETHER_SNAPSHOT_KEYS=" + keys) // not on the command line, where ps shows it
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.Write(append(sc.Bytes(), '\n'))
			p.mu.Unlock()
			var rec struct{ Msg, MQTT string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "tether started" {
				select {
				case started <- rec.MQTT:
				default:
				}
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	select {
	case p.mqtt = <-started:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("broker on %s exited before it started: %s\n%s", dataDir, p.cmd.ProcessState, p.output())
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("broker on %s did not start: %w\n%s", dataDir, ctx.Err(), p.output())
	}
}

func (p *brokerProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *brokerProcess) url() string { return "tcp://" + p.mqtt }

// kill sends SIGKILL (kill -9: nothing is flushed, nothing closes) and
// waits for the process to be gone; it returns how it ended.
func (p *brokerProcess) kill(ctx context.Context) (string, error) {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return "", err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return "", fmt.Errorf("broker ended with %s, not by SIGKILL", p.cmd.ProcessState)
	}
	return p.cmd.ProcessState.String(), nil
}

// stop asks the broker to shut down (SIGTERM) and waits, killing it if it
// takes too long.
func (p *brokerProcess) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("broker did not stop within 10s of SIGTERM")
	}
	return nil
}
