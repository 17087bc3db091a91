package sessions

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Begin starts a new instance of user/name for the device on conn: a fresh
// nonce becomes current. It returns the last memento and phase, and
// whether the previous instance ended without `end` (crashed). Under the
// exclusive policy it fails with ErrBusy while another connection's
// instance is live; after the deadline it fails with ErrExpired.
func (r *Registry) Begin(user, name string, conn Conn) (BeginResult, error) {
	var res BeginResult
	err := r.with(user, name, func(e *entry) error {
		now := r.now()
		if err := r.expireIfDue(e, now); err != nil {
			return err
		}
		pol := policyFor(&e.s, r.cfg.Rules, r.cfg.DefaultPolicy)
		if pol.Mode == Exclusive && e.s.live() && e.conn != 0 && e.conn != conn {
			_ = r.commit(e, e.s, Event{Kind: "busy", Detail: map[string]any{"conn": conn, "holder": e.conn}})
			return ErrBusy
		}
		nonce, err := newNonce()
		if err != nil {
			return err
		}
		ns := e.s
		crashed := ns.Nonce != ""
		var superseded Superseded
		if crashed && e.conn != 0 && e.conn != conn {
			superseded = Superseded{Nonce: ns.Nonce, Conn: e.conn}
		}
		wasOnline := ns.State == StateActive
		ns.Nonce, ns.State, ns.LastSeen, ns.Since = nonce, StateActive, now, now
		ns.Instances++
		if ns.FirstBegin.IsZero() {
			ns.FirstBegin = now
			if pol.Window > 0 {
				ns.Deadline = now.Add(pol.Window)
			}
		}
		events := []Event{{Kind: "begin", Detail: map[string]any{
			"nonce": short(nonce), "crashed": crashed, "conn": conn, "instance": ns.Instances, "policy": string(pol.Mode)}}}
		if !wasOnline {
			events = append(events, Event{Kind: "presence", Detail: map[string]any{"state": "online", "reason": "begin", "conn": conn}})
		}
		if err := r.commit(e, ns, events...); err != nil {
			return err
		}
		r.attach(e, conn)
		r.out.Presence(user, name, Presence{State: "online", Since: now.UnixMilli()})
		r.startTimers(e)
		res = BeginResult{Nonce: nonce, Memento: e.s.Memento, Crashed: crashed, State: e.s.State, Phase: e.s.Phase,
			RemainingMs: e.s.tick(now).RemainingMs, NextSeq: e.s.LastCallSeq + 1,
			TickIntervalMs: r.cfg.TickInterval.Milliseconds(), LivenessMs: pol.Liveness.Milliseconds(), Superseded: superseded}
		if res.Memento == nil {
			res.Memento = json.RawMessage("null")
		}
		return nil
	})
	return res, err
}

// Ping refreshes the liveness of the current instance, re-attaches it to
// conn if the device came back on a new connection, journals cursor (what
// the user is looking at) when given, and returns a tick.
func (r *Registry) Ping(user, name string, conn Conn, nonce string, cursor json.RawMessage) (Tick, error) {
	var t Tick
	if len(cursor) > r.cfg.MaxCursor {
		return t, fmt.Errorf("%w: cursor is %d bytes, limit %d", ErrTooLarge, len(cursor), r.cfg.MaxCursor)
	}
	err := r.with(user, name, func(e *entry) error {
		now := r.now()
		if err := r.current(e, nonce, now); err != nil {
			return err
		}
		if err := r.reattach(e, conn, now); err != nil {
			return err
		}
		e.s.LastSeen = now
		if len(cursor) > 0 && string(cursor) != "null" {
			if err := r.commit(e, e.s, Event{Kind: "ping", Detail: map[string]any{"cursor": json.RawMessage(cursor)}}); err != nil {
				return err
			}
		}
		t = e.s.tick(now)
		return nil
	})
	return t, err
}

// Remember stores memento (and phase, when not nil) under the current
// nonce only.
func (r *Registry) Remember(user, name string, conn Conn, nonce string, memento json.RawMessage, phase *string) error {
	if len(memento) > r.cfg.MaxMemento {
		return fmt.Errorf("%w: memento is %d bytes, limit %d", ErrTooLarge, len(memento), r.cfg.MaxMemento)
	}
	if phase != nil && len(*phase) > r.cfg.MaxPhase {
		return fmt.Errorf("%w: phase is %d bytes, limit %d", ErrTooLarge, len(*phase), r.cfg.MaxPhase)
	}
	return r.with(user, name, func(e *entry) error {
		now := r.now()
		if err := r.current(e, nonce, now); err != nil {
			return err
		}
		if err := r.reattach(e, conn, now); err != nil {
			return err
		}
		ns := e.s
		ns.Memento, ns.LastSeen = memento, now
		detail := map[string]any{"memento": json.RawMessage(memento)}
		if phase != nil {
			ns.Phase = *phase
			detail["phase"] = *phase
		}
		return r.commit(e, ns, Event{Kind: "remember", Detail: detail})
	})
}

// End closes the current instance cleanly: nonce and memento are cleared.
// Ending a session that has no current instance is harmless.
func (r *Registry) End(user, name string, conn Conn, nonce string) error {
	return r.with(user, name, func(e *entry) error {
		if e.s.Nonce == "" {
			return nil
		}
		if nonce != e.s.Nonce {
			return ErrStaleNonce
		}
		now := r.now()
		ns := e.s
		ns.Nonce, ns.Memento, ns.LastSeen, ns.Since = "", nil, now, now
		if ns.State != StateExpired {
			ns.State = StateEnded
		}
		if err := r.commit(e, ns,
			Event{Kind: "end", Detail: map[string]any{"nonce": short(nonce), "conn": conn}},
			Event{Kind: "presence", Detail: map[string]any{"state": "offline", "reason": "end"}}); err != nil {
			return err
		}
		r.unattach(e)
		e.stopTimers()
		r.out.Presence(e.s.User, e.s.Name, Presence{State: "offline", Since: now.UnixMilli()})
		return nil
	})
}

// SetPhase sets the application phase of user/name (the Go API's way; a
// device sets it with remember).
func (r *Registry) SetPhase(user, name, phase string) error {
	if len(phase) > r.cfg.MaxPhase {
		return fmt.Errorf("%w: phase is %d bytes, limit %d", ErrTooLarge, len(phase), r.cfg.MaxPhase)
	}
	return r.with(user, name, func(e *entry) error {
		ns := e.s
		ns.Phase = phase
		return r.commit(e, ns, Event{Kind: "phase", Detail: map[string]any{"phase": phase}})
	})
}

// SetPolicy overrides the configured policy of user/name; nil returns it
// to the configured rules.
func (r *Registry) SetPolicy(user, name string, p *Policy) error {
	if p != nil {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	return r.with(user, name, func(e *entry) error {
		ns := e.s
		ns.Policy = p
		detail := map[string]any{"policy": "configured"}
		if p != nil {
			detail = map[string]any{"mode": string(p.Mode), "window": p.Window.String(), "liveness": p.Liveness.String()}
			if ns.FirstBegin.IsZero() || p.Window <= 0 {
				ns.Deadline = time.Time{}
			} else {
				ns.Deadline = ns.FirstBegin.Add(p.Window)
			}
		}
		return r.commit(e, ns, Event{Kind: "policy", Detail: detail})
	})
}

// current checks nonce is the current instance's and the window is open.
func (r *Registry) current(e *entry, nonce string, now time.Time) error {
	if err := r.expireIfDue(e, now); err != nil {
		return err
	}
	if nonce == "" || nonce != e.s.Nonce {
		return ErrStaleNonce
	}
	return nil
}

// expireIfDue moves a session past its deadline to expired (once,
// journaled, with a final tick) and returns ErrExpired for it.
func (r *Registry) expireIfDue(e *entry, now time.Time) error {
	if e.s.State == StateExpired {
		return ErrExpired
	}
	if e.s.Deadline.IsZero() || now.Before(e.s.Deadline) {
		return nil
	}
	ns := e.s
	ns.State, ns.Since = StateExpired, now
	if err := r.commit(e, ns, Event{Kind: "expired", Detail: map[string]any{"deadline": ns.Deadline.UTC().Format(time.RFC3339Nano)}}); err != nil {
		return err
	}
	if e.conn != 0 {
		r.out.Tick(ns.User, ns.Name, e.s.tick(now))
	}
	e.stopTimers()
	return ErrExpired
}

// Restored is session state brought from elsewhere (a sealed snapshot).
type Restored struct {
	Version     uint64
	Nonce       string
	Memento     json.RawMessage
	Phase       string
	FirstBegin  time.Time
	Deadline    time.Time
	LastCallSeq uint64
	Policy      *Policy
}

// Restore replaces user/name's state with st when this broker has no
// record of the session or an older version of it, and reports whether it
// did; a record at st.Version or newer is kept as it is. fn, if not nil,
// runs in the same transaction (other parts' restored state).
//
// The blob is the newer state, so it wins whatever this broker's record
// says: the state follows from it, not from the local record. With a
// current instance the session is detached (its device is about to come
// back), without one it is ended (or new, if it was never begun); a local
// ended or expired record does not stay so. A deadline that has passed
// expires the session again at its next touch, as any other would. The
// one exception is an instance live here under the exclusive policy: a
// blob does not replace it (the begin that follows is refused, as any
// other begin would be while it is live).
func (r *Registry) Restore(user, name string, st Restored, fn func(tx persistence.Txn) error) (bool, error) {
	restored := false
	err := r.with(user, name, func(e *entry) error {
		if e.s.Version >= st.Version {
			return nil
		}
		if e.s.live() && e.conn != 0 && policyFor(&e.s, r.cfg.Rules, r.cfg.DefaultPolicy).Mode == Exclusive {
			return nil
		}
		now := r.now()
		err := r.commitFn(e, unstored(e), func(tx persistence.Txn, s *Session) (Change, error) {
			state := StateEnded
			switch {
			case st.Nonce != "":
				state = StateDetached
			case st.FirstBegin.IsZero():
				state = StateNew
			}
			from := s.State
			s.Nonce, s.Memento, s.Phase = st.Nonce, st.Memento, st.Phase
			s.FirstBegin, s.Deadline, s.LastCallSeq, s.Policy = st.FirstBegin, st.Deadline, st.LastCallSeq, st.Policy
			if s.State != state {
				s.State, s.Since = state, now
			}
			if fn != nil {
				if err := fn(tx); err != nil {
					return Change{}, err
				}
			}
			if s.Version == 0 { // new here: held to the per-user cap like any other (write admits only version 0)
				if err := r.admit(tx, user, name); err != nil {
					return Change{}, err
				}
			}
			// write adds one: the restored record continues from the snapshot's version.
			s.Version = st.Version
			return Change{Changed: true, Events: []Event{{Kind: "restored", Detail: map[string]any{
				"version": st.Version, "from": string(from), "state": string(state)}}}}, nil
		})
		if err != nil {
			return err
		}
		restored = true
		// What a local instance held (connection, timers) is gone with it.
		if e.conn != 0 {
			r.unattach(e)
			r.out.Presence(user, name, Presence{State: "offline", Since: now.UnixMilli()})
		}
		e.stopTimers()
		return nil
	})
	return restored, err
}
