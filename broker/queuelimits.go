package broker

import (
	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/sessions"
)

// setQueueLimits sets the limits of user/session's queue (nil: back to the
// configured ones) and journals a queue_limits event in the same
// transaction, creating the session if it is new so that limits can be set
// before a device first begins. Invalid limits change nothing. It is
// Broker.LimitQueue and the queue.limit admin op.
func setQueueLimits(reg *sessions.Registry, user, session string, l *queues.Limits) error {
	if l != nil {
		if err := l.Validate(); err != nil {
			return err
		}
	}
	return reg.Update(user, session, func(tx persistence.Txn, s *sessions.Session) (sessions.Change, error) {
		detail := map[string]any{"limits": "configured"}
		if l != nil {
			detail = map[string]any{"max": l.MaxMessages, "max_bytes": l.MaxBytes, "policy": string(l.Policy)}
		}
		return sessions.Change{Changed: true, Events: []sessions.Event{{Kind: "queue_limits", Detail: detail}}},
			queues.SetLimits(tx, user, session, l)
	})
}
