package client

import "github.com/eclipse/paho.mqtt.golang/packets"

// noStore is a paho message store that keeps nothing. paho resends what
// its store holds after every reconnect, even with a clean session; for
// Tether that would replay a begin (starting a second instance behind the
// application's back) or an old ack. The client resends what is safe to
// resend itself (onConnect), so paho must not.
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
