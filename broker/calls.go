package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
	"github.com/f47fa0da/tether/wire"
)

// calls runs exactly-once calls with the application's handlers.
type calls struct {
	registry *sessions.Registry
	delivery *delivery       // for the handlers' notifications
	limits   sessions.Config // MaxMemento and MaxPhase apply to calls too
	log      *slog.Logger
	keep     uint64 // replies kept per session
	timeout  time.Duration

	mu       sync.RWMutex
	handlers map[string]nonce.Handler

	// users serialises the calls of one user (striped by name) up to their
	// commit: they share the user's application state, and running them one
	// at a time avoids transaction conflicts that would otherwise re-run
	// handlers. The wait for durability is outside, so they share fsyncs.
	// With 4,096 stripes (32 KiB), 100 busy users rarely share one; with
	// 64, a third of them did and waited on each other's commits.
	users [4096]sync.Mutex
}

func (c *calls) userLock(user string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(user))
	return &c.users[h.Sum32()%uint32(len(c.users))]
}

func (c *calls) lookup(method string) (nonce.Handler, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	h, ok := c.handlers[method]
	return h, ok
}

// Handle registers h as the handler of call method; a later Handle for the
// same method replaces it. Handlers run on the caller's connection: keep
// them short. A handler may run more than once for one call when its
// transaction conflicts with another and is retried; only the run that
// commits counts, so keep effects inside the Call. Everything a handler
// does through its Call — app state, SetPhase, Notify (to any session of
// the caller's user) — commits atomically with the call's memento and
// reply, and AfterCommit runs only once it has.
//
// A handler runs holding its session, and every session it notified with
// Call.Notify: it must not use the Broker's own session API on them
// (Notify, Enqueue, LimitQueue, Sessions().Get), which would wait for the
// session forever. Call.Notify is the way to notify from a handler;
// other users' sessions are reached from AfterCommit.
func (b *Broker) Handle(method string, h nonce.Handler) {
	b.calls.mu.Lock()
	defer b.calls.mu.Unlock()
	b.calls.handlers[method] = h
}

// run executes a call request under the current instance of user/name and
// returns the reply's ok value.
func (c *calls) run(user, name string, conn sessions.Conn, req wire.Request) (json.RawMessage, error) {
	if len(req.Memento) > c.limits.MaxMemento {
		return nil, wire.Errorf(wire.CodeTooLarge, "memento is %d bytes; the limit is %d", len(req.Memento), c.limits.MaxMemento)
	}
	var out nonce.Outcome
	err := c.registry.ExecLocked(c.userLock(user), user, name, conn, req.Nonce, func(tx persistence.Txn, s *sessions.Session, j *sessions.Joint) (sessions.Change, error) {
		// The handler's time starts once it holds the locks, afresh on a retry.
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		o, err := nonce.Execute(ctx, tx, user, name, s.LastCallSeq, nonce.Request{
			Seq: req.Seq, Method: req.Method, Args: req.Args, Memento: req.Memento,
		}, c.lookup, c.notifier(j), c.keep, time.Now())
		if err != nil || o.Cached {
			out = o
			return sessions.Change{}, err
		}
		out = o
		s.LastCallSeq = req.Seq
		detail := map[string]any{"seq": req.Seq, "method": req.Method}
		if o.Memento != nil {
			s.Memento = o.Memento
			detail["memento"] = o.Memento
		}
		if o.Phase != nil {
			if len(*o.Phase) > c.limits.MaxPhase {
				return sessions.Change{}, fmt.Errorf("%w: phase set by %s is %d bytes, limit %d", sessions.ErrTooLarge, req.Method, len(*o.Phase), c.limits.MaxPhase)
			}
			s.Phase = *o.Phase
			detail["phase"] = *o.Phase
		}
		return sessions.Change{Changed: true, Events: []sessions.Event{{Kind: "call", Detail: detail}}}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("call %s seq %d: %w", req.Method, req.Seq, err)
	}
	if afterCallCommit != nil && !out.Cached {
		afterCallCommit(user, name, req.Seq)
	}
	for _, fn := range out.After {
		c.afterCommit(user, name, req.Method, fn)
	}
	return out.Reply, nil
}

// afterCommit runs fn, an AfterCommit function of a committed call, and
// logs a panic instead of taking the broker down: the call stands.
func (c *calls) afterCommit(user, name, method string, fn func()) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("a call's AfterCommit function panicked; the call stays committed", "session", user+"/"+name,
				"method", method, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	fn()
}

// notifier serves the Call.Notify of a handler running in j: the
// notification joins the call's transaction, and is counted and delivered
// once the call has committed.
func (c *calls) notifier(j *sessions.Joint) nonce.Notifier {
	return func(call *nonce.Call, session string, data json.RawMessage) (uint64, error) {
		var r enqueued
		ms := []queues.Message{{Data: data}}
		err := j.Update(session, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
			var err error
			if r, err = c.delivery.enqueueRun(tx, call.User, session, ms, time.Now()); err == nil {
				err = r.errs[0]
			}
			return r.change(), err
		})
		if err != nil {
			code := queueErrorCode(err)
			if code == wire.CodeInternal && !errors.Is(err, sessions.ErrJointEnded) {
				j.Abort(err) // it may have written part of the entry: the call cannot commit
			}
			c.delivery.metrics.rejected.WithLabelValues(string(code)).Inc()
			return 0, fmt.Errorf("notify %s: %w", session, err)
		}
		seq := r.entries[0].Seq // 0: dropped by the drop_newest policy
		call.AfterCommit(func() {
			taken := 0
			if seq != 0 {
				taken = 1
			}
			c.delivery.counted(r.drops, taken)
			c.delivery.kick(call.User, session)
		})
		return seq, nil
	}
}

// afterCallCommit, when set (only by tests, before Open), runs after a
// call committed and before its reply is sent: the crash window.
var afterCallCommit func(user, session string, seq uint64)
