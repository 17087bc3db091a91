package main

import (
	"context"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
)

// TestServeRegistersDemoCalls opens a broker from serve's config, as `go
// run ./cmd/broker` does, and makes the demo page's calls on it: on by
// default, off with demo-calls=false (flag or environment).
func TestServeRegistersDemoCalls(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  env
		on   bool
	}{
		{"default", nil, env{}, true},
		{"flag off", []string{"--demo-calls=false"}, env{}, false},
		{"env off", nil, env{"TETHER_DEMO_CALLS": "false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startServeConfig(t, tc.args, tc.env)

			dev := demoDevice(t, b, "demo")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := dev.Begin(ctx)
			require.NoError(t, err)
			reply, err := dev.Call(ctx, "demo.buy", struct{}{}, 1)
			if !tc.on {
				require.ErrorIs(t, err, client.ErrUnknownMethod)
				return
			}
			require.NoError(t, err)
			require.JSONEq(t, `{"count":1}`, string(reply))
			reply, err = dev.Call(ctx, "demo.buy", struct{}{}, 2)
			require.NoError(t, err)
			require.JSONEq(t, `{"count":2}`, string(reply))
			reply, err = dev.Call(ctx, "demo.count", struct{}{}, nil)
			require.NoError(t, err)
			require.JSONEq(t, `{"count":2}`, string(reply))
			begun, err := dev.Begin(ctx)
			require.NoError(t, err)
			require.JSONEq(t, `2`, string(begun.Memento), "the purchases' memento committed with them")
		})
	}
}

// TestServeKeepsConfiguredHandlers: a handler already in the config is
// kept, and wins over a demo handler of the same method.
func TestServeKeepsConfiguredHandlers(t *testing.T) {
	c, err := loadServeConfig(nil, io.Discard, env{}.lookup)
	require.NoError(t, err)
	mine := func(context.Context, *nonce.Call) (any, error) { return "mine", nil }
	c.broker.Handlers = map[string]nonce.Handler{"demo.buy": mine, "shop.buy": mine}
	cfg := c.brokerConfig()
	require.ElementsMatch(t, []string{"demo.buy", "demo.count", "shop.buy"}, slices.Collect(maps.Keys(cfg.Handlers)))
	got, err := cfg.Handlers["demo.buy"](context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, "mine", got)
	require.Len(t, c.broker.Handlers, 2, "serve's settings are not changed")
}

// startServeConfig opens a broker from serve's config for args and env,
// as `go run ./cmd/broker` does, on test ports and a temp data dir.
func startServeConfig(t *testing.T, args []string, env env) *broker.Broker {
	t.Helper()
	c, err := loadServeConfig(args, io.Discard, env.lookup)
	require.NoError(t, err)
	cfg := c.brokerConfig()
	test := brokertest.Config(t)
	cfg.DataDir, cfg.Logger = test.DataDir, test.Logger
	cfg.MQTTAddr, cfg.WSAddr, cfg.HTTPAddr, cfg.AdminAddr = test.MQTTAddr, test.WSAddr, test.HTTPAddr, test.AdminAddr
	return brokertest.Start(t, cfg)
}

// demoDevice connects alice's session name to b with the Go client.
func demoDevice(t *testing.T, b *broker.Broker, name string) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.URL, cfg.User, cfg.Session, cfg.ManualPing = "tcp://"+b.Addrs().MQTT, "alice", name, true
	cfg.Token = brokertest.Token(t, b, "alice", auth.RoleDevice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}
