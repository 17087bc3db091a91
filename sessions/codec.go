package sessions

import (
	"encoding/json"
	"sort"
	"strconv"
	"time"

	"github.com/f47fa0da/tether/internal/jsonobj"
)

// A session record and its journal events are rewritten on every call and
// begin, so they are encoded by hand: the same JSON as json.Marshal (up to
// the escaping of <, > and &, which need none), which encodes what the
// hand-written path does not cover. FuzzSessionEncoding and
// FuzzEventEncoding hold the two to the same decoded values.

// encodeSession is json.Marshal(s).
func encodeSession(s *Session) ([]byte, error) {
	if len(s.Ext) > 0 {
		return json.Marshal(s)
	}
	b := make([]byte, 0, 320)
	b = append(b, `{"user":`...)
	b = jsonobj.AppendString(b, s.User)
	b = append(b, `,"name":`...)
	b = jsonobj.AppendString(b, s.Name)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, s.Version, 10)
	b = append(b, `,"state":`...)
	b = jsonobj.AppendString(b, string(s.State))
	if s.Nonce != "" {
		b = append(b, `,"nonce":`...)
		b = jsonobj.AppendString(b, s.Nonce)
	}
	ok := true
	if len(s.Memento) > 0 {
		b = append(b, `,"memento":`...)
		b, ok = jsonobj.AppendRaw(b, s.Memento)
	}
	if s.Phase != "" {
		b = append(b, `,"phase":`...)
		b = jsonobj.AppendString(b, s.Phase)
	}
	b, ok = appendTime(b, ok, `,"created":`, s.Created, false)
	b, ok = appendTime(b, ok, `,"first_begin":`, s.FirstBegin, true)
	b, ok = appendTime(b, ok, `,"deadline":`, s.Deadline, true)
	b, ok = appendTime(b, ok, `,"last_seen":`, s.LastSeen, true)
	b, ok = appendTime(b, ok, `,"since":`, s.Since, true)
	b = append(b, `,"instances":`...)
	b = strconv.AppendUint(b, s.Instances, 10)
	if s.LastCallSeq != 0 {
		b = append(b, `,"last_call_seq":`...)
		b = strconv.AppendUint(b, s.LastCallSeq, 10)
	}
	if p := s.Policy; p != nil {
		b = append(b, `,"policy":{"mode":`...)
		b = jsonobj.AppendString(b, string(p.Mode))
		if p.Window != 0 {
			b = append(b, `,"window":`...)
			b = strconv.AppendInt(b, int64(p.Window), 10)
		}
		b = append(b, `,"liveness":`...)
		b = strconv.AppendInt(b, int64(p.Liveness), 10)
		b = append(b, '}')
	}
	b = append(b, `,"journal":{"first":`...)
	b = strconv.AppendUint(b, s.Journal.First, 10)
	b = append(b, `,"next":`...)
	b = strconv.AppendUint(b, s.Journal.Next, 10)
	b = append(b, "}}"...)
	if !ok {
		return json.Marshal(s)
	}
	return b, nil
}

// appendTime appends a time member named by the JSON text key (omitted
// when zero, with omitzero), unless an earlier member failed (!ok).
func appendTime(b []byte, ok bool, key string, t time.Time, omitzero bool) ([]byte, bool) {
	if !ok || omitzero && t.IsZero() {
		return b, ok
	}
	b = append(b, key...)
	return jsonobj.AppendTime(b, t)
}

// encodeEvent is json.Marshal(e).
func encodeEvent(e Event) ([]byte, error) {
	b := make([]byte, 0, 128)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b, ok := appendTime(b, true, `,"time":`, e.Time, false)
	b = append(b, `,"kind":`...)
	b = jsonobj.AppendString(b, e.Kind)
	if ok && len(e.Detail) > 0 {
		keys := make([]string, 0, len(e.Detail))
		for k := range e.Detail {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, `,"detail":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonobj.AppendString(b, k)
			b = append(b, ':')
			if b, ok = appendValue(b, e.Detail[k]); !ok {
				break
			}
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	if !ok {
		return json.Marshal(e)
	}
	return b, nil
}

// appendValue appends the detail value v, for the types events hold most,
// and reports false for any other.
func appendValue(b []byte, v any) ([]byte, bool) {
	switch v := v.(type) {
	case string:
		return jsonobj.AppendString(b, v), true
	case uint64:
		return strconv.AppendUint(b, v, 10), true
	case Conn:
		return strconv.AppendUint(b, uint64(v), 10), true
	case int:
		return strconv.AppendInt(b, int64(v), 10), true
	case bool:
		return strconv.AppendBool(b, v), true
	case json.RawMessage:
		return jsonobj.AppendRaw(b, v)
	}
	return b, false
}

// AppendJSON appends t's JSON encoding to b: json.Marshal's, up to the
// escaping of <, > and & (the broker publishes ticks with it).
func (t Tick) AppendJSON(b []byte) []byte {
	b = append(b, '{')
	if t.RemainingMs != nil {
		b = append(b, `"remaining_ms":`...)
		b = strconv.AppendInt(b, *t.RemainingMs, 10)
		b = append(b, ',')
	}
	b = append(b, `"state":`...)
	b = jsonobj.AppendString(b, string(t.State))
	if t.Phase != "" {
		b = append(b, `,"phase":`...)
		b = jsonobj.AppendString(b, t.Phase)
	}
	b = append(b, `,"server_time":`...)
	b = strconv.AppendInt(b, t.ServerTime, 10)
	return append(b, '}')
}

// AppendJSON appends p's JSON encoding to b, as Tick.AppendJSON.
func (p Presence) AppendJSON(b []byte) []byte {
	b = append(b, `{"state":`...)
	b = jsonobj.AppendString(b, p.State)
	b = append(b, `,"since":`...)
	b = strconv.AppendInt(b, p.Since, 10)
	return append(b, '}')
}
