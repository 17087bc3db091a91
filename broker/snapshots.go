package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/snapshot"
	"github.com/f47fa0da/tether/wire"
)

// snapshots seals a session's durable state for its device after every
// request that changed it, and restores sessions from blobs at begin.
type snapshots struct {
	sealer   *snapshot.Sealer
	registry *sessions.Registry
	store    *persistence.Store
}

// sealed is what a snapshot of a session carries, as of one moment.
type sealed struct {
	version uint64
	state   snapshot.State
	key     []byte // state's JSON: equal keys mean equal blobs but for the version
}

// sealed reads user/name's sealed state now: the zero sealed if the
// session is unknown (or on error, so a request that succeeds sends one).
func (s *snapshots) sealed(user, name string) (sealed, error) {
	rec, err := s.registry.Get(user, name)
	if err != nil {
		return sealed{}, err
	}
	st := snapshot.State{Nonce: rec.Nonce, Memento: rec.Memento, Phase: rec.Phase, FirstBegin: rec.FirstBegin,
		Deadline: rec.Deadline, LastCallSeq: rec.LastCallSeq}
	if rec.Policy != nil {
		if st.Policy, err = json.Marshal(rec.Policy); err != nil {
			return sealed{}, err
		}
	}
	if err := s.store.View(func(tx persistence.Txn) error {
		m, err := queues.GetMeta(tx, user, name)
		st.Acked, st.NextNotify = m.Acked, m.NextSeq
		return err
	}); err != nil {
		return sealed{}, err
	}
	key, err := json.Marshal(st)
	return sealed{version: rec.Version, state: st, key: key}, err
}

// sendIfChanged sends cl a snapshot of user/name if its sealed state
// differs from before. The record version is no test of that: it also
// grows for what a blob does not carry (a ping's cursor, presence, a
// refused begin's journal entry).
func (s *snapshots) sendIfChanged(cl *mqtt.Client, user, name string, before sealed) error {
	now, err := s.sealed(user, name)
	if err != nil || bytes.Equal(now.key, before.key) {
		return err
	}
	return s.send(cl, user, name, now)
}

// send seals cur and writes it to cl alone, on sessions/U/S/snapshot
// (QoS 0: a lost one is superseded by the next).
func (s *snapshots) send(cl *mqtt.Client, user, name string, cur sealed) error {
	blob, err := s.sealer.Seal(user, name, cur.version, cur.state)
	if err != nil {
		return err
	}
	payload, err := json.Marshal(map[string]any{"version": cur.version, "blob": blob})
	if err != nil {
		return err
	}
	return cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   wire.SessionTopic(user, name, wire.LeafSnapshot),
		Payload:     payload,
	})
}

// restore opens blob for user/name and, if this broker knows the session
// only at an older version (or not at all), restores it. A blob this
// broker cannot trust is refused with a clear error; one older than what
// it holds is ignored.
func (s *snapshots) restore(user, name, blob string) (bool, error) {
	if s.sealer == nil {
		return false, wire.Errorf(wire.CodeBadRequest, "this broker has no snapshot keys: it cannot restore sessions")
	}
	snap, err := s.sealer.Open(blob, user, name)
	if err != nil {
		code := wire.CodeBadRequest
		if errors.Is(err, snapshot.ErrTooLarge) {
			code = wire.CodeTooLarge
		}
		return false, wire.Errorf(code, "restore refused: %v", err)
	}
	st := sessions.Restored{Version: snap.Version, Nonce: snap.State.Nonce, Memento: snap.State.Memento, Phase: snap.State.Phase,
		FirstBegin: snap.State.FirstBegin, Deadline: snap.State.Deadline, LastCallSeq: snap.State.LastCallSeq}
	if len(snap.State.Policy) > 0 {
		var p sessions.Policy
		err := json.Unmarshal(snap.State.Policy, &p)
		if err == nil {
			err = p.Validate()
		}
		if err != nil {
			return false, wire.Errorf(wire.CodeBadRequest, "restore refused: snapshot policy: %v", err)
		}
		st.Policy = &p
	}
	ok, err := s.registry.Restore(user, name, st, func(tx persistence.Txn) error {
		return queues.Restore(tx, user, name, snap.State.NextNotify, snap.State.Acked)
	})
	if err != nil {
		return false, fmt.Errorf("restore %s/%s: %w", user, name, err)
	}
	return ok, nil
}
