package sessions

import (
	"context"
	"time"
)

// attach makes conn the connection of e's current instance.
func (r *Registry) attach(e *entry, conn Conn) {
	if e.conn == conn {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unattachLocked(e)
	if conn == 0 {
		return
	}
	e.conn = conn
	if r.byConn[conn] == nil {
		r.byConn[conn] = map[*entry]bool{}
	}
	r.byConn[conn][e] = true
}

func (r *Registry) unattach(e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unattachLocked(e)
}

func (r *Registry) unattachLocked(e *entry) {
	if set := r.byConn[e.conn]; set != nil {
		delete(set, e)
		if len(set) == 0 {
			delete(r.byConn, e.conn)
		}
	}
	e.conn = 0
}

// reattach moves a current instance that came back on a new connection
// (after a reconnect) to conn, and marks it online again if it was detached.
func (r *Registry) reattach(e *entry, conn Conn, now time.Time) error {
	if e.s.State == StateActive && (e.conn == conn || conn < e.conn) {
		// Attached here, or a late request from an older connection (one
		// the device left for the newer, which it would be detached with).
		return nil
	}
	if e.s.State != StateActive {
		ns := e.s
		ns.State, ns.Since, ns.LastSeen = StateActive, now, now
		if err := r.commit(e, ns, Event{Kind: "presence", Detail: map[string]any{"state": "online", "reason": "resume", "conn": conn}}); err != nil {
			return err
		}
		r.out.Presence(e.s.User, e.s.Name, Presence{State: "online", Since: now.UnixMilli()})
	}
	r.attach(e, conn)
	r.startTimers(e)
	return nil
}

// detach marks e's instance detached for reason and disposes what it held
// in memory (connection, timers). The instance stays current. A session
// that expired while attached stays expired, and goes offline.
func (r *Registry) detach(e *entry, reason string, detail map[string]any) {
	now := r.now()
	held := e.conn
	r.unattach(e)
	e.stopTimers()
	ns := e.s
	switch {
	case e.s.State == StateActive:
		ns.State, ns.Since = StateDetached, now
	case e.s.State == StateExpired && held != 0:
		// Its presence still says online: expiry leaves the device attached.
	default:
		return
	}
	d := map[string]any{"state": "offline", "reason": reason, "conn": held}
	for k, v := range detail {
		d[k] = v
	}
	if err := r.commit(e, ns, Event{Kind: "presence", Detail: d}); err != nil {
		r.log.Error("detach session", "session", e.s.Key(), "error", err)
		return
	}
	r.out.Presence(e.s.User, e.s.Name, Presence{State: "offline", Since: now.UnixMilli()})
}

// Will handles a last will published by conn for user/name. It detaches the
// session only if conn is the connection its current instance is attached
// to; a will from an older connection (after a takeover or a fast
// reconnect) is journaled and ignored. It reports whether it detached.
func (r *Registry) Will(user, name string, conn Conn, willConn string) bool {
	detached := false
	_ = r.with(user, name, func(e *entry) error {
		if e.s.State == StateNew {
			return nil
		}
		if e.conn != conn || (e.s.State != StateActive && e.s.State != StateExpired) {
			_ = r.commit(e, e.s, Event{Kind: "will_ignored", Detail: map[string]any{"conn": conn, "will_conn": willConn, "current_conn": e.conn}})
			return nil
		}
		r.detach(e, "will", map[string]any{"will_conn": willConn})
		detached = true
		return nil
	})
	return detached
}

// Disconnected detaches every session still attached to conn, which has
// closed (cleanly or not).
func (r *Registry) Disconnected(conn Conn) {
	r.mu.Lock()
	var held []*entry
	for e := range r.byConn[conn] {
		held = append(held, e)
	}
	r.mu.Unlock()
	for _, e := range held {
		e.mu.Lock()
		if e.conn == conn {
			r.detach(e, "disconnect", nil)
		}
		e.mu.Unlock()
	}
}

func (e *entry) stopTimers() {
	if e.ticker != nil {
		e.ticker.Stop()
		e.ticker = nil
	}
	if e.deadline != nil {
		e.deadline.Stop()
		e.deadline = nil
	}
}

// startTimers sends a tick now and every tick interval while e stays
// attached, and arms the deadline.
func (r *Registry) startTimers(e *entry) {
	e.stopTimers()
	now := r.now()
	r.out.Tick(e.s.User, e.s.Name, e.s.tick(now))
	tick := func() {
		e.mu.Lock()
		if e.ticker == nil || e.conn == 0 || e.s.State != StateActive {
			e.mu.Unlock()
			return
		}
		e.ticker.Reset(r.cfg.TickInterval)
		d := e.durable
		e.mu.Unlock()
		// A tick tells only what is durable: the phase of a call whose
		// commit is still waiting for its sync round is not. Meanwhile the
		// session may have changed (expired, detached): the tick is built
		// after the wait, and skipped if anything was committed since.
		if d.Wait() != nil {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.ticker != nil && e.conn != 0 && e.s.State == StateActive && e.durable == d {
			r.out.Tick(e.s.User, e.s.Name, e.s.tick(r.now()))
		}
	}
	e.ticker = time.AfterFunc(r.cfg.TickInterval, tick)
	if !e.s.Deadline.IsZero() {
		e.deadline = time.AfterFunc(e.s.Deadline.Sub(now), func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.deadline != nil {
				_ = r.expireIfDue(e, r.now())
			}
		})
	}
}

func (r *Registry) sweepLoop(ctx context.Context) {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Sweep()
		}
	}
}

// Sweep detaches active sessions silent beyond their policy's liveness and
// evicts from memory the unattached sessions untouched for IdleEvict. It
// runs every SweepInterval; tests may call it directly.
func (r *Registry) Sweep() {
	r.mu.Lock()
	entries := make([]*entry, 0, len(r.live))
	for _, e := range r.live {
		entries = append(entries, e)
	}
	r.mu.Unlock()
	now := r.now()
	for _, e := range entries {
		e.mu.Lock()
		pol := policyFor(&e.s, r.cfg.Rules, r.cfg.DefaultPolicy)
		if e.s.State == StateActive && now.Sub(e.s.LastSeen) > pol.Liveness {
			r.detach(e, "sweep", map[string]any{"silent_ms": now.Sub(e.s.LastSeen).Milliseconds()})
		}
		if e.conn == 0 && now.Sub(e.touched) > r.cfg.IdleEvict {
			e.stopTimers()
			e.evicted = true
			r.mu.Lock()
			delete(r.live, e.s.Key())
			r.mu.Unlock()
		}
		e.mu.Unlock()
	}
}

// Loaded is how many sessions are in memory now.
func (r *Registry) Loaded() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}
