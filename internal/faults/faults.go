// Package faults holds the broker's test-only faults, so that device-sim
// can prove that its checks catch a broker that breaks a guarantee. Only
// `device-sim broker --fault-…` sets one; they are off everywhere else.
package faults

import "sync/atomic"

var (
	dropNotifyAt atomic.Int64 // the notify (counting from 1) to acknowledge and never queue; 0: none
	notifies     atomic.Int64
)

// DropNotifyAt makes the broker acknowledge its nth QoS 0/1 notify (counting
// from 1, broker-wide) without queuing it: an acknowledged notification lost.
// 0 turns the fault off.
func DropNotifyAt(n int64) { dropNotifyAt.Store(n) }

// DropNotify reports whether the notify being handled is the one to drop.
func DropNotify() bool {
	at := dropNotifyAt.Load()
	return at > 0 && notifies.Add(1) == at
}
