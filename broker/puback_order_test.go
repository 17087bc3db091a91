package broker_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/internal/mqttread"
)

// TestPubacksInPublishOrder pipelines QoS 1 publishes of a service, without
// waiting for any ack: accepted notifies, which are acknowledged once
// durable, interleaved with publishes the broker refuses (outside the
// ACL, on a presence leaf, on an invalid session name). The PUBACKs come
// back in publish order [MQTT-4.6.0-2]: a refusal does not overtake the
// notifies still waiting for their fsync. MQTT 5 refusals carry their
// reason code and string; MQTT 3.1.1 ones are plain successes.
func TestPubacksInPublishOrder(t *testing.T) {
	refusals := []struct {
		topic string
		code  packets.Code
	}{
		{"elsewhere/x", packets.ErrNotAuthorized},                  // outside the ACL
		{"sessions/app/s/presence", packets.ErrNotAuthorized},      // broker-owned, refused by the sessions hook
		{"sessions/app/bad$name/req", packets.ErrTopicNameInvalid}, // not a session name
	}
	const publishes = 60
	tests := []struct {
		name    string
		version byte
	}{
		{"mqtt5", 5},
		{"mqtt311", 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := brokertest.Start(t, brokertest.Config(t))
			c := dialRawMQTT(t, b.Addrs().MQTT, "app", brokertest.Token(t, b, "app", auth.RoleService), tc.version)

			var (
				burst       bytes.Buffer
				wantCodes   []byte
				wantReasons []string
				notifies    int
			)
			for i := 0; i < publishes; i++ {
				topic, code := "tether/notify/alice/x", packets.CodeSuccess
				if i%4 == 3 {
					r := refusals[(i/4)%len(refusals)]
					topic, code = r.topic, r.code
				} else {
					notifies++
				}
				c.encodePublish(&burst, uint16(i+1), topic, []byte(`{"data":1}`))
				if tc.version != 5 {
					code = packets.CodeSuccess // 3.1.1 has no negative PUBACK
				}
				wantCodes = append(wantCodes, code.Code)
				if code.Code >= packets.ErrUnspecifiedError.Code {
					wantReasons = append(wantReasons, code.Reason)
				} else {
					wantReasons = append(wantReasons, "")
				}
			}
			c.write(burst.Bytes()) // one write: every publish before any ack

			var (
				gotIDs     []uint16
				gotCodes   []byte
				gotReasons []string
				wantIDs    []uint16
			)
			for i := 0; i < publishes; i++ {
				wantIDs = append(wantIDs, uint16(i+1))
				ack := c.read(packets.Puback)
				gotIDs = append(gotIDs, ack.PacketID)
				gotCodes = append(gotCodes, ack.ReasonCode)
				gotReasons = append(gotReasons, ack.Properties.ReasonString)
			}
			require.Equal(t, wantIDs, gotIDs, "PUBACKs in publish order")
			require.Equal(t, wantCodes, gotCodes)
			require.Equal(t, wantReasons, gotReasons)

			out, err := b.Outq("alice", "x", 0)
			require.NoError(t, err)
			require.Len(t, out, notifies, "every accepted notify is stored, no refused one")
		})
	}
}

// rawMQTT is a minimal MQTT client on a bare net.Conn, written with
// mochi's packet codec: it can pipeline publishes without waiting for
// their acks, and shows the acks exactly as they arrive.
type rawMQTT struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

// dialRawMQTT connects to addr as user with protocol version (4 or 5) and
// waits for a successful CONNACK.
func dialRawMQTT(t *testing.T, addr, user, token string, version byte) *rawMQTT {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	c := &rawMQTT{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: fmt.Sprintf("raw-%s-%d", user, time.Now().UnixNano()),
			Clean: true, Keepalive: 60,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(token),
		}}
	var buf bytes.Buffer
	require.NoError(t, connect.ConnectEncode(&buf))
	c.write(buf.Bytes())
	ack := c.read(packets.Connack)
	require.Zero(t, ack.ReasonCode, "CONNACK")
	return c
}

// encodePublish appends a QoS 1 PUBLISH to buf.
func (c *rawMQTT) encodePublish(buf *bytes.Buffer, id uint16, topic string, payload []byte) {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: c.version,
		PacketID: id, TopicName: topic, Payload: payload}
	require.NoError(c.t, pk.PublishEncode(buf))
}

func (c *rawMQTT) write(b []byte) {
	c.t.Helper()
	_, err := c.conn.Write(b)
	require.NoError(c.t, err)
}

// read returns the next packet, which must be of type want.
func (c *rawMQTT) read(want byte) packets.Packet {
	c.t.Helper()
	pk, err := mqttread.Packet(c.r, c.version)
	require.NoError(c.t, err)
	require.Equal(c.t, packets.PacketNames[want], packets.PacketNames[pk.FixedHeader.Type], "packet type")
	return pk
}

// TestNotifyBurstInOrder pipelines a burst of notifies larger than the
// ack queue commits ahead of its first PUBACK (several runs of up to 64
// notifies each), to two sessions in alternating blocks so that runs end
// at every block. Every PUBACK comes back in publish order, and each
// session's queue holds its notifies in publish order with seqs 1..n.
func TestNotifyBurstInOrder(t *testing.T) {
	const publishes, block = 600, 50
	b := brokertest.Start(t, brokertest.Config(t))
	c := dialRawMQTT(t, b.Addrs().MQTT, "app", brokertest.Token(t, b, "app", auth.RoleService), 5)
	var (
		burst bytes.Buffer
		want  = map[string][]string{}
	)
	for i := 0; i < publishes; i++ {
		session := []string{"x", "y"}[(i/block)%2]
		c.encodePublish(&burst, uint16(i+1), "tether/notify/alice/"+session, fmt.Appendf(nil, `{"data":%d}`, i))
		want[session] = append(want[session], fmt.Sprint(i))
	}
	c.write(burst.Bytes())
	for i := 0; i < publishes; i++ {
		ack := c.read(packets.Puback)
		require.Equal(t, uint16(i+1), ack.PacketID, "PUBACKs in publish order")
		require.Zero(t, ack.ReasonCode)
	}
	for session, data := range want {
		out, err := b.Outq("alice", session, 0)
		require.NoError(t, err)
		var seqs []uint64
		var got []string
		for _, e := range out {
			seqs = append(seqs, e.Seq)
			got = append(got, string(e.Data))
		}
		require.Equal(t, seqRange(1, uint64(len(data))), seqs, session)
		require.Equal(t, data, got, session)
	}
}
