package web_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/web"
)

// shopDevice begins user's session name on b with the Go client.
func shopDevice(t *testing.T, b *broker.Broker, user, name string) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session, cfg.ManualPing = "tcp://"+b.Addrs().MQTT, user, name, true
	cfg.Token = brokertest.Token(t, b, user, auth.RoleDevice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	_, err = c.Begin(ctx)
	require.NoError(t, err)
	return c
}

// TestDemoHandlers: demo.buy counts the user's purchases in every session
// (and nobody else's), demo.count reads the counter without changing it,
// and the counter survives a restart with the calls that made it.
func TestDemoHandlers(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Handlers = web.DemoHandlers()
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	count := func(c *client.Client, method string, memento any) int64 {
		t.Helper()
		raw, err := c.Call(ctx, method, struct{}{}, memento)
		require.NoError(t, err)
		var r web.ShopReply
		require.NoError(t, json.Unmarshal(raw, &r))
		return r.Count
	}

	kitchen := shopDevice(t, b, "alice", "kitchen")
	phone := shopDevice(t, b, "alice", "phone")
	bob := shopDevice(t, b, "bob", "kitchen")
	require.Equal(t, int64(0), count(kitchen, web.MethodCount, nil))
	require.Equal(t, int64(1), count(kitchen, web.MethodBuy, 1))
	require.Equal(t, int64(2), count(kitchen, web.MethodBuy, 2))
	require.Equal(t, int64(3), count(phone, web.MethodBuy, 1), "one counter for the user's sessions")
	require.Equal(t, int64(1), count(bob, web.MethodBuy, 1), "bob's counter is his own")
	require.Equal(t, int64(3), count(kitchen, web.MethodCount, nil))
	require.Equal(t, int64(3), count(kitchen, web.MethodCount, nil), "demo.count changes nothing")

	kitchen.Close()
	phone.Close()
	bob.Close()
	require.NoError(t, b.Close())
	b = brokertest.Start(t, cfg)
	again := shopDevice(t, b, "alice", "kitchen")
	require.Equal(t, int64(3), count(again, web.MethodCount, nil), "committed purchases are durable")
	require.Equal(t, int64(4), count(again, web.MethodBuy, 3))
}
