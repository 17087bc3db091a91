// Package jsonobj holds the pieces of JSON fast paths. Members walks the
// members of a JSON object without decoding it, for decoders that also
// have a strict one: it accepts only the simple case and leaves everything
// else to the caller's strict decoder, which then decides and explains.
// The Append functions write JSON values as encoding/json would, for
// encoders that write a common record by hand and leave the rest to
// json.Marshal.
package jsonobj

import (
	"encoding/json"
	"unicode/utf8"
)

// Members calls fn with the key and raw value of each member of the JSON
// object p, in order, and reports true if p is one valid JSON object, in
// valid UTF-8 (encoding/json would replace bad bytes in strings), whose
// keys hold no escapes and fn returned true for every member. It reports
// false otherwise, possibly after calling fn for some members. The slices
// alias p.
func Members(p []byte, fn func(key, raw []byte) bool) bool {
	if !utf8.Valid(p) || !json.Valid(p) {
		return false
	}
	i := skipSpace(p, 0)
	if i >= len(p) || p[i] != '{' {
		return false
	}
	for i = skipSpace(p, i+1); i < len(p) && p[i] != '}'; {
		// Valid JSON: a key is a string, and a quote ends it unless escaped.
		end := i + 1
		for end < len(p) && p[end] != '"' {
			if p[end] == '\\' {
				return false
			}
			end++
		}
		key := p[i+1 : end]
		i = skipSpace(p, end+1) + 1 // past the colon
		start := skipSpace(p, i)
		stop := valueEnd(p, start)
		if !fn(key, p[start:stop]) {
			return false
		}
		if i = skipSpace(p, stop); i < len(p) && p[i] == ',' {
			i = skipSpace(p, i+1)
		}
	}
	return true
}

// Spaced reports whether the valid JSON value v holds white space outside
// its strings (json.Compact would change it).
func Spaced(v []byte) bool {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			for i++; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' {
					i++
				}
			}
		case ' ', '\t', '\n', '\r':
			return true
		}
	}
	return false
}

// String returns the text of the JSON string raw when it holds no
// escapes (its bytes are then the text), and false for anything else.
func String(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' {
			return "", false
		}
	}
	return string(raw[1 : len(raw)-1]), true
}

func skipSpace(p []byte, i int) int {
	for i < len(p) && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the end of the valid JSON value that starts at p[i].
func valueEnd(p []byte, i int) int {
	depth := 0
	for ; i < len(p); i++ {
		switch p[i] {
		case '"':
			for i++; i < len(p) && p[i] != '"'; i++ {
				if p[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of the enclosing object
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}
