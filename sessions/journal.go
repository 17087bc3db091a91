package sessions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/f47fa0da/tether/persistence"
)

// Event is one line of a session's journal. Detail holds the event's own
// fields (nonce, cursor, reason, seq, …), kept as JSON.
type Event struct {
	Seq    uint64         `json:"seq"`
	Time   time.Time      `json:"time"`
	Kind   string         `json:"kind"`
	Detail map[string]any `json:"detail,omitempty"`
}

// String renders the event as one log line: time first, then kind and
// detail as key=value in key order.
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteString(" ")
	b.WriteString(e.Kind)
	keys := make([]string, 0, len(e.Detail))
	for k := range e.Detail {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := e.Detail[k]
		var s string
		switch x := v.(type) {
		case string:
			s = x
			// Quote anything that could break "one line per event" or fake a key.
			if s == "" || strings.ContainsFunc(s, func(r rune) bool {
				return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' || r == '='
			}) {
				s = strconv.Quote(s)
			}
		default:
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(x)
			s = strings.TrimSuffix(buf.String(), "\n")
		}
		fmt.Fprintf(&b, " %s=%s", k, s)
	}
	return b.String()
}

// JournalRange is the live part of a session's journal: seqs [First, Next).
type JournalRange struct {
	First uint64 `json:"first"`
	Next  uint64 `json:"next"`
}

// Retention bounds a journal by count and age; older events are deleted as
// new ones are appended.
type Retention struct {
	MaxEvents int
	MaxAge    time.Duration
}

func journalPrefix(user, name string) []byte { return persistence.Prefix("journal", user, name) }

// journalHead remembers the time of a session's oldest journal event, so
// that trimming by age does not read and decode it on every append. An
// event never changes once written: the time holds while seq is the
// journal's first.
type journalHead struct {
	seq  uint64 // 0: nothing remembered
	time time.Time
}

// timeOf returns the time of the event at seq (key k), and false when it
// is missing or unreadable.
func (h *journalHead) timeOf(tx persistence.Txn, k []byte, seq uint64) (time.Time, bool, error) {
	if h.seq != 0 && h.seq == seq {
		return h.time, true, nil
	}
	v, err := tx.Get(k)
	if errors.Is(err, persistence.ErrNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	var e Event
	if json.Unmarshal(v, &e) != nil {
		return time.Time{}, false, nil
	}
	h.seq, h.time = seq, e.Time
	return e.Time, true, nil
}

// appendEvent writes e as the session's next journal event in tx and trims
// what retention no longer keeps (a bounded number per append, so a
// burst never makes one commit large). head is what the caller remembers
// of the journal's oldest event; it holds only if tx commits.
func appendEvent(tx persistence.Txn, s *Session, e Event, keep Retention, head *journalHead) error {
	if s.Journal.Next == 0 {
		s.Journal = JournalRange{First: 1, Next: 1}
	}
	e.Seq = s.Journal.Next
	v, err := encodeEvent(e)
	if err != nil {
		return err
	}
	prefix := journalPrefix(s.User, s.Name)
	if err := tx.Set(persistence.Uint64Key(prefix, e.Seq), v); err != nil {
		return err
	}
	if e.Seq == s.Journal.First {
		// A journal's first event: no need to read it back to trim by age.
		*head = journalHead{seq: e.Seq, time: e.Time.Round(0)}
	}
	s.Journal.Next++
	for i := 0; i < 8 && s.Journal.First < s.Journal.Next-1; i++ {
		tooMany := keep.MaxEvents > 0 && s.Journal.Next-s.Journal.First > uint64(keep.MaxEvents)
		if !tooMany {
			if keep.MaxAge <= 0 {
				break
			}
			t, ok, err := head.timeOf(tx, persistence.Uint64Key(prefix, s.Journal.First), s.Journal.First)
			if err != nil {
				return err
			}
			if ok && e.Time.Sub(t) <= keep.MaxAge {
				break
			}
		}
		if err := tx.Delete(persistence.Uint64Key(prefix, s.Journal.First)); err != nil {
			return err
		}
		s.Journal.First++
	}
	return nil
}

// readJournal returns up to limit events of a session after seq after
// (0: from the start); limit <= 0 means all.
func readJournal(tx persistence.Txn, user, name string, after uint64, limit int) ([]Event, error) {
	prefix := journalPrefix(user, name)
	var out []Event
	err := tx.Scan(prefix, persistence.Uint64Key(prefix, after+1), func(_, v []byte) (bool, error) {
		var e Event
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.UseNumber() // mementos and cursors keep every digit
		if err := dec.Decode(&e); err != nil {
			return false, fmt.Errorf("sessions: journal event: %w", err)
		}
		out = append(out, e)
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}
