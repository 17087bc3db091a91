package broker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
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

	// Every reason is exported from the start, at 0: a dashboard sees a
	// series, not a gap, before the first failure.
	body := metrics(t, b.Addrs().HTTP)
	for _, r := range []string{"malformed", "unknown", "mismatch", "expired", "revoked", "error", "live_expired", "live_revoked", "live_unknown"} {
		require.Contains(t, body, `tether_auth_failures_total{reason="`+r+`"} 0`+"\n")
	}
	for _, r := range []string{"device", "service", "anonymous"} {
		require.Contains(t, body, `tether_auth_success_total{role="`+r+`"} 0`+"\n")
	}
	require.Contains(t, body, "tether_connections 0\n")

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
			okBefore := metric(t, b.Addrs().HTTP, `tether_auth_success_total{role="device"}`)
			connsBefore := metric(t, b.Addrs().HTTP, "tether_connections")
			c, err := brokertest.Connect(t, brokertest.ClientOptions(url, tc.user, tc.password))
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, okBefore+1, metric(t, b.Addrs().HTTP, `tether_auth_success_total{role="device"}`))
				require.Equal(t, connsBefore+1, metric(t, b.Addrs().HTTP, "tether_connections"))
				c.Disconnect(100)
				brokertest.WaitFor(t, 2*time.Second, "tether_connections back down", func() bool {
					return metric(t, b.Addrs().HTTP, "tether_connections") == connsBefore
				})
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "not Authorized")
			require.Equal(t, before+1, metric(t, b.Addrs().HTTP, fmt.Sprintf(`tether_auth_failures_total{reason="%s"}`, tc.reason)))
			require.Equal(t, okBefore, metric(t, b.Addrs().HTTP, `tether_auth_success_total{role="device"}`))
			require.Equal(t, connsBefore, metric(t, b.Addrs().HTTP, "tether_connections"), "a refused client is not connected")
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

// TestRevokeCutsListeningConnection: a connection that only listens
// (keepalive 0, QoS 0: it never sends a packet) gets nothing more of the
// user's once its token is revoked, and is cut at its next delivery.
func TestRevokeCutsListeningConnection(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	secret, tok, err := b.Tokens().Add(auth.NewToken{User: "alice", Role: auth.RoleDevice, ValidUntil: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	lost := make(chan error, 1)
	heard := brokertest.NewMessages(100)
	listener := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", secret).SetKeepAlive(0).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
	require.NoError(t, brokertest.Wait(listener.Subscribe("sessions/alice/#", 0, heard.Handler)))
	_, err = b.Tokens().Revoke(tok.ID)
	require.NoError(t, err)

	dev := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", brokertest.Token(t, b, "alice", auth.RoleDevice)))
	res := brokertest.NewMessages(10)
	require.NoError(t, brokertest.Wait(dev.Subscribe("sessions/alice/kitchen/res", 0, res.Handler)))
	require.NoError(t, brokertest.Wait(dev.Publish("sessions/alice/kitchen/req", 1, false, `{"id":1,"op":"begin"}`)))
	require.Contains(t, string(res.Next(t, 5*time.Second).Payload()), `"nonce"`, "the device itself is served")
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("a listening connection with a revoked token stayed open")
	}
	heard.None(t, 100*time.Millisecond) // nothing of the user reached the revoked listener
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

// metrics returns the broker's /metrics page.
func metrics(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// metric reads one sample from the broker's /metrics (0 if absent).
func metric(t *testing.T, httpAddr, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(metrics(t, httpAddr), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			_, err := fmt.Sscan(rest, &v)
			require.NoError(t, err)
			return v
		}
	}
	return 0
}

// mosquittoArgs returns the connection flags of the mosquitto tools for
// user on b, failing the test when the tools are missing.
func mosquittoArgs(t *testing.T, b *broker.Broker, user, token string) []string {
	t.Helper()
	for _, bin := range []string{"mosquitto_pub", "mosquitto_sub", "mosquitto_rr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed: run `make deps` (the test command installs it)", bin)
		}
	}
	host, port, _ := strings.Cut(b.Addrs().MQTT, ":")
	return []string{"-h", host, "-p", port, "-u", user, "-P", token}
}

// TestResponseTopic: the broker answers an MQTT 5 request on its response
// topic only when that is a topic of the requester's own where nobody
// expects the broker's messages; otherwise on sessions/U/S/res. alice must
// not be able to forge bob's replies, or her own session's ticks.
func TestResponseTopic(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	aliceToken := brokertest.Token(t, b, "alice", auth.RoleDevice)
	mine := brokertest.NewMessages(32)
	alice := brokertest.MustConnect(t, brokertest.ClientOptions(url, "alice", aliceToken))
	require.NoError(t, brokertest.Wait(alice.Subscribe("sessions/alice/#", 1, mine.Handler)))
	foreign := brokertest.NewMessages(32)
	bob := brokertest.MustConnect(t, brokertest.ClientOptions(url, "bob", brokertest.Token(t, b, "bob", auth.RoleDevice)))
	require.NoError(t, brokertest.Wait(bob.Subscribe("sessions/bob/#", 1, foreign.Handler)))
	svc := brokertest.MustConnect(t, brokertest.ClientOptions(url, "app", brokertest.Token(t, b, "app", auth.RoleService)))
	require.NoError(t, brokertest.Wait(svc.Subscribe("tether/#", 1, foreign.Handler)))
	base := mosquittoArgs(t, b, "alice", aliceToken)

	t.Run("refused", func(t *testing.T) {
		for i, rt := range []string{
			"sessions/bob/kitchen/res",    // another user's reply topic
			"sessions/bob/kitchen/notify", // another user's notifications
			"sessions/alice/tv/tick",      // her own other session's broker-owned leaves
			"sessions/alice/tv/res",
			"sessions/alice/tv/presence",
			"sessions/alice/k/notify", // and the requesting session's
			"tether/notify/bob/kitchen",
			"$SYS/broker/x",
		} {
			id := fmt.Sprintf("bobs-request-%d", i)
			out, err := exec.Command("mosquitto_pub", append(base, "-V", "5", "-q", "1", "-t", "sessions/alice/k/req",
				"-D", "publish", "response-topic", rt, "-D", "publish", "correlation-data", "c"+id,
				"-m", `{"id":"`+id+`","op":"ping","nonce":"x"}`)...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			msg := mine.Next(t, 2*time.Second)
			require.Equal(t, "sessions/alice/k/res", msg.Topic(), "response topic %s refused: the reply goes to the session's res", rt)
			require.JSONEq(t, `"`+id+`"`, string(decodeReply(t, msg.Payload()).ID))
		}
		foreign.None(t, 300*time.Millisecond)
		mine.None(t, 100*time.Millisecond)
		require.Equal(t, 8.0, metric(t, b.Addrs().HTTP, "tether_response_topic_refused_total"))
	})

	t.Run("honoured", func(t *testing.T) {
		for i, rt := range []string{"sessions/alice/k/res", "sessions/alice/k/rr", "sessions/alice/replies/7/x", "sessions/alice/inbox"} {
			id := fmt.Sprintf("own-%d", i)
			out, err := exec.Command("mosquitto_rr", append(base, "-t", "sessions/alice/k/req", "-e", rt, "-W", "5",
				"-D", "publish", "correlation-data", "corr-"+id, "-F", "%t|%D|%p",
				"-m", `{"id":"`+id+`","op":"begin"}`)...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			topic, rest, _ := strings.Cut(strings.TrimSpace(string(out)), "|")
			corr, payload, _ := strings.Cut(rest, "|")
			require.Equal(t, rt, topic)
			require.Equal(t, "corr-"+id, corr, "correlation data comes back")
			res := decodeReply(t, []byte(payload))
			require.JSONEq(t, `"`+id+`"`, string(res.ID))
			require.Nil(t, res.Error, "%s", payload)

			// The watcher sees the reply on that topic too, not on res as well
			// (skipping the begin's presence and tick).
			for {
				msg := mine.Next(t, 2*time.Second)
				if strings.HasSuffix(msg.Topic(), "/presence") || strings.HasSuffix(msg.Topic(), "/tick") {
					continue
				}
				require.Equal(t, rt, msg.Topic())
				break
			}
		}
		require.Equal(t, 8.0, metric(t, b.Addrs().HTTP, "tether_response_topic_refused_total"), "none refused")
	})
}

// decodeReply decodes a reply envelope.
func decodeReply(t *testing.T, payload []byte) (res struct {
	ID    json.RawMessage
	Error *struct{ Code, Message string }
}) {
	t.Helper()
	require.NoError(t, json.Unmarshal(payload, &res), "%s", payload)
	return res
}
