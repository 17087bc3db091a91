package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/wire"
)

// mqttState keeps the plain-MQTT state that must outlive a restart in the
// broker's one store: retained messages, and the client records and
// subscriptions of clients that asked for a persistent session
// (clean=false, or an MQTT 5 session expiry). Messages in flight to such
// clients are not kept: Tether's durable path is the session queue.
//
// Key layout (docs/storage.md):
//
//	mqtt/client/<client id>              storage.Client JSON
//	mqtt/sub/<client id>\x00<filter>     storage.Subscription JSON
//	mqtt/retained/<topic>                storage.Message JSON
type mqttState struct {
	mqtt.HookBase
	store *persistence.Store
	log   *slog.Logger
}

var (
	mqttClientKeys   = persistence.Prefix("mqtt", "client")
	mqttSubKeys      = persistence.Prefix("mqtt", "sub")
	mqttRetainedKeys = persistence.Prefix("mqtt", "retained")
)

func join(prefix []byte, parts ...string) []byte {
	k := append([]byte{}, prefix...)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0) // MQTT strings never hold U+0000 [MQTT-1.5.4-2]
		}
		k = append(k, p...)
	}
	return k
}

func (h *mqttState) ID() string { return "tether-mqtt-state" }

func (h *mqttState) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredRetainedMessages,
	}, []byte{b})
}

// persistent reports whether the client's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *mqttState) update(what string, fn func(persistence.Txn) error) {
	if err := h.store.Update(fn); err != nil {
		h.log.Error("persist mqtt state", "what", what, "error", err)
	}
}

func (h *mqttState) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if !persistent(cl) {
		// A clean start discards whatever an earlier session of this id left.
		h.deleteClient(cl.ID)
		return
	}
	rec := storage.Client{
		ID: cl.ID, T: storage.ClientKey, Remote: cl.Net.Remote, Listener: cl.Net.Listener,
		Username: cl.Properties.Username, Clean: cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     cl.Properties.Props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: cl.Properties.Props.SessionExpiryIntervalFlag,
			ReceiveMaximum:            cl.Properties.Props.ReceiveMaximum,
			TopicAliasMaximum:         cl.Properties.Props.TopicAliasMaximum,
			MaximumPacketSize:         cl.Properties.Props.MaximumPacketSize,
		},
	}
	v, err := json.Marshal(rec)
	if err != nil {
		h.log.Error("encode mqtt client", "client", cl.ID, "error", err)
		return
	}
	h.update("client", func(tx persistence.Txn) error { return tx.Set(join(mqttClientKeys, cl.ID), v) })
}

func (h *mqttState) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && !errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		h.deleteClient(cl.ID)
	}
}

func (h *mqttState) OnClientExpired(cl *mqtt.Client) { h.deleteClient(cl.ID) }

func (h *mqttState) deleteClient(id string) {
	subs := join(mqttSubKeys, id, "")
	h.update("delete client", func(tx persistence.Txn) error {
		// Most clients are clean and never stored anything: then this
		// writes nothing and costs no sync round on the connect path.
		keys := [][]byte{join(mqttClientKeys, id)}
		if _, err := tx.Get(keys[0]); errors.Is(err, persistence.ErrNotFound) {
			keys = keys[:0]
		} else if err != nil {
			return err
		}
		err := tx.Scan(subs, nil, func(k, _ []byte) (bool, error) {
			keys = append(keys, append([]byte{}, k...))
			return true, nil
		})
		for _, k := range keys {
			if err == nil {
				err = tx.Delete(k)
			}
		}
		return err
	})
}

func (h *mqttState) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistent(cl) {
		return
	}
	h.update("subscription", func(tx persistence.Txn) error {
		for i, f := range pk.Filters {
			if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
				continue // refused filters are not subscriptions
			}
			v, err := json.Marshal(storage.Subscription{
				ID: f.Filter, T: storage.SubscriptionKey, Client: cl.ID, Qos: codes[i], Filter: f.Filter,
				Identifier: f.Identifier, NoLocal: f.NoLocal, RetainHandling: f.RetainHandling,
				RetainAsPublished: f.RetainAsPublished,
			})
			if err != nil {
				return err
			}
			if err := tx.Set(join(mqttSubKeys, cl.ID, f.Filter), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (h *mqttState) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) {
		return
	}
	h.update("unsubscribe", func(tx persistence.Txn) error {
		for _, f := range pk.Filters {
			if err := tx.Delete(join(mqttSubKeys, cl.ID, f.Filter)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (h *mqttState) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if _, _, leaf, ok := wire.ParseSessionTopic(pk.TopicName); ok && leaf == wire.LeafPresence {
		return // presence is rebuilt from the sessions when first touched, not stored here
	}
	key := join(mqttRetainedKeys, pk.TopicName)
	if r == -1 { // an empty retained payload clears the topic
		h.update("clear retained", func(tx persistence.Txn) error { return tx.Delete(key) })
		return
	}
	v, err := json.Marshal(storage.Message{
		ID: pk.TopicName, T: storage.RetainedKey, FixedHeader: pk.FixedHeader, TopicName: pk.TopicName,
		Payload: pk.Payload, Created: pk.Created, Client: cl.ID, Origin: pk.Origin,
		Properties: storage.MessageProperties{
			PayloadFormat: pk.Properties.PayloadFormat, MessageExpiryInterval: pk.Properties.MessageExpiryInterval,
			ContentType: pk.Properties.ContentType, ResponseTopic: pk.Properties.ResponseTopic,
			CorrelationData: pk.Properties.CorrelationData, User: pk.Properties.User,
		},
	})
	if err != nil {
		h.log.Error("encode retained", "topic", pk.TopicName, "error", err)
		return
	}
	h.update("retained", func(tx persistence.Txn) error { return tx.Set(key, v) })
}

func (h *mqttState) OnRetainedExpired(topic string) {
	h.update("expire retained", func(tx persistence.Txn) error { return tx.Delete(join(mqttRetainedKeys, topic)) })
}

func (h *mqttState) StoredClients() ([]storage.Client, error) {
	return loadAll[storage.Client](h.store, mqttClientKeys)
}

func (h *mqttState) StoredSubscriptions() ([]storage.Subscription, error) {
	return loadAll[storage.Subscription](h.store, mqttSubKeys)
}

func (h *mqttState) StoredRetainedMessages() ([]storage.Message, error) {
	return loadAll[storage.Message](h.store, mqttRetainedKeys)
}

func loadAll[T any](s *persistence.Store, prefix []byte) ([]T, error) {
	var out []T
	err := s.View(func(tx persistence.Txn) error {
		return tx.Scan(prefix, nil, func(k, v []byte) (bool, error) {
			var x T
			if err := json.Unmarshal(v, &x); err != nil {
				return false, errors.New("broker: stored mqtt state " + string(k) + ": " + err.Error())
			}
			out = append(out, x)
			return true, nil
		})
	})
	return out, err
}
