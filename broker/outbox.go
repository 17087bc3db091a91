package broker

import (
	"encoding/json"
	"log/slog"

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
	err = o.srv.InjectPacket(o.cl, packets.Packet{
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

// reply answers the request req: on the MQTT 5 response topic with its
// correlation data when the request named one, else on sessions/U/S/res.
func (o *outbox) reply(user, name string, req packets.Packet, res wire.Response) {
	topic := wire.SessionTopic(user, name, wire.LeafRes)
	var props packets.Properties
	if rt := req.Properties.ResponseTopic; rt != "" {
		topic = rt // delivery still passes the ACL: only the requester's own topics work
		props.CorrelationData = req.Properties.CorrelationData
	}
	o.publish(topic, res, 1, false, props)
}

func (o *outbox) Tick(user, name string, t sessions.Tick) {
	o.publish(wire.SessionTopic(user, name, wire.LeafTick), t, 0, false, packets.Properties{})
}

func (o *outbox) Presence(user, name string, p sessions.Presence) {
	o.publish(wire.SessionTopic(user, name, wire.LeafPresence), p, 1, true, packets.Properties{})
}

// publishQoS1 sends v on topic at QoS 1, not retained.
func (o *outbox) publishQoS1(topic string, v any) {
	o.publish(topic, v, 1, false, packets.Properties{})
}
