package jsonobj

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// AppendString appends s as a JSON string: what encoding/json writes,
// except that <, > and & are not escaped (they need not be; the decoded
// text is the same). Invalid UTF-8 becomes U+FFFD, as encoding/json does.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029': // as encoding/json: JavaScript line ends
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hex = "0123456789abcdef"

// AppendTime appends t as encoding/json does (RFC 3339 with nanoseconds)
// and reports false, appending nothing, where encoding/json would fail: a
// year outside 0–9999 or a zone offset of a day or more.
func AppendTime(b []byte, t time.Time) ([]byte, bool) {
	_, off := t.Zone()
	if y := t.Year(); y < 0 || y > 9999 || off <= -24*3600 || off >= 24*3600 {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// AppendRaw appends the JSON value v as it is and reports true when it is
// valid and compact (what json.Marshal would write for it, up to the
// escaping of <, > and &); else it appends nothing and reports false. A
// nil v is null, as json.Marshal writes a nil json.RawMessage (an empty
// one it refuses).
func AppendRaw(b []byte, v json.RawMessage) ([]byte, bool) {
	if v == nil {
		return append(b, "null"...), true
	}
	if !json.Valid(v) || Spaced(v) {
		return b, false
	}
	return append(b, v...), true
}
