package nonce

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/f47fa0da/tether/persistence"
)

// Errors of the call procedure.
var (
	ErrUnknownMethod = errors.New("nonce: unknown method")
	ErrSeqTooOld     = errors.New("nonce: seq older than the reply cache")
	ErrSeqReused     = errors.New("nonce: seq already used by a different call")
)

// Call is one exactly-once call as its handler sees it. Everything it
// changes through State, SetPhase and the effects a part attaches commits
// with the call's reply, or not at all.
type Call struct {
	User, Session, Method string
	Seq                   uint64
	Args                  json.RawMessage
	// State is the user's application state, read and written inside the
	// call's transaction.
	State State

	phase  *string
	tx     persistence.Txn
	after  []func()
	notify Notifier
}

// Notifier queues data for the user's session inside c's transaction and
// returns its seq; the broker provides it.
type Notifier func(c *Call, session string, data json.RawMessage) (uint64, error)

// ErrNoNotifier is Call.Notify where no notifier was given to Execute.
var ErrNoNotifier = errors.New("nonce: this call cannot notify")

// Notify queues data (any JSON-encodable value) for session, a session
// of the call's user (the caller's own included; created if it does not
// exist yet), in the call's transaction: the notification is kept and
// delivered only if the call commits. It returns the notification's seq
// (0 when the queue's drop_newest policy dropped it). A refusal (the
// reject policy's queue full, a value too large) changes nothing: the
// handler returns the error to abort the call, or goes on without it.
// Like the rest of the Call, it may be used only while the handler runs,
// from the handler's goroutine.
func (c *Call) Notify(session string, data any) (uint64, error) {
	if c.notify == nil {
		return 0, ErrNoNotifier
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("nonce: notify %s: encode data: %w", session, err)
	}
	return c.notify(c, session, raw)
}

// AfterCommit registers fn to run once the call has committed (never if it
// aborts): for parts whose effects must reach devices only when durable.
func (c *Call) AfterCommit(fn func()) { c.after = append(c.after, fn) }

// SetPhase sets the session's phase when the call commits.
func (c *Call) SetPhase(phase string) { c.phase = &phase }

// Txn is the call's transaction, for parts that add effects (notifications).
func (c *Call) Txn() persistence.Txn { return c.tx }

// Handler runs a call. Its result is the reply's ok value (JSON-encoded);
// an error aborts the call: nothing it did is kept.
type Handler func(ctx context.Context, c *Call) (any, error)

// Request is what the device asked.
type Request struct {
	Seq     uint64
	Method  string
	Args    json.RawMessage
	Memento json.RawMessage // optional: becomes the session's memento with the call
}

// Outcome is what Execute did.
type Outcome struct {
	Reply   json.RawMessage // the ok value for the device
	Cached  bool            // a stored reply: the handler did not run
	Phase   *string         // set by the handler
	Memento json.RawMessage // to store with the call (nil: leave as is)
	After   []func()        // to run after the caller's commit
}

// Execute is the call procedure, inside the caller's transaction tx and
// after the caller checked the nonce: a stored reply for req.Seq is
// returned as is; a seq at or below lastSeq without one is refused
// (ErrSeqTooOld); an unknown method is refused (ErrUnknownMethod);
// otherwise the handler runs and its reply is stored, keeping the replies
// of the last keep seqs. The caller commits (or, on error, discards) tx,
// and stores req.Seq as the session's last seq in it: a seq above lastSeq
// has no stored reply, so only a retry (at or below it) reads one.
// notify, if not nil, serves the handler's Call.Notify.
func Execute(ctx context.Context, tx persistence.Txn, user, session string, lastSeq uint64, req Request,
	handlers func(method string) (Handler, bool), notify Notifier, keep uint64, now time.Time) (Outcome, error) {
	sum := sha256.Sum256(append([]byte(req.Method+"\x00"), req.Args...))
	if req.Seq <= lastSeq {
		r, ok, err := GetReply(tx, user, session, req.Seq)
		switch {
		case err != nil:
			return Outcome{}, err
		case !ok:
			return Outcome{}, fmt.Errorf("%w: seq %d ≤ last committed %d and its reply is no longer kept", ErrSeqTooOld, req.Seq, lastSeq)
		case r.Method != req.Method || !bytes.Equal(r.Args, sum[:]):
			return Outcome{}, fmt.Errorf("%w: seq %d was %s with other arguments; retry it unchanged or begin again", ErrSeqReused, req.Seq, r.Method)
		}
		return Outcome{Reply: r.OK, Cached: true}, nil
	}
	h, ok := handlers(req.Method)
	if !ok {
		return Outcome{}, fmt.Errorf("%w %q", ErrUnknownMethod, req.Method)
	}
	c := &Call{User: user, Session: session, Method: req.Method, Seq: req.Seq, Args: req.Args,
		State: State{tx: tx, user: user}, tx: tx, notify: notify}
	raw, err := run(ctx, h, c)
	var he *HandlerError
	if err != nil && !errors.As(err, &he) {
		err = &HandlerError{Method: req.Method, Err: err}
	}
	if err != nil {
		return Outcome{}, err
	}
	if err := putReply(tx, user, session, Reply{Seq: req.Seq, Method: req.Method, Args: sum[:], OK: raw, At: now}, keep, lastSeq); err != nil {
		return Outcome{}, err
	}
	return Outcome{Reply: raw, Phase: c.phase, Memento: req.Memento, After: c.after}, nil
}

// HandlerError is a call's handler failing (or panicking): the call was
// aborted and nothing it did was kept.
type HandlerError struct {
	Method string
	Err    error
	Stack  []byte // set when the handler panicked: a bug in the handler, not the device
}

func (e *HandlerError) Error() string { return "nonce: handler " + e.Method + ": " + e.Err.Error() }
func (e *HandlerError) Unwrap() error { return e.Err }

// run calls h and encodes its result, turning a panic (in h or in the
// result's MarshalJSON) into an error so that one bad handler cannot take
// the broker down.
func run(ctx context.Context, h Handler, c *Call) (raw json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			raw, err = nil, &HandlerError{Method: c.Method, Err: fmt.Errorf("panic: %v", p), Stack: debug.Stack()}
		}
	}()
	res, err := h(ctx, c)
	if err != nil {
		return nil, err
	}
	if raw, err = json.Marshal(res); err != nil {
		return nil, fmt.Errorf("encode the reply: %w", err)
	}
	return raw, nil
}
