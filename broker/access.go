package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/auth"
)

// access is the hook that authenticates every CONNECT, re-checks the token
// on every later packet (so a revocation or expiry cuts a live connection at
// its next packet), and applies the ACL to every subscribe, publish and
// delivery.
type access struct {
	mqtt.HookBase
	tokens         *auth.Tokens
	allowAnonymous bool
	metrics        *metrics
	log            *slog.Logger
	srv            *mqtt.Server

	// principals maps each live connection to who it is. Keyed by the
	// *mqtt.Client, not the client id: a takeover makes a new Client.
	principals sync.Map // *mqtt.Client -> auth.Principal
}

func (h *access) ID() string { return "tether-access" }

func (h *access) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnDisconnect,
	}, []byte{b})
}

// principal returns who cl is, if it authenticated.
func (h *access) principal(cl *mqtt.Client) (auth.Principal, bool) {
	p, ok := h.principals.Load(cl)
	if !ok {
		return auth.Principal{}, false
	}
	return p.(auth.Principal), true
}

func (h *access) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, password := string(pk.Connect.Username), string(pk.Connect.Password)
	if user == "" && password == "" && h.allowAnonymous {
		h.principals.Store(cl, auth.Principal{Anonymous: true})
		h.metrics.authOK.WithLabelValues("anonymous").Inc()
		return true
	}
	tok, err := h.tokens.Check(user, password)
	if err != nil {
		reason := authFailureReason(err)
		h.metrics.authFailed.WithLabelValues(reason).Inc()
		h.log.Info("connect refused", "client", cl.ID, "user", user, "remote", cl.Net.Remote, "reason", reason)
		return false
	}
	h.principals.Store(cl, auth.Principal{User: tok.User, Role: tok.Role, TokenID: tok.ID})
	h.metrics.authOK.WithLabelValues(string(tok.Role)).Inc()
	return true
}

func authFailureReason(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{auth.ErrMalformed, "malformed"}, {auth.ErrUnknown, "unknown"}, {auth.ErrMismatch, "mismatch"},
		{auth.ErrExpired, "expired"}, {auth.ErrRevoked, "revoked"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "error"
}

// OnPacketRead re-checks the connection's token before any packet after
// CONNECT is processed.
func (h *access) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Connect {
		return pk, nil
	}
	p, ok := h.principal(cl)
	if !ok || p.Anonymous {
		return pk, nil
	}
	if err := h.tokens.Recheck(p.TokenID); err != nil {
		h.metrics.authFailed.WithLabelValues("live_" + authFailureReason(err)).Inc()
		h.log.Info("token no longer valid, disconnecting", "client", cl.ID, "user", p.User, "reason", authFailureReason(err))
		// Only ErrRejectPacket ends the read loop; MQTT 5 clients are told why first.
		_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnACLCheck decides subscriptions and deliveries. Publishes are decided in
// OnPublish, where the reply can follow the protocol version (see deny).
func (h *access) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	p, ok := h.principal(cl)
	if ok && p.Allowed(topic, false) {
		return true
	}
	h.metrics.aclDenied.WithLabelValues("subscribe").Inc()
	return false
}

func (h *access) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the broker's own messages
	}
	p, ok := h.principal(cl)
	if ok && p.Allowed(pk.TopicName, true) {
		return pk, nil
	}
	h.metrics.aclDenied.WithLabelValues("publish").Inc()
	return pk, deny(cl, pk, packets.ErrNotAuthorized)
}

func (h *access) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.principals.Delete(cl) }

// deny returns the OnPublish error that refuses pk without forwarding or
// retaining it: MQTT 5 QoS>0 publishers get code in their PUBACK; MQTT 3
// QoS>0 publishers get a plain PUBACK (3.1.1 has no way to say no short of
// disconnecting); QoS 0 publishes are simply dropped.
func deny(cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	switch {
	case pk.FixedHeader.Qos == 0:
		return packets.ErrRejectPacket
	case cl.Properties.ProtocolVersion == 5:
		return code
	default:
		return packets.CodeSuccessIgnore
	}
}
