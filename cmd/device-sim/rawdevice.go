package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/f47fa0da/tether/wire"
)

// rawSession is a light device for the scale benchmarks: one paho
// connection with the client SDK's will and subscriptions that sends
// begin and then stays idle (MQTT keepalive only), without the SDK's
// per-client buffers and goroutines.
type rawSession struct {
	cli paho.Client
}

// dialRawSession connects as user to session and begins it. begin is false
// for a plain connect (no Tether topics), as for mosquitto and mochi.
func dialRawSession(ctx context.Context, url, user, token, session string, begin bool) (*rawSession, error) {
	connID := randomID()
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID("sim-" + user + "-" + connID).
		SetUsername(user).SetPassword(token).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(5 * time.Minute).
		SetConnectTimeout(30 * time.Second).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) {})
	if begin {
		will, _ := json.Marshal(map[string]string{"state": "offline", "conn": connID})
		opts.SetWill(wire.SessionTopic(user, session, wire.LeafPresence), string(will), 1, false)
	}
	cli := paho.NewClient(opts)
	if err := waitTok(ctx, cli.Connect()); err != nil {
		return nil, fmt.Errorf("connect %s: %w", user, err)
	}
	s := &rawSession{cli: cli}
	if !begin {
		return s, nil
	}
	replies := make(chan []byte, 1)
	res := wire.SessionTopic(user, session, wire.LeafRes)
	subs := map[string]byte{res: 1, wire.SessionTopic(user, session, wire.LeafTick): 0, wire.SessionTopic(user, session, wire.LeafNotify): 1}
	err := waitTok(ctx, cli.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) {
		if m.Topic() == res {
			select {
			case replies <- m.Payload():
			default:
			}
		}
	}))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("subscribe %s: %w", user, err)
	}
	req, _ := json.Marshal(wire.Request{ID: json.RawMessage(`"` + connID + `.1"`), Op: wire.OpBegin})
	cli.Publish(wire.SessionTopic(user, session, wire.LeafReq), 1, false, req)
	select {
	case b := <-replies:
		var r wire.Response
		if err := json.Unmarshal(b, &r); err != nil || r.Error != nil {
			s.close()
			return nil, fmt.Errorf("begin %s/%s: %s %v", user, session, b, err)
		}
	case <-ctx.Done():
		s.close()
		return nil, fmt.Errorf("begin %s/%s: %w", user, session, ctx.Err())
	}
	return s, nil
}

func (s *rawSession) close() { s.cli.Disconnect(0) }

func waitTok(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
