package broker

import (
	"encoding/json"
	"log/slog"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

// outbox publishes the broker's own messages (replies, ticks, presence)
// through an inline client: no network, no ACL, straight to subscribers.
type outbox struct {
	srv *mqtt.Server
	cl  *mqtt.Client
	log *slog.Logger
}

var _ sessions.Outbox = (*outbox)(nil)

func newOutbox(srv *mqtt.Server, log *slog.Logger) *outbox {
	cl := srv.NewClient(nil, "local", "tether", true)
	cl.Properties.ProtocolVersion = 5
	return &outbox{srv: srv, cl: cl, log: log}
}

func (o *outbox) publish(topic string, v any, qos byte, retain bool, props packets.Properties) {
	payload, err := json.Marshal(v)
	if err != nil {
		o.log.Error("encode broker message", "topic", topic, "error", err)
		return
	}
	o.publishPayload(topic, payload, qos, retain, props)
}

// publishPayload is publish of an encoded payload.
func (o *outbox) publishPayload(topic string, payload []byte, qos byte, retain bool, props packets.Properties) {
	err := o.srv.InjectPacket(o.cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		Properties:  props,
		PacketID:    uint16(qos), // inline publishes are never acknowledged; the id only passes validation
	})
	if err != nil {
		o.log.Error("publish broker message", "topic", topic, "error", err)
	}
}

// replyTo is what a reply needs of its request: MQTT 5's response topic
// and correlation data (both empty for MQTT 3.1.1).
type replyTo struct {
	topic       string
	correlation []byte
}

func replyToOf(req packets.Packet) replyTo {
	return replyTo{topic: req.Properties.ResponseTopic, correlation: req.Properties.CorrelationData}
}

// reply answers the request req on sessions/U/S/res, where U is the
// requester (the ACL let only U publish on sessions/U/S/req). An MQTT 5
// request's correlation data always comes back; its response topic is
// used only when responseTopicAllowed says so. The access hook already
// cleared (and counted) a refused one; this check is the last line.
func (o *outbox) reply(user, name string, req replyTo, res wire.Response) {
	o.replyOn(wire.SessionTopic(user, name, wire.LeafRes), user, name, req, res)
}

// replyOn is reply with def as the default topic.
func (o *outbox) replyOn(def, user, name string, req replyTo, res wire.Response) {
	topic := def
	if rt := req.topic; rt != "" && responseTopicAllowed(user, name, rt) {
		topic = rt
	}
	props := packets.Properties{CorrelationData: req.correlation}
	if payload, ok := res.AppendJSON(nil); ok {
		o.publishPayload(topic, payload, 0, false, props)
		return
	}
	o.publish(topic, res, 0, false, props)
}

// responseTopicAllowed reports whether the broker may answer user's request
// on session name at the MQTT 5 response topic rt. The broker publishes as
// itself, past every ACL, so the topic must be one the requester could read
// anyway and one where nobody expects the broker's own messages:
//   - a topic name under the requester's own sessions/<user>/ root, without
//     wildcards (so never another user's topic, nor tether/…, nor $…);
//   - not a broker-owned topic of any session: sessions/<user>/<S>/ with
//     leaf res, notify, tick, snapshot or presence, except the request's own
//     sessions/<user>/<name>/res (the default). A reply there would pass
//     for a tick, a notification or another device's reply.
func responseTopicAllowed(user, name, rt string) bool {
	if rt == wire.SessionTopic(user, name, wire.LeafRes) {
		return true
	}
	rest, ok := strings.CutPrefix(rt, wire.SessionsRoot+"/"+user+"/")
	if !ok || rest == "" || strings.ContainsAny(rt, "+#\x00") {
		return false
	}
	if _, _, leaf, ok := wire.ParseSessionTopic(rt); ok && (wire.BrokerOwnedLeaf(leaf) || leaf == wire.LeafPresence) {
		return false
	}
	return true
}

func (o *outbox) Tick(user, name string, t sessions.Tick) {
	o.publishPayload(wire.SessionTopic(user, name, wire.LeafTick), t.AppendJSON(make([]byte, 0, 96)), 0, false, packets.Properties{})
}

func (o *outbox) Presence(user, name string, p sessions.Presence) {
	o.publishPayload(wire.SessionTopic(user, name, wire.LeafPresence), p.AppendJSON(make([]byte, 0, 48)), 1, true, packets.Properties{})
}

// notify delivers n on topic at QoS 1, not retained.
func (o *outbox) notify(topic string, n wire.Notification) {
	o.publishPayload(topic, n.AppendJSON(make([]byte, 0, 64+len(n.Data))), 1, false, packets.Properties{})
}
