package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// TestLateLossReportKeepsClientReady: paho reports a lost connection from
// a goroutine of its own, which may run after the next connection is up
// and subscribed. Such a late report must not leave the client waiting
// for a connection it already has: its requests go on.
func TestLateLossReportKeepsClientReady(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	cfg := DefaultConfig()
	cfg.URL, cfg.User, cfg.Session = "tcp://"+b.Addrs().MQTT, "alice", "lamp"
	cfg.Token = brokertest.Token(t, b, "alice", auth.RoleDevice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	_, err = c.Begin(ctx)
	require.NoError(t, err)

	c.notReady() // the report of a connection lost before this one
	select {
	case <-c.readyChan():
	default:
		t.Fatal("a late loss report made a connected client wait")
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	_, err = c.Ping(short)
	require.NoError(t, err)
}
