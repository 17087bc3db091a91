package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a broker (or peer) running as a subprocess, so that it can be
// measured alone (RSS) or die by SIGKILL with nothing flushed.
type child struct {
	name   string
	cmd    *exec.Cmd
	out    *tail
	exited chan struct{} // closed when the process is gone
	err    error         // how it ended; set before exited closes
}

// startChild starts argv with its output kept in a bounded buffer.
func startChild(name string, argv []string, env ...string) (*child, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	c := &child{name: name, cmd: exec.Command(argv[0], argv[1:]...), out: &tail{max: 64 << 10}, exited: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.Env = append(os.Environ(), env...)
	// Its own process group: a signal to device-sim's terminal does not
	// reach it first, and kill9 and stop reach what it started (a broker
	// run through a shell or `go run`).
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.cmd.WaitDelay = 2 * time.Second // a process outside the group holding its output does not hold up Wait
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", name, argv[0], err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// Pid is the child's process id.
func (c *child) Pid() int { return c.cmd.Process.Pid }

// waitListening waits until addr accepts TCP connections, the child exits,
// or timeout passes.
func (c *child) waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited before listening on %s (%v):\n%s", c.name, addr, c.err, c.out)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s:\n%s", c.name, addr, timeout, c.out)
		}
	}
}

// kill9 sends SIGKILL to the child's process group and waits for the
// child to be gone.
func (c *child) kill9() {
	c.signal(syscall.SIGKILL)
	<-c.exited
}

// signal sends sig to the child's process group (the child and whatever
// it started), or to the child alone if that fails.
func (c *child) signal(sig syscall.Signal) {
	if err := syscall.Kill(-c.Pid(), sig); err != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

// stop asks the child to shut down (SIGTERM) and kills it after timeout.
func (c *child) stop(timeout time.Duration) error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	c.signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(timeout):
		c.kill9()
		return fmt.Errorf("%s: no exit %s after SIGTERM; killed", c.name, timeout)
	}
}

// rssKB reads the child's resident set size (VmRSS) in KiB.
func (c *child) rssKB() (int64, error) { return rssOf(c.Pid()) }

func rssOf(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuTime reads a process's user+system CPU time from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15 of the whole line
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux
// for every architecture Go supports.
const clockTicks = 100

// freeAddr returns a loopback address whose port was free a moment ago,
// so that a restarted broker listens where the devices reconnect.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.Clone(t.buf))
}
