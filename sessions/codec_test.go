package sessions

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEncodeSessionIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 5, time.UTC)
	for _, s := range []*Session{
		{User: "u", Name: "s", State: StateNew, Created: at, Journal: JournalRange{First: 1, Next: 1}},
		{User: "dev-1", Name: "shop.2", Version: 9, State: StateActive, Nonce: "ab12", Memento: json.RawMessage(`{"i":3}`),
			Phase: "checkout \"now\"\n", Created: at, FirstBegin: at.Add(time.Second), Deadline: at.Add(time.Hour),
			LastSeen: at.Add(time.Minute), Since: at, Instances: 4, LastCallSeq: 77,
			Policy: &Policy{Mode: Exclusive, Window: time.Hour, Liveness: time.Minute}, Journal: JournalRange{First: 3, Next: 90}},
		{User: "u", Name: "s", Policy: &Policy{Mode: Takeover}}, // zero times, no window
	} {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		got, err := encodeSession(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
}

func TestTickAndPresenceAreJSONMarshal(t *testing.T) {
	ms := int64(-5)
	for _, v := range []interface{ AppendJSON([]byte) []byte }{
		Tick{State: StateActive, ServerTime: 1764669600000},
		Tick{RemainingMs: &ms, State: StateExpired, Phase: "pay \"now\"", ServerTime: 1},
		Presence{State: "online", Since: 1764669600000},
	} {
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(v.AppendJSON(nil)))
	}
}

func TestEncodeEventIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 5, time.FixedZone("CET", 3600))
	for _, e := range []Event{
		{Seq: 1, Time: at, Kind: "begin"},
		{Seq: 2, Time: at, Kind: "call", Detail: map[string]any{"seq": uint64(7), "method": "buy", "memento": json.RawMessage(`[1,2]`)}},
		{Seq: 3, Time: at, Kind: "presence", Detail: map[string]any{"state": "online", "n": 3, "ok": true, "cursor": json.RawMessage(nil), "conn": Conn(12)}},
		{Seq: 4, Time: at, Kind: "drop", Detail: map[string]any{"seqs": []uint64{1, 2}, "ttl": 1.5}}, // encoded by json.Marshal
	} {
		want, err := json.Marshal(e)
		require.NoError(t, err)
		got, err := encodeEvent(e)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
}

// decodedEqual requires a and b to decode to the same value.
func decodedEqual(t *testing.T, a, b []byte) {
	t.Helper()
	var x, y any
	require.NoError(t, json.Unmarshal(a, &x), "%s", a)
	require.NoError(t, json.Unmarshal(b, &y), "%s", b)
	require.Equal(t, y, x)
}

// fuzzTime is a time from fuzz input: unix nanoseconds in a zone of off
// seconds east of UTC.
func fuzzTime(ns int64, off int32) time.Time {
	return time.Unix(0, ns).In(time.FixedZone("z", int(off)))
}

// FuzzSessionEncoding holds encodeSession to json.Marshal: both fail, or
// both give JSON that decodes to the same value.
func FuzzSessionEncoding(f *testing.F) {
	f.Add("u", "s", "active", "n1", []byte(`{"i":1}`), "phase", uint64(3), uint64(9), int64(1e18), int32(3600), true)
	f.Add("<u>", "s\xff", "", "", []byte(` [1, 2] `), "\u2028", uint64(0), uint64(0), int64(-7e18), int32(-86400), false)
	f.Add("u", "s", "new", "", []byte(`{"a":`), "", uint64(1), uint64(1), int64(0), int32(59), false)
	f.Fuzz(func(t *testing.T, user, name, state, nonce string, memento []byte, phase string, version, seq uint64, ns int64, off int32, policy bool) {
		at := fuzzTime(ns, off)
		s := &Session{User: user, Name: name, Version: version, State: State(state), Nonce: nonce, Memento: memento, Phase: phase,
			Created: at, LastSeen: at.Add(time.Duration(seq)), Since: at.Add(-time.Second), Instances: version / 2, LastCallSeq: seq,
			Journal: JournalRange{First: seq, Next: version}}
		if policy {
			s.Policy = &Policy{Mode: Mode(nonce), Window: time.Duration(ns), Liveness: time.Duration(seq)}
			s.Deadline = at.Add(time.Hour)
		}
		want, werr := json.Marshal(s)
		got, gerr := encodeSession(s)
		require.Equal(t, werr != nil, gerr != nil, "json.Marshal: %v, encodeSession: %v", werr, gerr)
		if werr == nil {
			decodedEqual(t, got, want)
		}
		// What devices get of it: ticks and presence.
		tick := s.tick(at.Add(time.Duration(ns % int64(time.Hour))))
		want, err := json.Marshal(tick)
		require.NoError(t, err)
		decodedEqual(t, tick.AppendJSON(nil), want)
		p := Presence{State: state, Since: ns}
		want, err = json.Marshal(p)
		require.NoError(t, err)
		decodedEqual(t, p.AppendJSON(nil), want)
	})
}

// FuzzEventEncoding holds encodeEvent to json.Marshal in the same way.
func FuzzEventEncoding(f *testing.F) {
	f.Add(uint64(1), "call", "method", "buy", []byte(`3`), int64(1e18), int32(0), 5)
	f.Add(uint64(0), "\x00", "\xff", "<&>", []byte(`{"a" :1}`), int64(-9e18), int32(90000), -1)
	f.Fuzz(func(t *testing.T, seq uint64, kind, key, text string, raw []byte, ns int64, off int32, n int) {
		e := Event{Seq: seq, Time: fuzzTime(ns, off), Kind: kind}
		if n >= 0 {
			e.Detail = map[string]any{key: text, key + "1": json.RawMessage(raw), "n": n, "seq": seq, "b": n%2 == 0, "conn": Conn(seq)}
		}
		want, werr := json.Marshal(e)
		got, gerr := encodeEvent(e)
		require.Equal(t, werr != nil, gerr != nil, "json.Marshal: %v, encodeEvent: %v", werr, gerr)
		if werr == nil {
			decodedEqual(t, got, want)
		}
	})
}
