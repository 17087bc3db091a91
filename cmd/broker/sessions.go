package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

const sessionsUsage = `Usage:
  broker sessions list [--user U] [--json]
  broker sessions show U/S [--json]     (the session and its queue)
  broker sessions log U/S [--after SEQ] [--limit N] [--json]
Each takes --data-dir (default $TETHER_DATA_DIR or ./data); flags may come
before or after U/S.
`

// sessionNotFound is the error for a session the registry does not have.
// It matches sessions.ErrNotFound with errors.Is, also when the registry's
// error came back as text from a running broker's admin endpoint.
type sessionNotFound struct{ key string }

func (e sessionNotFound) Error() string { return "no such session " + e.key }

func (e sessionNotFound) Is(target error) bool { return target == sessions.ErrNotFound }

func sessionsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("sessions: missing subcommand\n%s", sessionsUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("sessions "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), sessionsUsage)
		fs.PrintDefaults()
	}
	dir := dataDirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	switch sub {
	case "list":
		user := fs.String("user", "", "only this user's sessions")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 0 {
			return usagef("sessions list: unexpected argument %q (to pick a user, use --user)", pos[0])
		}
		if *user != "" && !wire.ValidName(*user) {
			return usagef("sessions list: --user: %v", wire.CheckName("user", *user))
		}
		var list []sessions.Session
		if err := broker.RunAdmin(ctx, *dir, "sessions.list", map[string]string{"user": *user}, &list); err != nil {
			return err
		}
		if list == nil {
			list = []sessions.Session{} // an empty JSON list, not null
		}
		if *asJSON {
			return writeJSON(stdout, list)
		}
		return writeSessionTable(stdout, list)
	case "show":
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		user, name, err := sessionArg("sessions show", pos)
		if err != nil {
			return err
		}
		var d broker.SessionDetail
		if err := broker.RunAdmin(ctx, *dir, "sessions.show", map[string]string{"user": user, "session": name}, &d); err != nil {
			return notFound(err, user, name)
		}
		if *asJSON {
			return writeJSON(stdout, d)
		}
		return writeRows(stdout, append(sessionRows(d.Session, time.Now()), queueRows(d)...))
	case "log":
		after := fs.Uint64("after", 0, "only events after this seq (0: from the oldest kept)")
		limit := fs.Int("limit", 0, "at most this many events (0: all)")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		user, name, err := sessionArg("sessions log", pos)
		if err != nil {
			return err
		}
		if *limit < 0 {
			return usagef("sessions log: --limit must not be negative")
		}
		q := struct {
			User    string `json:"user"`
			Session string `json:"session"`
			After   uint64 `json:"after"`
			Limit   int    `json:"limit"`
		}{user, name, *after, *limit}
		var raw json.RawMessage
		if err := broker.RunAdmin(ctx, *dir, "sessions.log", q, &raw); err != nil {
			return notFound(err, user, name)
		}
		// Numbers in an event's detail (a memento's, say) stay as written:
		// as float64 they would lose digits past 2^53.
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var events []sessions.Event
		if err := dec.Decode(&events); err != nil {
			return fmt.Errorf("sessions log: %w", err)
		}
		if events == nil {
			events = []sessions.Event{}
		}
		if *asJSON {
			if err := writeJSON(stdout, events); err != nil {
				return err
			}
		} else {
			for _, e := range events {
				if _, err := fmt.Fprintln(stdout, e); err != nil {
					return err
				}
			}
		}
		if *limit > 0 && len(events) == *limit {
			fmt.Fprintf(stderr, "limit reached; for the next events: --after %d\n", events[len(events)-1].Seq)
		}
		return nil
	}
	return usagef("sessions: unknown subcommand %q\n%s", sub, sessionsUsage)
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// sessionArg checks that pos is exactly one valid "user/session".
func sessionArg(cmd string, pos []string) (user, name string, err error) {
	if len(pos) != 1 {
		return "", "", usagef("%s: want exactly one session as USER/SESSION (see broker sessions list)", cmd)
	}
	user, name, ok := strings.Cut(pos[0], "/")
	if !ok || strings.Contains(name, "/") {
		return "", "", usagef("%s: %q: want USER/SESSION, e.g. alice/kitchen", cmd, pos[0])
	}
	if err := wire.CheckName("user", user); err != nil {
		return "", "", usagef("%s: %v", cmd, err)
	}
	if err := wire.CheckName("session", name); err != nil {
		return "", "", usagef("%s: %v", cmd, err)
	}
	return user, name, nil
}

// notFound turns the registry's ErrNotFound into sessionNotFound. Through
// the admin endpoint only the error's text survives, so the text is checked.
func notFound(err error, user, name string) error {
	if errors.Is(err, sessions.ErrNotFound) || strings.Contains(err.Error(), sessions.ErrNotFound.Error()) {
		return sessionNotFound{user + "/" + name}
	}
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeSessionTable(w io.Writer, list []sessions.Session) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tSESSION\tSTATE\tPHASE\tINSTANCES\tLAST SEEN\tDEADLINE")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.User, s.Name, s.State, text(s.Phase),
			s.Instances, stamp(s.LastSeen), stamp(s.Deadline))
	}
	return tw.Flush()
}

// sessionRows is s as "key: value" rows, with ages and time left measured
// from now.
func sessionRows(s sessions.Session, now time.Time) [][2]string {
	nonce := "-"
	if s.Nonce != "" {
		nonce = s.Nonce
		if len(nonce) > 8 {
			nonce = nonce[:8] + "…"
		}
	}
	deadline := "- (no time window)"
	if !s.Deadline.IsZero() {
		if left := s.Deadline.Sub(now); left > 0 {
			deadline = fmt.Sprintf("%s (%s left)", stamp(s.Deadline), round(left))
		} else {
			deadline = fmt.Sprintf("%s (passed %s ago)", stamp(s.Deadline), round(-left))
		}
	}
	policy := "none (the configured rules apply)"
	if p := s.Policy; p != nil {
		window := "no window"
		if p.Window > 0 {
			window = "window " + p.Window.String()
		}
		policy = fmt.Sprintf("%s, %s, liveness %s", p.Mode, window, p.Liveness)
	}
	journal := "empty"
	if j := s.Journal; j.Next > j.First {
		journal = fmt.Sprintf("seq %d-%d (%d events)", j.First, j.Next-1, j.Next-j.First)
	}
	return [][2]string{
		{"user", s.User},
		{"session", s.Name},
		{"state", string(s.State)},
		{"since", stampAgo(s.Since, now)},
		{"phase", text(s.Phase)},
		{"nonce", nonce},
		{"memento", memento(s.Memento)},
		{"instances", strconv.FormatUint(s.Instances, 10)},
		{"first begin", stampAgo(s.FirstBegin, now)},
		{"deadline", deadline},
		{"last seen", stampAgo(s.LastSeen, now)},
		{"policy override", policy},
		{"journal", journal},
	}
}

// writeRows prints rows as aligned "key: value" lines.
func writeRows(w io.Writer, rows [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, kv := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return tw.Flush()
}

// stamp is t in UTC to the second, or "-" when t is zero.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// stampAgo is stamp with the age of t at now.
func stampAgo(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", stamp(t), round(now.Sub(t)))
}

func round(d time.Duration) time.Duration {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second)
}

// text is s for a table cell or a value: "-" when empty, quoted when it has
// spaces, quotes or control characters that would break the layout.
func text(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' }) {
		return strconv.Quote(s)
	}
	return s
}

// maxMementoShown bounds the memento in `show`; --json prints it whole.
const maxMementoShown = 120

// memento is m as compact JSON on one line, shortened when long.
func memento(m json.RawMessage) string {
	if len(m) == 0 {
		return "-"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		b.Reset()
		b.Write(m)
	}
	s := b.String()
	if len(s) <= maxMementoShown {
		return s
	}
	cut := maxMementoShown
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes; --json shows it whole)", s[:cut], len(m))
}
