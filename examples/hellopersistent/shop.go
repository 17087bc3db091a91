package main

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/nonce"
)

// Names shared by the shop and the shopper.
const (
	// SessionName is the shopper's logical session.
	SessionName = "shop"
	// CountersSession is where Counters asks, so that looking never takes
	// over the shopper's session.
	CountersSession = "counters"
	// ReceiptsSession gets a notification for every item bought, from the
	// buy that bought it: a receipt exists if and only if the buy committed.
	ReceiptsSession = "receipts"

	methodBuy      = "buy"
	methodCounters = "counters"

	// countersKey is the user's app state: {"toaster": 1, …}, like the
	// seed's this.state.counters.
	countersKey = "counters"
	maxItemLen  = 64
)

// registerShop installs the shop's call handlers on b:
//
//	buy(item)  → the item's new count, and a receipt {item, count} notified to ReceiptsSession
//	counters() → every item's count
//
// The shopper sends the item's index in its list as the memento of each
// buy; the broker commits it with the count, the receipt and the reply, or
// none of them.
func registerShop(b *broker.Broker) {
	b.Handle(methodBuy, buy)
	b.Handle(methodCounters, counters)
}

// buy increments the count of the item named by the call's args (a JSON
// string) and returns the new count.
func buy(_ context.Context, c *nonce.Call) (any, error) {
	var item string
	if err := json.Unmarshal(c.Args, &item); err != nil || item == "" || len(item) > maxItemLen {
		return nil, errors.New("args: want the item's name, a JSON string of 1 to 64 bytes")
	}
	counts, err := readCounters(c)
	if err != nil {
		return nil, err
	}
	counts[item]++
	if err := c.State.SetJSON(countersKey, counts); err != nil {
		return nil, err
	}
	if _, err := c.Notify(ReceiptsSession, Receipt{Item: item, Count: counts[item]}); err != nil {
		return nil, err
	}
	return counts[item], nil
}

// Receipt is the notification a buy sends to ReceiptsSession.
type Receipt struct {
	Item  string `json:"item"`
	Count int    `json:"count"`
}

// counters returns every item's count; it changes nothing.
func counters(_ context.Context, c *nonce.Call) (any, error) { return readCounters(c) }

func readCounters(c *nonce.Call) (map[string]int, error) {
	counts := map[string]int{}
	if _, err := c.State.GetJSON(countersKey, &counts); err != nil {
		return nil, err
	}
	return counts, nil
}
