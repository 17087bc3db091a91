package broker_test

import (
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// TestCleanStartForgetsStoredSession: a clean=false client's record and
// subscriptions are stored, and a later clean start of the same client id
// removes them for good — after a restart the broker knows no session.
func TestCleanStartForgetsStoredSession(t *testing.T) {
	cfg := brokertest.Config(t)
	b, err := broker.Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	url := "tcp://" + b.Addrs().MQTT
	opts := func(url string, clean bool) *paho.ClientOptions {
		return brokertest.ClientOptions(url, "alice", token).SetClientID("clean-start").SetCleanSession(clean)
	}
	connect := func(url string, clean bool) (paho.Client, bool) {
		c := paho.NewClient(opts(url, clean))
		tok := c.Connect()
		require.NoError(t, brokertest.Wait(tok))
		return c, tok.(*paho.ConnectToken).SessionPresent()
	}

	c, _ := connect(url, false)
	require.NoError(t, brokertest.Wait(c.Subscribe("sessions/alice/room/#", 1, nil)))
	c.Disconnect(100)
	c, present := connect(url, false)
	require.True(t, present, "control: the stored session is there")
	c.Disconnect(100)
	c, present = connect(url, true)
	require.False(t, present)
	c.Disconnect(100)
	require.NoError(t, b.Close())

	cfg.MQTTAddr = "127.0.0.1:0"
	again := brokertest.Start(t, cfg)
	c, present = connect("tcp://"+again.Addrs().MQTT, false)
	defer c.Disconnect(100)
	require.False(t, present, "the clean start removed the stored client for good")
}
