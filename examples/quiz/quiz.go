// Package quiz is the online quiz server of seeds/000 built on Tether: one
// exclusive session per candidate, a hard time window from the first start,
// ticks with the time left, a phase that brings a restarted client back to
// the right screen, a memento that keeps questions from ever being shown
// twice, and a report read from the session's journal.
//
// The broker is the server: the quiz adds only a session rule (Rule) and
// the candidate's program (Candidate), which keeps no local state.
package quiz

import (
	"time"

	"github.com/f47fa0da/tether/sessions"
)

// SessionName is the session every candidate takes the quiz in.
const SessionName = "quiz"

// Phase is the candidate's screen, stored with the session and returned by
// begin, so a restarted client resumes where it was.
type Phase string

// The phases, in the order a candidate goes through them.
const (
	DemoNotTaken Phase = "demo_not_taken" // before anything: the demo's instructions
	DemoStarted  Phase = "demo_started"   // answering demo questions (not scored)
	TestNotTaken Phase = "test_not_taken" // demo done: the test's instructions
	TestStarted  Phase = "test_started"   // answering test questions
	TestFinished Phase = "test_finished"  // done: the score is final
)

// Progress is the memento: what the candidate has committed in the current
// phase. A question joins Asked (and becomes Current) in a commit made
// before it is shown, so no crash can show it twice; Current is cleared
// with the commit of its answer. A Current found at begin was shown but not
// answered: it is forfeited.
type Progress struct {
	Asked   []string `json:"asked,omitempty"`
	Current string   `json:"current,omitempty"`
	Score   int      `json:"score"`
}

// DefaultWindow is how long a candidate has from the first start.
const DefaultWindow = 60 * time.Minute

// Rule is the broker-side policy of the quiz session: exclusive (a second
// device cannot begin while the first is live), a time window from the
// first begin, and liveness: silence after which a vanished device no
// longer holds the session. The device never chooses it.
func Rule(window, liveness time.Duration) sessions.Rule {
	return sessions.Rule{Pattern: SessionName, Policy: sessions.Policy{
		Mode: sessions.Exclusive, Window: window, Liveness: liveness,
	}}
}
