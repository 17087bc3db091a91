package broker

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// takeoverWait bounds how long a connection taking over a client id
// waits for the connection it replaces to be cleaned up.
const takeoverWait = 3 * time.Second

// OnSessionEstablish runs when a connection is authenticated, just before
// mochi hands it the client id. If a connection with a session that ends
// with it still holds the id (a device reconnecting before its old socket
// was noticed dead), that one is disconnected first and the new one waits
// until mochi has removed it. mochi v2.7.9 races here otherwise: the old
// connection's cleanup can find itself not yet taken over, and then
// remove the client id from the client list and the topic index after the
// new connection took them, so that nothing is delivered to the new one
// (a lost reply, seen about once in a hundred reconnects in a test).
func (h *access) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	old, ok := h.srv.Clients.Get(cl.ID)
	if !ok || old == cl || persistent(old) {
		return // nothing to take over, or mochi inherits it, without the race
	}
	_ = h.srv.DisconnectClient(old, packets.ErrSessionTakenOver)
	for deadline := time.Now().Add(takeoverWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cur, ok := h.srv.Clients.Get(cl.ID); !ok || cur != old {
			return
		}
	}
	h.log.Warn("takeover: the connection replaced is still finishing; going on", "client", cl.ID, "wait", takeoverWait)
}
