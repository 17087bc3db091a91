package web

import (
	"context"

	"github.com/f47fa0da/tether/nonce"
)

// The demo page's exactly-once call methods.
const (
	MethodBuy   = "demo.buy"   // one purchase: the counter goes up by one
	MethodCount = "demo.count" // the counter as it is, changing nothing
)

// countKey is where the counter lives in the user's application state.
const countKey = "demo.count"

// ShopReply is the reply of both demo methods: the user's purchases on this
// broker, in every session.
type ShopReply struct {
	Count int64 `json:"count"`
}

// DemoHandlers returns the call handlers the demo page uses, by method, for
// broker.Config.Handlers. The counter is the user's application state
// (nonce.Call.State), so a purchase commits atomically with the call's
// memento and reply: a retried call gets the stored reply and never counts
// twice. Each call returns a new map, which the caller may change.
func DemoHandlers() map[string]nonce.Handler {
	return map[string]nonce.Handler{MethodBuy: Buy, MethodCount: Count}
}

// Buy is the demo.buy handler: it adds one to the user's counter and
// replies with the new count (a ShopReply).
func Buy(_ context.Context, c *nonce.Call) (any, error) {
	var n int64
	if _, err := c.State.GetJSON(countKey, &n); err != nil {
		return nil, err
	}
	n++
	if err := c.State.SetJSON(countKey, n); err != nil {
		return nil, err
	}
	return ShopReply{Count: n}, nil
}

// Count is the demo.count handler: it replies with the user's counter (a
// ShopReply) and changes nothing. The page calls it when the broker no
// longer has the reply of the session's last purchase to send again.
func Count(_ context.Context, c *nonce.Call) (any, error) {
	var n int64
	if _, err := c.State.GetJSON(countKey, &n); err != nil {
		return nil, err
	}
	return ShopReply{Count: n}, nil
}
