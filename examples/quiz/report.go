package quiz

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/sessions"
)

// Report writes the journal of user's quiz session to w, one event a line,
// then a summary rebuilt from the journal alone (as the seed's offline
// reports are). It works on a data directory whether or not a broker is
// serving it.
func Report(ctx context.Context, w io.Writer, dataDir, user string) error {
	var events []sessions.Event
	args := map[string]any{"user": user, "session": SessionName}
	if err := broker.RunAdmin(ctx, dataDir, "sessions.log", args, &events); err != nil {
		return fmt.Errorf("quiz: report %s: %w", user, err)
	}
	for _, e := range events {
		if _, err := fmt.Fprintln(w, e); err != nil {
			return err
		}
	}
	s := Summarize(events)
	_, err := fmt.Fprintf(w, "summary: user=%s phase=%s begins=%d crashed=%d busy=%d shown=%s score=%d\n",
		user, s.Phase, s.Begins, s.Crashed, s.Busy, strings.Join(s.Shown, ","), s.Score)
	return err
}

// Summary is a candidate's quiz as its journal tells it.
type Summary struct {
	Phase   Phase
	Begins  int      // instances begun
	Crashed int      // begins that found the previous instance not ended
	Busy    int      // begins refused because another device held the quiz
	Shown   []string // test questions shown, in order
	Score   int
}

// Summarize replays a quiz session's journal.
func Summarize(events []sessions.Event) Summary {
	var s Summary
	for _, e := range events {
		switch e.Kind {
		case "begin":
			s.Begins++
			if e.Detail["crashed"] == true {
				s.Crashed++
			}
		case "busy":
			s.Busy++
		case "remember":
			if ph, ok := e.Detail["phase"].(string); ok {
				s.Phase = Phase(ph)
			}
			// A phase's progress starts fresh with the remember that enters
			// it, so the last one seen in a test phase is the test's.
			var p Progress
			if raw, err := json.Marshal(e.Detail["memento"]); err == nil && json.Unmarshal(raw, &p) == nil &&
				(s.Phase == TestStarted || s.Phase == TestFinished) {
				s.Shown, s.Score = p.Asked, p.Score
			}
		}
	}
	return s
}
