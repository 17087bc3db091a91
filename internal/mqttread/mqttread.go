// Package mqttread reads MQTT packets off a stream with mochi's codec, for
// the minimal clients of load generators and tests (mochi decodes packets
// only inside its server).
package mqttread

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Packet reads one packet of the kinds a client receives (CONNACK, SUBACK,
// PUBLISH, PUBACK, DISCONNECT) for protocol version (4: 3.1.1, 5: MQTT 5).
// Other kinds are returned with their fixed header only.
func Packet(r *bufio.Reader, version byte) (packets.Packet, error) {
	hb, err := r.ReadByte()
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{ProtocolVersion: version}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return pk, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		if mul *= 128; i == 3 {
			return pk, errors.New("mqttread: malformed remaining length")
		}
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	if err != nil {
		return pk, fmt.Errorf("mqttread: %s: %w", packets.PacketNames[pk.FixedHeader.Type], err)
	}
	return pk, nil
}
