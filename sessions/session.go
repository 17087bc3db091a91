// Package sessions holds logical sessions: named by the client, scoped by the
// user, with at most one current instance (identified by its nonce), a
// memento, an application phase, an optional time window, liveness and an
// append-only journal.
//
// State lives in the store; memory holds only the sessions touched since
// start-up (loaded lazily on first touch) and their timers.
package sessions

import (
	"encoding/json"
	"errors"
	"time"
)

// State is where a session is in its life.
type State string

const (
	StateNew      State = "new"      // known (e.g. notified) but never begun
	StateActive   State = "active"   // current instance attached to a live connection
	StateDetached State = "detached" // current instance, connection gone
	StateEnded    State = "ended"    // ended cleanly; no current instance
	StateExpired  State = "expired"  // past its deadline
)

// Errors returned by the registry; the broker maps each to a wire error code.
var (
	ErrStaleNonce      = errors.New("sessions: stale nonce")
	ErrBusy            = errors.New("sessions: session busy")
	ErrExpired         = errors.New("sessions: session expired")
	ErrNotFound        = errors.New("sessions: no such session")
	ErrTooLarge        = errors.New("sessions: value too large")
	ErrInvalid         = errors.New("sessions: invalid argument")
	ErrTooManySessions = errors.New("sessions: too many sessions for user")
)

// Conn identifies one MQTT connection for the life of the broker process.
// Zero means no connection.
type Conn uint64

// Session is the durable record of one session (key sess/<user>/<name>).
type Session struct {
	User string `json:"user"`
	Name string `json:"name"`
	// Version grows with every committed change of the record; sealed
	// snapshots carry it, so an older snapshot never overwrites newer state.
	Version    uint64          `json:"version"`
	State      State           `json:"state"`
	Nonce      string          `json:"nonce,omitempty"`   // current instance; empty when none
	Memento    json.RawMessage `json:"memento,omitempty"` // last committed memento of the instance line
	Phase      string          `json:"phase,omitempty"`   // application-set screen/step
	Created    time.Time       `json:"created"`
	FirstBegin time.Time       `json:"first_begin,omitzero"`
	Deadline   time.Time       `json:"deadline,omitzero"` // zero: no time window
	LastSeen   time.Time       `json:"last_seen,omitzero"`
	Since      time.Time       `json:"since,omitzero"` // when State last changed
	Instances  uint64          `json:"instances"`      // begins so far
	// LastCallSeq is the highest exactly-once call seq committed; a new
	// instance numbers its calls from LastCallSeq+1 (begin's next_seq).
	LastCallSeq uint64       `json:"last_call_seq,omitempty"`
	Policy      *Policy      `json:"policy,omitempty"`
	Journal     JournalRange `json:"journal"`
	// Ext holds state that other parts (queues, exactly-once) keep with the
	// session, by part name, committed in the same transactions.
	Ext map[string]json.RawMessage `json:"ext,omitempty"`
}

// Key is "user/name".
func (s *Session) Key() string { return s.User + "/" + s.Name }

// live reports whether the current instance counts as live (for exclusive).
func (s *Session) live() bool { return s.State == StateActive }

// remaining is the time left in the window at now (0 when past; -1 without a window).
func (s *Session) remaining(now time.Time) time.Duration {
	if s.Deadline.IsZero() {
		return -1
	}
	if d := s.Deadline.Sub(now); d > 0 {
		return d
	}
	return 0
}

// Tick is what the broker sends on sessions/U/S/tick and in reply to ping.
type Tick struct {
	RemainingMs *int64 `json:"remaining_ms,omitempty"` // absent without a time window
	State       State  `json:"state"`
	Phase       string `json:"phase,omitempty"`
	ServerTime  int64  `json:"server_time"` // Unix milliseconds
}

func (s *Session) tick(now time.Time) Tick {
	t := Tick{State: s.State, Phase: s.Phase, ServerTime: now.UnixMilli()}
	if r := s.remaining(now); r >= 0 {
		ms := r.Milliseconds()
		t.RemainingMs = &ms
	}
	return t
}

// Presence is the retained payload on sessions/U/S/presence.
type Presence struct {
	State string `json:"state"` // online | offline
	Since int64  `json:"since"` // Unix milliseconds
}

// BeginResult is the reply to begin.
type BeginResult struct {
	Nonce       string          `json:"nonce"`
	Memento     json.RawMessage `json:"memento"`
	Crashed     bool            `json:"crashed"`
	State       State           `json:"state"`
	Phase       string          `json:"phase"`
	RemainingMs *int64          `json:"remaining_ms,omitempty"`
	NextSeq     uint64          `json:"next_seq"` // the seq for this instance's first call
	// The broker's timings for this session, so clients can pace their pings.
	TickIntervalMs int64 `json:"tick_interval_ms"`
	LivenessMs     int64 `json:"liveness_ms"`
	// Superseded is the instance this begin replaced while another
	// connection held it (zero if none), so the broker can tell that
	// connection at once; it is not part of the reply.
	Superseded Superseded `json:"-"`
}

// Superseded names an instance another begin replaced, and its connection.
type Superseded struct {
	Nonce string
	Conn  Conn
}
