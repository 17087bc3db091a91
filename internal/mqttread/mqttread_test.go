package mqttread

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func TestPacketReadsWhatMochiWrites(t *testing.T) {
	var buf bytes.Buffer
	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", PacketID: 7, Payload: []byte("hello")}
	if err := pub.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7, ProtocolVersion: 5, ReasonCode: 0x87}
	if err := ack.PubackEncode(&buf); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&buf)
	got, err := Packet(r, 4)
	if err != nil || got.TopicName != "a/b" || got.PacketID != 7 || string(got.Payload) != "hello" {
		t.Fatalf("publish: %+v, %v", got, err)
	}
	got, err = Packet(r, 5)
	if err != nil || got.FixedHeader.Type != packets.Puback || got.PacketID != 7 || got.ReasonCode != 0x87 {
		t.Fatalf("puback: %+v, %v", got, err)
	}
	if _, err := Packet(r, 4); err == nil {
		t.Fatal("read past the end: want an error")
	}
}

func TestPacketRefusesAMalformedLength(t *testing.T) {
	r := bufio.NewReader(bytes.NewReader([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}))
	if _, err := Packet(r, 4); err == nil {
		t.Fatal("a five-byte remaining length: want an error")
	}
}

// FuzzPacket: any bytes give a packet or an error, never a panic.
func FuzzPacket(f *testing.F) {
	f.Add([]byte{0x20, 0x02, 0x00, 0x00})                               // CONNACK
	f.Add([]byte{0x30, 0x08, 0x00, 0x03, 'a', '/', 'b', 'h', 'i', '!'}) // PUBLISH
	f.Add([]byte{0x40, 0x04, 0x00, 0x07, 0x87, 0x00})                   // PUBACK v5
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []byte{4, 5} {
			r := bufio.NewReader(bytes.NewReader(b))
			for range 8 {
				if _, err := Packet(r, v); err != nil {
					break
				}
			}
		}
	})
}
