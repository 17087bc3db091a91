package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// kill9 kills what the child started too: a broker run through a shell
// wrapper (or `go run`) must not survive holding its port and data
// directory, nor make kill9 wait for it.
func TestKill9KillsTheWholeGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	c, err := startChild("wrapper", []string{"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"})
	require.NoError(t, err)
	var pid int
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	}, 5*time.Second, 20*time.Millisecond)
	t0 := time.Now()
	c.kill9()
	require.Less(t, time.Since(t0), 2*time.Second, "kill9 waited for the grandchild")
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 2*time.Second, 20*time.Millisecond,
		"the wrapper's child survived SIGKILL")
}

// The built-in notifier counts a notification as acknowledged only on its
// PUBACK: paho fails the token of a QoS 1 publish whose connection died
// before one came (clean session, no reconnect), so nothing the broker did
// not acknowledge is counted.
func TestNotifierCountsOnlyPUBACKs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		_, _ = c.Read(buf)                             // CONNECT
		_, _ = c.Write([]byte{0x20, 0x02, 0x00, 0x00}) // CONNACK, accepted
		_, _ = c.Read(buf)                             // the PUBLISH: never acknowledged
		time.Sleep(50 * time.Millisecond)
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close() // the broker dies
	}()
	lost := make(chan struct{})
	cli, err := dialMQTT(context.Background(), "tcp://"+ln.Addr().String(), "u", "p", func(error) { close(lost) })
	require.NoError(t, err)
	tok := cli.Publish("tether/notify/u/s", 1, false, []byte(`{"data":1}`))
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.ErrorContains(t, tok.Error(), "connection lost")
	<-lost
}

// A run stopped before its checks (Ctrl-C) reports no verdict, rather
// than every invariant failing because the final reads could not run.
func TestInterruptedRunHasNoVerdict(t *testing.T) {
	sc := presets["smoke"]
	sc.Preset, sc.Devices, sc.Duration, sc.Quiet = "smoke", 3, 30*time.Second, true
	require.NoError(t, sc.Validate())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(2*time.Second, cancel)
	rep, err := runScenario(ctx, sc, io.Discard)
	require.ErrorIs(t, err, errInterrupted)
	require.Nil(t, rep)
}
