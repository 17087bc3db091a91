package queues

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/f47fa0da/tether/internal/jsonobj"
)

// MaxKeyLen is the longest collapse key, in bytes.
const MaxKeyLen = 128

// MaxTTL is the longest time to live a message may ask for.
const MaxTTL = 365 * 24 * time.Hour

// Message is what a notifier puts in a session's queue.
type Message struct {
	// Data is the notification itself: any JSON value but null.
	Data json.RawMessage
	// TTL, when positive, is how long the message stays deliverable; once
	// it has passed, Read skips the entry and Expire removes it.
	TTL time.Duration
	// Key, when set, is a collapse key: enqueuing the message removes the
	// still-queued entry with the same key (a newer state replaces an older one).
	Key string
}

// Validate checks m the way Enqueue does, wrapping ErrBadMessage.
func (m Message) Validate() error {
	if err := checkData(m.Data); err != nil {
		return err
	}
	if m.TTL < 0 || m.TTL > MaxTTL {
		return fmt.Errorf("%w: ttl %s: want 0 (none) up to %s", ErrBadMessage, m.TTL, MaxTTL)
	}
	return checkKey(m.Key)
}

func checkData(d json.RawMessage) error {
	switch {
	case len(d) == 0:
		return fmt.Errorf("%w: missing data", ErrBadMessage)
	case !utf8.Valid(d):
		return fmt.Errorf("%w: data is not valid UTF-8", ErrBadMessage)
	case !json.Valid(d):
		return fmt.Errorf("%w: data is not a JSON value", ErrBadMessage)
	case string(bytes.TrimSpace(d)) == "null":
		return fmt.Errorf("%w: data must not be null", ErrBadMessage)
	}
	return nil
}

func checkKey(k string) error {
	if len(k) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes; the limit is %d", ErrBadMessage, len(k), MaxKeyLen)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("%w: key is not valid UTF-8", ErrBadMessage)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: key contains control character %U", ErrBadMessage, r)
		}
	}
	return nil
}

// compactData is d without insignificant white space: the form that is
// stored and counted in Meta.Bytes; d itself when it has none. d must be
// valid.
func compactData(d json.RawMessage) json.RawMessage {
	if !jsonobj.Spaced(d) {
		return d // compact already, as notifiers and json.Marshal send it
	}
	var b bytes.Buffer
	b.Grow(len(d))
	if err := json.Compact(&b, d); err != nil {
		panic("queues: compact of validated data: " + err.Error()) // checkData ran first
	}
	return b.Bytes()
}

// DecodeMessage parses a notifier's payload,
//
//	{"data": <any JSON but null>, "ttl_ms": <integer ≥ 0>, "key": "<collapse key>"}
//
// where only data is required. It is strict: the payload must be one UTF-8
// JSON object, at most maxBytes long (when maxBytes > 0), with no unknown or
// repeated fields and nothing after it; ttl_ms must be a plain integer of at
// most MaxTTL; key a non-empty string of at most MaxKeyLen bytes without
// control characters. Errors wrap ErrTooLarge or ErrBadMessage and say what
// is wrong. The returned Data is compacted.
func DecodeMessage(payload []byte, maxBytes int) (Message, error) {
	if maxBytes > 0 && len(payload) > maxBytes {
		return Message{}, fmt.Errorf("%w: payload is %d bytes; the limit is %d", ErrTooLarge, len(payload), maxBytes)
	}
	if !utf8.Valid(payload) {
		return Message{}, fmt.Errorf("%w: payload is not valid UTF-8", ErrBadMessage)
	}
	if m, ok := decodeMessageFast(payload); ok {
		return m, nil
	}
	return decodeMessageSlow(payload)
}

// decodeMessageSlow is DecodeMessage with a token decoder: every payload
// decodeMessageFast does not accept comes here, for the exact error.
func decodeMessageSlow(payload []byte) (Message, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Message{}, fmt.Errorf("%w: payload is not a JSON object", ErrBadMessage)
	}
	var m Message
	var seen [3]bool // data, ttl_ms, key
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Message{}, syntaxError(err)
		}
		name, _ := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Message{}, syntaxError(err)
		}
		field := -1
		switch name {
		case "data":
			field = 0
			if err := checkData(raw); err != nil {
				return Message{}, err
			}
			m.Data = compactData(raw)
		case "ttl_ms":
			field = 1
			if m.TTL, err = decodeTTL(raw); err != nil {
				return Message{}, err
			}
		case "key":
			field = 2
			if m.Key, err = decodeKey(raw); err != nil {
				return Message{}, err
			}
		default:
			return Message{}, fmt.Errorf("%w: unknown field %q: want data, ttl_ms or key", ErrBadMessage, truncate(name, 32))
		}
		if seen[field] {
			return Message{}, fmt.Errorf("%w: field %s appears twice", ErrBadMessage, name)
		}
		seen[field] = true
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return Message{}, syntaxError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Message{}, fmt.Errorf("%w: payload has data after the JSON object", ErrBadMessage)
	}
	if !seen[0] {
		return Message{}, fmt.Errorf("%w: missing field data", ErrBadMessage)
	}
	return m, nil
}

// decodeMessageFast accepts what DecodeMessage accepts when it is simple:
// valid JSON (the payload is UTF-8 already) whose top-level object has
// keys without escapes. It returns ok false, never an error, for anything
// else, which decodeMessageSlow then decodes or explains. Notifiers send
// one of these per notification; the token decoder cost more than the
// rest of the notify's decoding and validation.
func decodeMessageFast(p []byte) (m Message, ok bool) {
	var seen [3]bool // data, ttl_ms, key
	ok = jsonobj.Members(p, func(key, raw []byte) bool {
		field := -1
		var err error
		switch string(key) {
		case "data":
			field = 0
			if string(raw) == "null" {
				return false
			}
			if jsonobj.Spaced(raw) {
				m.Data = compactData(raw)
			} else {
				m.Data = bytes.Clone(raw)
			}
		case "ttl_ms":
			field = 1
			m.TTL, err = decodeTTL(raw)
		case "key":
			field = 2
			k, plain := jsonobj.String(raw)
			switch {
			case !plain:
				k, err = decodeKey(raw)
			case k == "" || checkKey(k) != nil:
				return false
			}
			m.Key = k
		}
		if field < 0 || err != nil || seen[field] {
			return false
		}
		seen[field] = true
		return true
	})
	return m, ok && seen[0]
}

func decodeTTL(raw json.RawMessage) (time.Duration, error) {
	bad := fmt.Errorf("%w: ttl_ms must be an integer from 0 (none) to %d", ErrBadMessage, MaxTTL.Milliseconds())
	for _, c := range raw {
		if c < '0' || c > '9' { // no sign, fraction, exponent, string or null
			return 0, bad
		}
	}
	ms, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || ms > MaxTTL.Milliseconds() {
		return 0, bad
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func decodeKey(raw json.RawMessage) (string, error) {
	var k string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &k) != nil {
		return "", fmt.Errorf("%w: key must be a string", ErrBadMessage)
	}
	if k == "" {
		return "", fmt.Errorf("%w: key must not be empty (leave it out for no collapse key)", ErrBadMessage)
	}
	return k, checkKey(k)
}

func syntaxError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: payload ends inside the JSON object", ErrBadMessage)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return fmt.Errorf("%w: payload is not valid JSON: %s", ErrBadMessage, truncate(msg, 120))
}
