package broker_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/internal/brokertest"
)

func TestConnectAuthentication(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	alice := brokertest.Token(t, b, "alice", auth.RoleDevice)
	expiredSecret, _, err := b.Tokens().Add(auth.NewToken{User: "carol", Role: auth.RoleDevice, ValidUntil: time.Now().Add(300 * time.Millisecond)})
	require.NoError(t, err)
	revokedSecret, revoked, err := b.Tokens().Add(auth.NewToken{User: "dave", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	_, err = b.Tokens().Revoke(revoked.ID)
	require.NoError(t, err)
	time.Sleep(400 * time.Millisecond) // let carol's token expire

	tests := []struct {
		name, user, password string
		ok                   bool
		reason               string
	}{
		{"valid", "alice", alice, true, ""},
		{"wrong secret", "alice", alice[:30] + flip(alice[30]) + alice[31:], false, "mismatch"},
		{"garbage", "alice", "letmein", false, "malformed"},
		{"other user's token", "bob", alice, false, "mismatch"},
		{"unknown user", "nobody", "tt1_0123456789abcdef_" + strings.Repeat("A", 43), false, "unknown"},
		{"expired", "carol", expiredSecret, false, "expired"},
		{"revoked", "dave", revokedSecret, false, "revoked"},
		{"anonymous refused by default", "", "", false, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, b.Addrs().HTTP, fmt.Sprintf(`tether_auth_failures_total{reason="%s"}`, tc.reason))
			_, err := brokertest.Connect(t, brokertest.ClientOptions(url, tc.user, tc.password))
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "not Authorized")
			require.Equal(t, before+1, metric(t, b.Addrs().HTTP, fmt.Sprintf(`tether_auth_failures_total{reason="%s"}`, tc.reason)))
		})
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestRevokeCutsLiveConnection(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	secret, tok, err := b.Tokens().Add(auth.NewToken{User: "alice", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	lost := make(chan error, 1)
	opts := brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", secret).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := brokertest.MustConnect(t, opts)
	require.NoError(t, brokertest.Wait(c.Publish("sessions/alice/a/req", 1, false, "before")))

	_, err = b.Admin().Call("token.revoke", []byte(fmt.Sprintf(`{"id":%q}`, tok.ID)))
	require.NoError(t, err)
	c.Publish("sessions/alice/a/req", 1, false, "after") // the next packet
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("connection with a revoked token stayed open")
	}
	_, err = brokertest.Connect(t, brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", secret))
	require.Error(t, err, "a revoked token must not connect again")
}

func TestExpiryCutsLiveConnection(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	secret, _, err := b.Tokens().Add(auth.NewToken{User: "alice", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Second)})
	require.NoError(t, err)
	lost := make(chan error, 1)
	opts := brokertest.ClientOptions("tcp://"+b.Addrs().MQTT, "alice", secret).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := brokertest.MustConnect(t, opts)
	time.Sleep(1100 * time.Millisecond)
	c.Publish("sessions/alice/a/req", 0, false, "late")
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("connection with an expired token stayed open")
	}
}

func TestACL(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	alice := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice)))
	bob := brokertest.MustConnect(t, brokertest.ClientOptions(url, "bob", brokertest.Token(t, b, "bob", auth.RoleDevice)))
	svc := brokertest.MustConnect(t, brokertest.ClientOptions(url, "app", brokertest.Token(t, b, "app", auth.RoleService)))

	// Subscriptions: the SUBACK return code says whether it was granted.
	subs := []struct {
		c      paho.Client
		filter string
		ok     bool
	}{
		{alice, "sessions/alice/#", true},
		{alice, "sessions/alice/kitchen/notify", true},
		{alice, "sessions/bob/#", false},
		{alice, "sessions/+/kitchen/notify", false},
		{alice, "#", false},
		{alice, "$SYS/#", false},
		{alice, "tether/notify/#", false},
		{alice, "plain/topic", false},
		{svc, "tether/notify/#", true},
		{svc, "sessions/alice/#", false},
	}
	for _, s := range subs {
		tok := s.c.Subscribe(s.filter, 1, nil)
		require.NoError(t, brokertest.Wait(tok))
		code := tok.(*paho.SubscribeToken).Result()[s.filter]
		require.Equal(t, s.ok, code != 0x80, "subscribe %s: code %#x", s.filter, code)
	}

	// Publishes: only permitted ones reach the subscriber.
	seen := brokertest.NewMessages(10)
	require.NoError(t, brokertest.Wait(bob.Subscribe("sessions/bob/#", 1, seen.Handler)))
	require.NoError(t, brokertest.Wait(alice.Publish("sessions/bob/kitchen/req", 1, false, "intruder")))
	require.NoError(t, brokertest.Wait(bob.Publish("sessions/bob/kitchen/notify", 1, false, "forged")))
	seen.None(t, 200*time.Millisecond)
	require.NoError(t, brokertest.Wait(bob.Publish("sessions/bob/kitchen/data", 1, false, "mine")))
	msg := seen.Next(t, 2*time.Second)
	require.Equal(t, "sessions/bob/kitchen/data", msg.Topic())
	require.Equal(t, "mine", string(msg.Payload()))
	require.True(t, alice.IsConnectionOpen(), "a denied 3.1.1 publish is acked and dropped, not a disconnect")
	require.GreaterOrEqual(t, metric(t, b.Addrs().HTTP, `tether_acl_denied_total{action="publish"}`), 2.0)
	require.GreaterOrEqual(t, metric(t, b.Addrs().HTTP, `tether_acl_denied_total{action="subscribe"}`), 7.0)
}

func TestAnonymous(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.AllowAnonymous = true
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT
	anon := brokertest.MustConnect(t, brokertest.ClientOptions(url, "", ""))
	got := brokertest.NewMessages(4)
	require.NoError(t, brokertest.Wait(anon.Subscribe("plain/#", 1, got.Handler)))
	require.NoError(t, brokertest.Wait(anon.Publish("plain/hello", 1, false, "hi")))
	require.Equal(t, "hi", string(got.Next(t, 2*time.Second).Payload()))

	tok := anon.Subscribe("sessions/alice/#", 1, nil)
	require.NoError(t, brokertest.Wait(tok))
	require.Equal(t, byte(0x80), tok.(*paho.SubscribeToken).Result()["sessions/alice/#"])

	// A wrong token is still refused even though anonymous access is on.
	_, err := brokertest.Connect(t, brokertest.ClientOptions(url, "alice", "wrong"))
	require.Error(t, err)
}

// metric reads one sample from the broker's /metrics (0 if absent).
func metric(t *testing.T, httpAddr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			_, err := fmt.Sscan(rest, &v)
			require.NoError(t, err)
			return v
		}
	}
	return 0
}
