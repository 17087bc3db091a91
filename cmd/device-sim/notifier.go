package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/f47fa0da/tether/internal/pahoconn"
)

// The notifier side: plain paho clients (MQTT 3.1.1) publishing QoS 1 and
// waiting for PUBACK. The same code publishes to Tether's notify topic (a
// service-role user; Tether PUBACKs after the fsync) and to the plain
// topics of mosquitto and mochi in the benchmarks.

var pahoSeq atomic.Int64

// dialMQTT connects a plain paho client: clean session, no auto-reconnect
// (a lost connection fails every unacknowledged publish, never completes
// it silently), a default handler so early messages are acknowledged.
func dialMQTT(ctx context.Context, url, user, password string, onLost func(error)) (paho.Client, error) {
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(fmt.Sprintf("sim-%s-%d", user, pahoSeq.Add(1))).
		SetUsername(user).SetPassword(password).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) {})
	pahoconn.Use(opts)
	if onLost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { onLost(err) })
	}
	cli := paho.NewClient(opts)
	tok := cli.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		cli.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s as %q: %w", url, user, err)
	}
	return cli, nil
}

// benchData is what a benchmark message carries: the notifier's index and
// the publish time, so the receiver measures notify→deliver latency on
// the same clock.
type benchData struct {
	I   int    `json:"i"`
	T   int64  `json:"t"` // unix nanos at publish
	Pad string `json:"p,omitempty"`
}

// encodeData returns the JSON of one benchmark message; wrap puts it in
// Tether's notify envelope {"data": …}.
func encodeData(i int, pad string, wrap bool) []byte {
	b := strconv.AppendInt([]byte(`{"i":`), int64(i), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	if pad != "" {
		b = append(b, `,"p":"`...)
		b = append(b, pad...)
		b = append(b, '"')
	}
	b = append(b, '}')
	if wrap {
		return append(append([]byte(`{"data":`), b...), '}')
	}
	return b
}

func decodeData(b []byte) (benchData, error) {
	var d benchData
	err := json.Unmarshal(b, &d)
	return d, err
}

func padding(n int) string { return strings.Repeat("x", max(0, n)) }

// publishN publishes n messages (built by payload(i)) on topic at QoS 1,
// keeping at most inflight unacknowledged, and returns how many were
// PUBACKed. It stops at the first failure or when ctx ends.
func publishN(ctx context.Context, cli paho.Client, topic string, n, inflight int, payload func(i int) []byte) (int, error) {
	window := make([]paho.Token, 0, inflight)
	acked := 0
	wait := func(tok paho.Token) error {
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := tok.Error(); err != nil {
			return err
		}
		acked++
		return nil
	}
	for i := range n {
		if len(window) == inflight {
			if err := wait(window[0]); err != nil {
				return acked, err
			}
			window = window[1:]
		}
		window = append(window, cli.Publish(topic, 1, false, payload(i)))
	}
	for _, tok := range window {
		if err := wait(tok); err != nil {
			return acked, err
		}
	}
	return acked, nil
}
