package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/wire"
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
	out            *outbox        // replies to requests refused here
	acks           *publishQueues // acknowledges refused publishes, shared with sessionHook

	// principals maps each live connection to who it is. Keyed by the
	// *mqtt.Client, not the client id: a takeover makes a new Client.
	principals sync.Map // *mqtt.Client -> auth.Principal
	cut        sync.Map // *mqtt.Client -> true: being disconnected for its token
}

func (h *access) ID() string { return "tether-access" }

func (h *access) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish, mqtt.OnDisconnect,
		mqtt.OnSessionEstablish,
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

// authFailures are the reasons of tether_auth_failures_total, by error.
var authFailures = []struct {
	err    error
	reason string
}{
	{auth.ErrMalformed, "malformed"}, {auth.ErrUnknown, "unknown"}, {auth.ErrMismatch, "mismatch"},
	{auth.ErrExpired, "expired"}, {auth.ErrRevoked, "revoked"},
}

// authFailureReasons are every reason authFailureReason returns.
var authFailureReasons = func() []string {
	rs := []string{"error"}
	for _, r := range authFailures {
		rs = append(rs, r.reason)
	}
	return rs
}()

func authFailureReason(err error) string {
	for _, r := range authFailures {
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
	if pk.FixedHeader.Type == packets.Publish && isWildcardRequest(pk.TopicName) {
		// mochi closes the connection next ([MQTT-3.3.2-2]): there is no
		// topic to reply on, so this count is the only trace.
		h.metrics.badRequestTopic.WithLabelValues("wildcard").Inc()
	}
	p, ok := h.principal(cl)
	if !ok || p.Anonymous {
		return pk, nil
	}
	if err := h.tokens.Recheck(p.TokenID); err != nil {
		if h.cutting(cl, p, err) {
			// Only ErrRejectPacket ends the read loop; MQTT 5 clients are told why first.
			_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnACLCheck decides subscriptions and deliveries. Publishes are decided in
// OnPublish, where the reply can follow the protocol version (see
// publishQueues.deny). A delivery re-checks the token too: a connection
// that only listens is cut off at its next message once its token is
// revoked or expired, like one that sends.
func (h *access) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	p, ok := h.principal(cl)
	if ok && !p.Anonymous {
		if err := h.tokens.Recheck(p.TokenID); err != nil {
			if h.cutting(cl, p, err) {
				// ACL checks of deliveries run on the publisher's goroutine.
				go func() { _ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized) }()
			}
			return false
		}
	}
	if ok && p.Allowed(topic, false) {
		return true
	}
	h.metrics.aclDenied.WithLabelValues("subscribe").Inc()
	return false
}

// cutting reports whether cl, whose token err says is no longer valid, is
// to be disconnected now: the first time only (every packet and delivery
// until it is gone asks), counted and logged.
func (h *access) cutting(cl *mqtt.Client, p auth.Principal, err error) bool {
	if _, already := h.cut.LoadOrStore(cl, true); already {
		return false
	}
	if _, live := h.principals.Load(cl); !live { // gone meanwhile: OnDisconnect ran
		h.cut.Delete(cl)
		return false
	}
	h.metrics.authFailed.WithLabelValues("live_" + authFailureReason(err)).Inc()
	h.log.Info("token no longer valid, disconnecting", "client", cl.ID, "user", p.User, "reason", authFailureReason(err))
	return true
}

func (h *access) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the broker's own messages
	}
	p, ok := h.principal(cl)
	if ok && p.Allowed(pk.TopicName, true) {
		h.checkResponseTopic(cl, p, &pk)
		return pk, nil
	}
	if ok && !p.Anonymous {
		if name, isReq := badSessionRequest(p.User, pk.TopicName); isReq {
			return pk, h.refuseBadName(cl, p, name, pk)
		}
	}
	h.metrics.aclDenied.WithLabelValues("publish").Inc()
	return pk, h.acks.deny(cl, pk, packets.ErrNotAuthorized)
}

// checkResponseTopic clears the MQTT 5 response topic of a request that
// responseTopicAllowed refuses, so that the reply goes to the session's own
// res topic instead, and counts it.
func (h *access) checkResponseTopic(cl *mqtt.Client, p auth.Principal, pk *packets.Packet) {
	rt := pk.Properties.ResponseTopic
	if rt == "" {
		return
	}
	user, name, leaf, ok := wire.ParseSessionTopic(pk.TopicName)
	if !ok || leaf != wire.LeafReq || user != p.User || responseTopicAllowed(user, name, rt) {
		return
	}
	h.metrics.responseTopicRefused.Inc()
	h.log.Info("response topic refused: replying on the session's res topic",
		"client", cl.ID, "user", p.User, "session", name, "response_topic", rt)
	pk.Properties.ResponseTopic = ""
}

// badSessionRequest reports whether topic is a request of user's on a
// session name that is not a name: sessions/<user>/<name>/req where name
// fails wire.ValidName (it may hold '/', '$', be empty or too long).
// Topics with '+' or '#' never get here: MQTT forbids them in a PUBLISH
// and the broker closes the connection first ([MQTT-3.3.2-2]).
func badSessionRequest(user, topic string) (name string, ok bool) {
	rest, ok := strings.CutPrefix(topic, wire.SessionsRoot+"/"+user+"/")
	if !ok {
		return "", false
	}
	name, ok = strings.CutSuffix(rest, "/"+wire.LeafReq)
	return name, ok && !wire.ValidName(name)
}

// isWildcardRequest reports whether topic looks like a request
// (sessions/…/req) but holds a wildcard, which no PUBLISH may.
func isWildcardRequest(topic string) bool {
	return strings.HasPrefix(topic, wire.SessionsRoot+"/") && strings.HasSuffix(topic, "/"+wire.LeafReq) &&
		strings.ContainsAny(topic, "+#")
}

// refuseBadName answers a request on an invalid session name with
// bad_request (on its allowed MQTT 5 response topic, else on the request
// topic with res for req), counts it, and refuses the publish: MQTT 5
// QoS>0 publishers get PUBACK 0x90 topic name invalid. Nothing is stored.
func (h *access) refuseBadName(cl *mqtt.Client, p auth.Principal, name string, pk packets.Packet) error {
	h.metrics.badRequestTopic.WithLabelValues("session_name").Inc()
	req, _ := wire.DecodeRequest(pk.Payload)
	res := wire.Response{ID: req.ID, Error: wire.Errorf(wire.CodeBadRequest,
		"session name %q is not a name: want 1 to 64 of A-Z a-z 0-9 . _ -", name)}
	if h.out != nil {
		h.out.replyOn(wire.SessionTopic(p.User, name, wire.LeafRes), p.User, name, replyToOf(pk), res)
	}
	h.log.Info("request on an invalid session name", "client", cl.ID, "user", p.User, "topic", pk.TopicName)
	return h.acks.deny(cl, pk, packets.ErrTopicNameInvalid)
}

func (h *access) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.principals.Delete(cl)
	h.cut.Delete(cl)
}
