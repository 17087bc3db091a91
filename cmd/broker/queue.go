package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/queues"
)

const queueUsage = `Usage:
  broker queue peek U/S [--after SEQ] [--limit N] [--json]
  broker queue limit U/S --max N [--max-bytes B] [--policy drop_oldest|drop_newest|reject] [--json]
  broker queue limit U/S --reset [--json]
peek lists a session's queued notifications, oldest first, without
consuming them. limit sets the session's own queue limits (--reset: back to
the configured ones); it creates the session if it is new. Entries queued
above lower limits stay until acked (drop_oldest also drops them as new
notifications arrive).
Each takes --data-dir (default $TETHER_DATA_DIR or ./data); flags may come
before or after U/S.
`

// defaultPeek is how many entries `queue peek` shows without --limit.
const defaultPeek = 100

func queueCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("queue: missing subcommand\n%s", queueUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("queue "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), queueUsage)
		fs.PrintDefaults()
	}
	dir := dataDirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	switch sub {
	case "peek":
		after := fs.Uint64("after", 0, "only entries after this seq")
		limit := fs.Int("limit", defaultPeek, fmt.Sprintf("at most this many entries (1 to %d)", queues.MaxBatch))
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		user, name, err := sessionArg("queue peek", pos)
		if err != nil {
			return err
		}
		if *limit < 1 || *limit > queues.MaxBatch {
			return usagef("queue peek: --limit must be 1 to %d, got %d", queues.MaxBatch, *limit)
		}
		q := struct {
			User    string `json:"user"`
			Session string `json:"session"`
			After   uint64 `json:"after"`
			Limit   int    `json:"limit"`
		}{user, name, *after, *limit}
		var entries []queues.Entry
		if err := broker.RunAdmin(ctx, *dir, "queue.peek", q, &entries); err != nil {
			return notFound(err, user, name)
		}
		if entries == nil {
			entries = []queues.Entry{}
		}
		if *asJSON {
			if err := writeJSON(stdout, entries); err != nil {
				return err
			}
		} else if err := writeEntries(stdout, entries); err != nil {
			return err
		}
		if len(entries) == *limit {
			fmt.Fprintf(stderr, "limit reached; for the next entries: --after %d\n", entries[len(entries)-1].Seq)
		}
		return nil
	case "limit":
		def := broker.DefaultConfig().QueueLimits
		maxMessages := fs.Int("max", 0, "most notifications queued (required unless --reset)")
		maxBytes := fs.Int("max-bytes", def.MaxBytes, "most bytes of notification data queued")
		policy := fs.String("policy", string(queues.DropOldest), "when full: drop_oldest, drop_newest or reject")
		reset := fs.Bool("reset", false, "go back to the configured limits")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		user, name, err := sessionArg("queue limit", pos)
		if err != nil {
			return err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		q := struct {
			User     string        `json:"user"`
			Session  string        `json:"session"`
			Max      int           `json:"max,omitempty"`
			MaxBytes int           `json:"max_bytes,omitempty"`
			Policy   queues.Policy `json:"policy,omitempty"`
			Reset    bool          `json:"reset,omitempty"`
		}{User: user, Session: name, Reset: *reset}
		switch {
		case *reset && (set["max"] || set["max-bytes"] || set["policy"]):
			return usagef("queue limit: give --reset or limits (--max, --max-bytes, --policy), not both")
		case *reset:
		case !set["max"]:
			return usagef("queue limit: --max is required (or --reset for the configured limits)")
		default:
			l := queues.Limits{MaxMessages: *maxMessages, MaxBytes: *maxBytes, Policy: queues.Policy(*policy)}
			if err := limitsUsage(l); err != nil {
				return err
			}
			q.Max, q.MaxBytes, q.Policy = l.MaxMessages, l.MaxBytes, l.Policy
		}
		var d broker.SessionDetail
		if err := broker.RunAdmin(ctx, *dir, "queue.limit", q, &d); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, d)
		}
		if lim := d.Queue.Limits; d.Queue.Depth > lim.MaxMessages || d.Queue.Bytes > lim.MaxBytes {
			fmt.Fprintf(stderr, "%s/%s holds more than its new limits: %s\n", user, name, overLimits[queues.Policy(policyName(lim.Policy))])
		}
		return writeRows(stdout, queueRows(d))
	}
	return usagef("queue: unknown subcommand %q\n%s", sub, queueUsage)
}

// overLimits says, by policy, what happens to a queue above its limits.
var overLimits = map[queues.Policy]string{
	queues.DropOldest: "the oldest entries are dropped as new notifications arrive",
	queues.DropNewest: "new notifications are dropped until acks make room",
	queues.Reject:     "new notifications are refused until acks make room",
}

// limitsUsage checks l, naming the flag at fault.
func limitsUsage(l queues.Limits) error {
	switch {
	case l.MaxMessages < 1:
		return usagef("queue limit: --max must be at least 1, got %d", l.MaxMessages)
	case l.MaxBytes < 1:
		return usagef("queue limit: --max-bytes must be at least 1, got %d", l.MaxBytes)
	}
	switch l.Policy {
	case queues.DropOldest, queues.DropNewest, queues.Reject:
	default:
		return usagef("queue limit: --policy %q: want drop_oldest, drop_newest or reject", l.Policy)
	}
	if err := l.Validate(); err != nil {
		return usagef("queue limit: %v", err)
	}
	return nil
}

// queueRows is d's queue as "key: value" rows, for sessions show and queue limit.
func queueRows(d broker.SessionDetail) [][2]string {
	q := d.Queue
	acked := "none"
	if q.Acked > 0 {
		acked = "up to seq " + strconv.FormatUint(q.Acked, 10)
	}
	dropped := "none"
	if len(q.Dropped) > 0 {
		parts := make([]string, 0, len(q.Dropped))
		for reason, n := range q.Dropped {
			parts = append(parts, fmt.Sprintf("%s=%d", reason, n))
		}
		sort.Strings(parts)
		dropped = strings.Join(parts, " ")
	}
	return [][2]string{
		{"queued", fmt.Sprintf("%d (%d bytes)", q.Depth, q.Bytes)},
		{"acked", acked},
		{"next seq", strconv.FormatUint(q.NextSeq, 10)},
		{"dropped", dropped},
		{"queue limits", fmt.Sprintf("%d messages, %d bytes, %s", q.Limits.MaxMessages, q.Limits.MaxBytes, policyName(q.Limits.Policy))},
	}
}

// policyName is p, with the zero policy named for what it does.
func policyName(p queues.Policy) string {
	if p == "" {
		return string(queues.DropOldest)
	}
	return string(p)
}

// maxDataShown bounds a notification's data in `queue peek`; --json prints it whole.
const maxDataShown = 60

func writeEntries(w io.Writer, entries []queues.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tENQUEUED\tEXPIRES\tKEY\tDATA")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.Seq, stamp(e.Enqueued), stamp(e.Expires), text(e.Key), dataCell(e.Data))
	}
	return tw.Flush()
}

// dataCell is data (compact JSON) on one line: characters that are not
// printable are escaped, and it is cut to maxDataShown bytes.
func dataCell(data []byte) string {
	var b strings.Builder
	for _, r := range string(data) {
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	s := b.String()
	if len(s) <= maxDataShown {
		return s
	}
	cut := maxDataShown
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
