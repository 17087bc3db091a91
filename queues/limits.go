package queues

import "fmt"

// Policy says what Enqueue does when a new message does not fit in the
// queue's limits.
type Policy string

const (
	// DropOldest (the default) removes the oldest queued entries until the
	// new one fits. With MaxMessages 1 the queue keeps only the latest.
	DropOldest Policy = "drop_oldest"
	// DropNewest keeps the queued entries and drops the incoming one. The
	// notifier's message still counts as accepted: it gets a seq and is
	// reported as a Drop, not as an error.
	DropNewest Policy = "drop_newest"
	// Reject refuses the incoming message with ErrFull and changes nothing;
	// the notifier is told (queue_full), so nothing is dropped silently.
	Reject Policy = "reject"
)

// Limits bound one queue. The zero Policy means DropOldest.
type Limits struct {
	MaxMessages int    `json:"max_messages" yaml:"max_messages"`
	MaxBytes    int    `json:"max_bytes" yaml:"max_bytes"` // sum of the entries' Data lengths
	Policy      Policy `json:"policy,omitempty" yaml:"policy"`
}

// DefaultLimits is 1000 messages, 1 MiB, drop_oldest.
func DefaultLimits() Limits {
	return Limits{MaxMessages: 1000, MaxBytes: 1 << 20, Policy: DropOldest}
}

// Validate reports the first unusable limit, wrapping ErrInvalid.
func (l Limits) Validate() error {
	switch {
	case l.MaxMessages < 1:
		return fmt.Errorf("%w: max messages %d: want at least 1", ErrInvalid, l.MaxMessages)
	case l.MaxBytes < 1:
		return fmt.Errorf("%w: max bytes %d: want at least 1", ErrInvalid, l.MaxBytes)
	}
	switch l.Policy {
	case "", DropOldest, DropNewest, Reject:
		return nil
	}
	return fmt.Errorf("%w: policy %q: want drop_oldest, drop_newest or reject", ErrInvalid, truncate(string(l.Policy), 32))
}

// policy is the effective policy: DropOldest when unset.
func (l Limits) policy() Policy {
	if l.Policy == "" {
		return DropOldest
	}
	return l.Policy
}

// fits reports whether a queue of count entries and bytes bytes is within l.
func (l Limits) fits(count, bytes int) bool {
	return count <= l.MaxMessages && bytes <= l.MaxBytes
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
