package pahoconn_test

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/internal/pahoconn"
)

// Packets of every size around the read buffer's, pipelined QoS 1 in bursts,
// arrive whole and in order through buffered connections at both ends.
func TestBufferedClientsRoundTrip(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.AllowAnonymous = true
	b := brokertest.Start(t, cfg)
	url := "tcp://" + b.Addrs().MQTT

	subOpts := brokertest.ClientOptions(url, "", "").SetOrderMatters(true) // handlers in arrival order
	pahoconn.Use(subOpts)
	if subOpts.CustomOpenConnectionFn == nil {
		t.Fatal("Use left a tcp:// broker with paho's own connection code")
	}
	got := brokertest.NewMessages(20)
	sub := brokertest.MustConnect(t, subOpts)
	if err := brokertest.Wait(sub.Subscribe("plain/buffered", 1, got.Handler)); err != nil {
		t.Fatal(err)
	}

	pubOpts := brokertest.ClientOptions(url, "", "")
	pahoconn.Use(pubOpts)
	pub := brokertest.MustConnect(t, pubOpts)
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*83) } // 1 B .. 16 KiB
	// Bursts of 20: mochi drops a publish that finds a subscriber's write
	// queue (128 packets by default) full, and plain topics have no window.
	for first := 0; first < 200; first += 20 {
		var toks []paho.Token
		for i := first; i < first+20; i++ {
			toks = append(toks, pub.Publish("plain/buffered", 1, false, payload(i)))
		}
		for i, tok := range toks {
			if err := brokertest.Wait(tok); err != nil {
				t.Fatalf("publish %d: %v", first+i, err)
			}
		}
		for i := first; i < first+20; i++ {
			m := got.Next(t, 5*time.Second)
			if want := payload(i); !bytes.Equal(m.Payload(), want) {
				t.Fatalf("message %d: %d bytes starting %q, want %d bytes of %q", i, len(m.Payload()), m.Payload()[:1], len(want), want[:1])
			}
		}
	}
}

func TestUseLeavesOtherSchemes(t *testing.T) {
	for _, url := range []string{"ws://127.0.0.1:8083/mqtt", "ssl://127.0.0.1:8883", "unix:///tmp/mqtt.sock"} {
		opts := paho.NewClientOptions().AddBroker(url)
		pahoconn.Use(opts)
		if opts.CustomOpenConnectionFn != nil {
			t.Errorf("%s: Use replaced paho's connection code", url)
		}
	}
	mixed := paho.NewClientOptions().AddBroker("tcp://127.0.0.1:1883").AddBroker("ws://127.0.0.1:8083/mqtt")
	pahoconn.Use(mixed)
	if mixed.CustomOpenConnectionFn != nil {
		t.Error("tcp:// and ws:// brokers: Use replaced paho's connection code for both")
	}
}

func TestOpenReportsDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr)
	if _, err := pahoconn.Open(opts.Servers[0], *opts); err == nil {
		t.Fatalf("Open %s with nothing listening: no error", addr)
	} else if !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open error %q does not name %s", err, addr)
	}
}
