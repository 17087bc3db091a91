package queues

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Stored rows are written in a compact binary form: they are read and
// written on every enqueue, delivery and ack, and as JSON their decoding
// and encoding took about a tenth of the broker's CPU under load. Rows
// written as JSON by earlier releases (they start with '{') are still
// read; the next write of a row converts it.
//
// An entry row:
//
//	0x01 seq enqueued expires len(key) key data
//
// A state row:
//
//	0x01 next_seq acked count bytes first expiry_from
//	     has_limits [max_messages max_bytes len(policy) policy]
//	     len(dropped) {len(reason) reason n}…
//
// Numbers are uvarints, except enqueued and expires: varints of Unix
// nanoseconds (expires 0: no TTL). data runs to the end of the row.
const rowVersion = 1

var errShort = errors.New("truncated")

// reader takes a row apart; the first error sticks.
type reader struct {
	b   []byte
	err error
}

// take reads one number with read (binary.Uvarint or binary.Varint).
func take[T uint64 | int64](r *reader, read func([]byte) (T, int)) T {
	if r.err != nil {
		return 0
	}
	v, n := read(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint() uint64 { return take(r, binary.Uvarint) }
func (r *reader) varint() int64   { return take(r, binary.Varint) }

// int reads a uvarint that must fit a non-negative int.
func (r *reader) int() int {
	v := r.uvarint()
	if v > math.MaxInt32 {
		r.err = fmt.Errorf("count %d out of range", v)
		return 0
	}
	return int(v)
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) flag() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func (r *reader) time() time.Time {
	n := r.varint()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// encodeEntry is e's stored row.
func encodeEntry(e Entry) []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+binary.MaxVarintLen16+len(e.Key)+len(e.Data))
	b = append(b, rowVersion)
	b = binary.AppendUvarint(b, e.Seq)
	b = appendTime(b, e.Enqueued)
	b = appendTime(b, e.Expires)
	b = binary.AppendUvarint(b, uint64(len(e.Key)))
	b = append(b, e.Key...)
	return append(b, e.Data...)
}

// entryRow reads the stored entry row v of seq: everything but the data
// into e, the data as the rest of v (not copied; JSON rows of earlier
// releases have it in e.Data already).
func entryRow(seq uint64, v []byte) (e Entry, data []byte, err error) {
	switch {
	case len(v) > 0 && v[0] == '{':
		err = json.Unmarshal(v, &e)
		data = e.Data
	case len(v) > 0 && v[0] == rowVersion:
		r := reader{b: v[1:]}
		e.Seq = r.uvarint()
		e.Enqueued = r.time()
		e.Expires = r.time()
		e.Key = string(r.bytes())
		data, err = r.b, r.err
	default:
		err = errors.New("unknown row format")
	}
	switch {
	case err != nil:
		return Entry{}, nil, fmt.Errorf("%w: entry %d: %v", ErrCorrupt, seq, err)
	case e.Seq != seq:
		return Entry{}, nil, fmt.Errorf("%w: entry %d holds seq %d", ErrCorrupt, seq, e.Seq)
	}
	return e, data, nil
}

// decodeEntry reads the stored entry seq.
func decodeEntry(seq uint64, v []byte) (Entry, error) {
	e, data, err := entryRow(seq, v)
	if err != nil {
		return Entry{}, err
	}
	if !json.Valid(data) {
		return Entry{}, fmt.Errorf("%w: entry %d: data is not JSON", ErrCorrupt, seq)
	}
	if e.Data == nil {
		e.Data = json.RawMessage(append([]byte(nil), data...))
	}
	return e, nil
}

// encodeState is s's stored row.
func encodeState(s state) []byte {
	b := make([]byte, 0, 64)
	b = append(b, rowVersion)
	for _, n := range []uint64{s.NextSeq, s.Acked, uint64(s.Count), uint64(s.Bytes), s.First, s.ExpiryFrom} {
		b = binary.AppendUvarint(b, n)
	}
	if s.Limits == nil {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(s.Limits.MaxMessages))
		b = binary.AppendUvarint(b, uint64(s.Limits.MaxBytes))
		b = binary.AppendUvarint(b, uint64(len(s.Limits.Policy)))
		b = append(b, s.Limits.Policy...)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Dropped)))
	for _, reason := range slices.Sorted(maps.Keys(s.Dropped)) { // equal states, equal rows
		b = binary.AppendUvarint(b, uint64(len(reason)))
		b = append(b, reason...)
		b = binary.AppendUvarint(b, s.Dropped[reason])
	}
	return b
}

// decodeState reads a state row (binary, or JSON from an earlier release)
// and checks that it is consistent.
func decodeState(v []byte) (state, error) {
	s, err := decodeStateRow(v)
	switch {
	case err != nil:
	case s.NextSeq == 0 || s.Acked >= s.NextSeq || s.First > s.NextSeq || s.Count < 0 || s.Bytes < 0:
		err = fmt.Errorf("inconsistent state %+v", s)
	case s.Limits != nil:
		err = s.Limits.Validate()
	}
	return s, err
}

func decodeStateRow(v []byte) (state, error) {
	var s state
	if len(v) > 0 && v[0] == '{' {
		return s, json.Unmarshal(v, &s)
	}
	if len(v) == 0 || v[0] != rowVersion {
		return s, errors.New("unknown row format")
	}
	r := reader{b: v[1:]}
	s.NextSeq, s.Acked = r.uvarint(), r.uvarint()
	s.Count, s.Bytes = r.int(), r.int()
	s.First, s.ExpiryFrom = r.uvarint(), r.uvarint()
	switch r.flag() {
	case 0:
	case 1:
		s.Limits = &Limits{MaxMessages: r.int(), MaxBytes: r.int(), Policy: Policy(r.bytes())}
	default:
		return s, errors.New("bad limits flag")
	}
	n := r.int()
	for i := 0; i < n && r.err == nil; i++ {
		if s.Dropped == nil {
			s.Dropped = map[Reason]uint64{}
		}
		reason := Reason(r.bytes())
		s.Dropped[reason] = r.uvarint()
	}
	if r.err == nil && len(r.b) > 0 {
		return s, errors.New("trailing bytes")
	}
	return s, r.err
}
