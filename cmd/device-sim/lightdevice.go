package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/internal/mqttread"
	"github.com/f47fa0da/tether/wire"
)

// lightSession is the device of the scale benchmarks: one MQTT 3.1.1
// connection, written with mochi's packet codec on a bare net.Conn, that
// does what the client SDK does to start (CONNECT with the SDK's will,
// SUBSCRIBE res/tick/notify, begin and wait for its reply) and then stays
// idle, reading nothing. It costs the load generator a fraction of what a
// paho client does, so that the broker, not device-sim, is what is
// measured.
type lightSession struct {
	conn     net.Conn
	r        *bufio.Reader
	connID   string
	req, res string // the session's request and reply topics
	nonce    string // the current instance, from the begin reply
	nextSeq  uint64 // the seq of the next call
	requests uint64 // requests sent, for their ids
}

// lightMode is how far a light session goes in starting.
type lightMode int

const (
	lightConnect   lightMode = iota // a plain CONNECT, no will (any MQTT broker)
	lightSubscribe                  // CONNECT with the SDK's will and SUBSCRIBE to res/tick/notify (any MQTT broker)
	lightBegin                      // and begin, waiting for its reply (Tether)
)

// dialLightSession connects as user to session at addr (host:port) and
// starts it as far as mode says.
func dialLightSession(ctx context.Context, addr, user, token, session string, mode lightMode) (*lightSession, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", user, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
	s := &lightSession{conn: conn}
	if err := s.start(user, token, session, mode); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return s, nil
}

func (s *lightSession) start(user, token, session string, mode lightMode) error {
	connID := randomID()
	s.connID = connID
	s.req, s.res = wire.SessionTopic(user, session, wire.LeafReq), wire.SessionTopic(user, session, wire.LeafRes)
	c := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: "sim-" + user + "-" + connID, Clean: true,
			Keepalive: 300, UsernameFlag: user != "", Username: []byte(user), PasswordFlag: token != "", Password: []byte(token),
		}}
	if mode >= lightSubscribe {
		will, _ := json.Marshal(map[string]string{"state": "offline", "conn": connID})
		c.Connect.WillFlag, c.Connect.WillQos = true, 1
		c.Connect.WillTopic, c.Connect.WillPayload = wire.SessionTopic(user, session, wire.LeafPresence), will
	}
	var buf bytes.Buffer
	if err := c.ConnectEncode(&buf); err != nil {
		return err
	}
	if mode >= lightSubscribe {
		sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
			Filters: packets.Subscriptions{
				{Filter: wire.SessionTopic(user, session, wire.LeafRes), Qos: 1},
				{Filter: wire.SessionTopic(user, session, wire.LeafTick), Qos: 0},
				{Filter: wire.SessionTopic(user, session, wire.LeafNotify), Qos: 1},
			}}
		if err := sub.SubscribeEncode(&buf); err != nil {
			return err
		}
	}
	if mode == lightBegin {
		req, _ := json.Marshal(wire.Request{ID: json.RawMessage(`"` + connID + `.1"`), Op: wire.OpBegin})
		pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4, PacketID: 2,
			TopicName: wire.SessionTopic(user, session, wire.LeafReq), Payload: req}
		if err := pub.PublishEncode(&buf); err != nil {
			return err
		}
	}
	// One write: CONNECT, SUBSCRIBE and begin, as a client that pipelines.
	if _, err := s.conn.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("connect %s: %w", user, err)
	}
	s.r = bufio.NewReaderSize(s.conn, 1024)
	for {
		pk, err := mqttread.Packet(s.r, 4)
		if err != nil {
			return fmt.Errorf("%s: %w", user, err)
		}
		switch pk.FixedHeader.Type {
		case packets.Connack:
			if pk.ReasonCode != 0 {
				return fmt.Errorf("connect %s: refused with code %d", user, pk.ReasonCode)
			}
			if mode == lightConnect {
				return nil
			}
		case packets.Suback:
			for _, code := range pk.ReasonCodes {
				if code >= 0x80 {
					return fmt.Errorf("subscribe %s: refused", user)
				}
			}
			if mode == lightSubscribe {
				return nil
			}
		case packets.Publish:
			r, ok, err := s.reply(pk)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			var b struct {
				Nonce   string `json:"nonce"`
				NextSeq uint64 `json:"next_seq"`
			}
			if r.Error != nil || json.Unmarshal(r.OK, &b) != nil || b.Nonce == "" {
				return fmt.Errorf("begin %s/%s: %s", user, session, pk.Payload)
			}
			s.nonce, s.nextSeq = b.Nonce, b.NextSeq
			return nil
		}
	}
}

// lightReply is a reply as the light device reads it.
type lightReply struct {
	ID    json.RawMessage `json:"id"`
	OK    json.RawMessage `json:"ok"`
	Error *wire.Error     `json:"error"`
}

// reply acknowledges a QoS 1 publish and, when pk is on the session's
// reply topic, decodes it (ok true).
func (s *lightSession) reply(pk packets.Packet) (lightReply, bool, error) {
	var r lightReply
	if pk.FixedHeader.Qos == 1 {
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}
		var b bytes.Buffer
		_ = ack.PubackEncode(&b)
		if _, err := s.conn.Write(b.Bytes()); err != nil {
			return r, false, err
		}
	}
	if pk.TopicName != s.res {
		return r, false, nil
	}
	if err := json.Unmarshal(pk.Payload, &r); err != nil {
		return r, false, fmt.Errorf("reply on %s: %w: %q", s.res, err, pk.Payload)
	}
	return r, true, nil
}

// call makes an exactly-once call of the begun instance (QoS 0, as the
// SDK sends requests) and waits for its reply, skipping other messages.
func (s *lightSession) call(method string, args any) (json.RawMessage, error) {
	a, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	s.requests++
	id := json.RawMessage(strconv.Quote(s.connID + ".c" + strconv.FormatUint(s.requests, 10)))
	req, err := json.Marshal(wire.Request{ID: id, Op: wire.OpCall, Nonce: s.nonce, Seq: s.nextSeq, Method: method, Args: a})
	if err != nil {
		return nil, err
	}
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4, TopicName: s.req, Payload: req}
	var buf bytes.Buffer
	if err := pub.PublishEncode(&buf); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	for {
		pk, err := mqttread.Packet(s.r, 4)
		if err != nil {
			return nil, err
		}
		if pk.FixedHeader.Type != packets.Publish {
			continue
		}
		r, ok, err := s.reply(pk)
		if err != nil {
			return nil, err
		}
		if !ok || !bytes.Equal(r.ID, id) {
			continue
		}
		if r.Error != nil {
			return nil, fmt.Errorf("call %s seq %d: %s: %s", method, s.nextSeq, r.Error.Code, r.Error.Message)
		}
		s.nextSeq++
		return r.OK, nil
	}
}

func (s *lightSession) close() { _ = s.conn.Close() }

// hostPort strips the scheme of a tcp:// URL.
func hostPort(url string) string { return strings.TrimPrefix(url, "tcp://") }
