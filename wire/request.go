package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/f47fa0da/tether/internal/jsonobj"
)

// Ops a device may send on sessions/U/S/req.
const (
	OpBegin    = "begin"
	OpPing     = "ping"
	OpRemember = "remember"
	OpEnd      = "end"
	OpCall     = "call"
	OpAck      = "ack"
)

// MaxRequestSize is the largest request payload accepted, in bytes.
const MaxRequestSize = 64 << 10

// MaxIDSize bounds a request id's JSON text.
const MaxIDSize = 128

// Request is a device's request. ID is echoed in the reply and may be any
// JSON string or number the client chose.
type Request struct {
	ID      json.RawMessage `json:"id"`
	Op      string          `json:"op"`
	Nonce   string          `json:"nonce,omitempty"`
	Cursor  json.RawMessage `json:"cursor,omitempty"`  // ping: what the user is looking at
	Memento json.RawMessage `json:"memento,omitempty"` // remember, call
	Phase   *string         `json:"phase,omitempty"`   // remember
	Seq     uint64          `json:"seq,omitempty"`     // call
	Method  string          `json:"method,omitempty"`  // call
	Args    json.RawMessage `json:"args,omitempty"`    // call
	Upto    *uint64         `json:"upto,omitempty"`    // ack
	Resend  bool            `json:"resend,omitempty"`  // ack: send again everything after the acked seq
	Restore string          `json:"restore,omitempty"` // begin: a sealed snapshot
}

// DecodeRequest parses and validates a request payload. On failure it
// returns an *Error with code bad_request or too_large, and whatever id it
// could recover so that the reply can still be correlated.
func DecodeRequest(payload []byte) (Request, *Error) {
	var req Request
	if len(payload) > MaxRequestSize {
		req.ID = recoverID(payload[:0])
		return req, Errorf(CodeTooLarge, "request is %d bytes; the limit is %d", len(payload), MaxRequestSize)
	}
	if fast, ok := decodeRequestFast(payload); ok {
		req = fast
	} else if e := decodeRequestSlow(payload, &req); e != nil {
		return req, e
	}
	if e := req.validate(); e != nil {
		if !validID(req.ID) {
			req.ID = nil
		}
		return req, e
	}
	return req, nil
}

// decodeRequestSlow decodes payload into req with encoding/json, strictly
// (no unknown fields, nothing after the object): every payload that
// decodeRequestFast does not take comes here, for its exact result.
func decodeRequestSlow(payload []byte, req *Request) *Error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		*req = Request{ID: recoverID(payload)}
		return Errorf(CodeBadRequest, "request is not a valid JSON object: %s", jsonProblem(err))
	}
	if dec.More() {
		*req = Request{ID: req.ID}
		return Errorf(CodeBadRequest, "request has data after the JSON object")
	}
	return nil
}

// decodeRequestFast decodes what decodeRequestSlow would when it is
// simple: valid JSON, one object, keys spelled as the fields are and
// without escapes, each once, strings without escapes, seq and upto plain
// digits, no null. It reports false for anything else. Devices send one
// request per call, ack and ping; encoding/json's decoder cost about a
// tenth of the broker's work on a call.
func decodeRequestFast(p []byte) (Request, bool) {
	var (
		r    Request
		seen uint16
	)
	ok := jsonobj.Members(p, func(key, raw []byte) bool {
		if string(raw) == "null" {
			return false // encoding/json treats null per type: leave it to it
		}
		bit, ok := requestFields[string(key)]
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		switch bit {
		case fieldID:
			r.ID = bytes.Clone(raw)
		case fieldCursor:
			r.Cursor = bytes.Clone(raw)
		case fieldMemento:
			r.Memento = bytes.Clone(raw)
		case fieldArgs:
			r.Args = bytes.Clone(raw)
		case fieldSeq:
			r.Seq, ok = digits(raw)
		case fieldUpto:
			var n uint64
			n, ok = digits(raw)
			r.Upto = &n
		case fieldResend:
			r.Resend, ok = string(raw) == "true", string(raw) == "true" || string(raw) == "false"
		default:
			var v string
			if v, ok = jsonobj.String(raw); !ok {
				return false
			}
			switch bit {
			case fieldOp:
				r.Op = v
			case fieldNonce:
				r.Nonce = v
			case fieldMethod:
				r.Method = v
			case fieldRestore:
				r.Restore = v
			case fieldPhase:
				r.Phase = &v
			}
		}
		return ok
	})
	return r, ok
}

const (
	fieldID uint16 = 1 << iota
	fieldOp
	fieldNonce
	fieldCursor
	fieldMemento
	fieldPhase
	fieldSeq
	fieldMethod
	fieldArgs
	fieldUpto
	fieldResend
	fieldRestore
)

// requestFields maps Request's JSON keys to their bits.
var requestFields = map[string]uint16{
	"id": fieldID, "op": fieldOp, "nonce": fieldNonce, "cursor": fieldCursor, "memento": fieldMemento,
	"phase": fieldPhase, "seq": fieldSeq, "method": fieldMethod, "args": fieldArgs, "upto": fieldUpto,
	"resend": fieldResend, "restore": fieldRestore,
}

// digits parses a JSON number of plain digits into a uint64.
func digits(raw []byte) (uint64, bool) {
	if len(raw) == 0 || len(raw) > 19 { // 19 digits always fit
		return 0, false
	}
	var n uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

func (r *Request) validate() *Error {
	if len(r.ID) == 0 {
		return Errorf(CodeBadRequest, "missing field id")
	}
	if !validID(r.ID) {
		return Errorf(CodeBadRequest, "id must be a string or a number of at most %d bytes", MaxIDSize)
	}
	need := func(field string, ok bool) *Error {
		if ok {
			return nil
		}
		return Errorf(CodeBadRequest, "op %s needs field %s", r.Op, field)
	}
	switch r.Op {
	case "":
		return Errorf(CodeBadRequest, "missing field op")
	case OpBegin:
		return nil
	case OpPing, OpEnd:
		return need("nonce", r.Nonce != "")
	case OpRemember:
		if e := need("nonce", r.Nonce != ""); e != nil {
			return e
		}
		return need("memento", len(r.Memento) > 0)
	case OpCall:
		if e := need("nonce", r.Nonce != ""); e != nil {
			return e
		}
		if e := need("seq (a positive integer)", r.Seq > 0); e != nil {
			return e
		}
		return need("method", r.Method != "")
	case OpAck:
		if e := need("nonce", r.Nonce != ""); e != nil {
			return e
		}
		return need("upto", r.Upto != nil)
	}
	return Errorf(CodeBadRequest, "unknown op %q: want begin, ping, remember, call, ack or end", truncate(r.Op, 32))
}

func validID(id json.RawMessage) bool {
	if len(id) == 0 || len(id) > MaxIDSize {
		return false
	}
	switch id[0] {
	case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return json.Valid(id)
	}
	return false
}

// recoverID pulls a usable id out of a payload that failed to decode.
func recoverID(payload []byte) json.RawMessage {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(payload, &probe) == nil && validID(probe.ID) {
		return probe.ID
	}
	return nil
}

func jsonProblem(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	return truncate(msg, 120)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Superseded is what the broker sends a connection whose instance another
// begin (on another connection) replaced, on sessions/U/S/res and to that
// connection alone: the nonce it held, and a stale_nonce error. ID is
// always null: it answers no request.
type Superseded struct {
	ID    json.RawMessage `json:"id"`
	Nonce string          `json:"superseded"`
	Error *Error          `json:"error"`
}

// Response is the broker's reply on sessions/U/S/res.
type Response struct {
	ID    json.RawMessage `json:"id"`
	OK    any             `json:"ok,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// MarshalJSON writes id as null when it is missing.
func (r Response) MarshalJSON() ([]byte, error) {
	type plain Response
	if len(r.ID) == 0 {
		r.ID = json.RawMessage("null")
	}
	if r.Error == nil && r.OK == nil {
		r.OK = struct{}{}
	}
	return json.Marshal(plain(r))
}

// AppendJSON appends r's JSON encoding to b when r is a success whose ok
// value is already encoded (a call's reply), and reports false otherwise:
// then use json.Marshal. The id and ok go out as they are, which must be
// valid JSON (a decoded request's id and an encoded reply are).
func (r Response) AppendJSON(b []byte) ([]byte, bool) {
	ok, isRaw := r.OK.(json.RawMessage)
	if r.Error != nil || !isRaw || len(ok) == 0 {
		return b, false
	}
	id := r.ID
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b = append(b, `{"id":`...)
	b = append(b, id...)
	b = append(b, `,"ok":`...)
	b = append(b, ok...)
	return append(b, '}'), true
}

// Errorf builds an *Error.
func Errorf(code Code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}
