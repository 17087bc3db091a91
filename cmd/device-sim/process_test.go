package main

import (
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/f47fa0da/tether/client"
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

// A notification counts as delivered only once the broker confirmed an
// ack covering it: one a device got and died before acking must come
// again, or it is reported lost. One notifier id under two seqs (queued
// twice: no device can drop that duplicate by seq) is a violation too,
// and an earlier run's notification is not counted at all.
func TestNotificationBookkeeping(t *testing.T) {
	s := &sim{runID: "run1"}
	sl := newSlot(s, 0)
	inc := &incarnation{}
	note := func(seq uint64, run string, id int64) client.Notification {
		return client.Notification{Seq: seq, Data: json.RawMessage(fmt.Sprintf(`{"r":%q,"n":%d,"t":1}`, run, id))}
	}
	sl.gotPUBACK(1)
	sl.gotPUBACK(2)
	sl.gotNotification(inc, note(1, "run1", 1))
	require.Equal(t, 2, sl.pendingNow(), "received is not delivered: its ack is not confirmed")
	sl.ackedUpTo(0) // the next begin: the broker says nothing was acked...
	require.Equal(t, 2, sl.pendingNow(), "...so notification 1 must come again")
	sl.ackedUpTo(1)
	require.Equal(t, 1, sl.pendingNow())

	sl.gotNotification(&incarnation{}, note(2, "run1", 2))
	sl.gotNotification(&incarnation{}, note(3, "run1", 2))
	require.Len(t, sl.seqReused, 1, "notification 2 under seqs 2 and 3")
	sl.ackedUpTo(3)
	require.Zero(t, sl.pendingNow())

	sl.gotNotification(&incarnation{}, note(4, "an earlier run", 7))
	require.False(t, sl.received[7])
	require.Equal(t, int64(2), s.delivered.Load(), "notifications 1 and 2, nothing of the earlier run")
}
