package broker

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"time"
)

// trimmer returns memory to the operating system after a burst of
// connects or disconnects. Serving new connections leaves garbage and
// raises the heap's high-water mark, which the Go runtime gives back to
// the OS only slowly, and it halves an oversized goroutine stack only once
// per collection. So once the number of connected clients has moved by a tenth
// (and at least minTrimChange) and then held still for trimQuiet, the broker
// runs a few collections and releases the freed memory: a fleet that has
// just connected costs what it costs at rest, not what it cost to connect.
type trimmer struct {
	base    int64     // clients at the last trim
	last    int64     // clients at the last observation
	changed time.Time // when the count last moved
}

const (
	trimQuiet     = time.Second
	minTrimChange = 256
	trimPasses    = 4 // collections per trim: each can halve a stack that is four times too large
)

// observe takes the number of connected clients at now and reports whether
// to trim.
func (t *trimmer) observe(now time.Time, clients int64) bool {
	if clients != t.last {
		t.last, t.changed = clients, now
		return false
	}
	delta := clients - t.base
	if delta < 0 {
		delta = -delta
	}
	if delta < max(minTrimChange, t.base/10) || now.Sub(t.changed) < trimQuiet {
		return false
	}
	t.base = clients
	return true
}

// trimLoop watches the connected clients every second until ctx ends and
// trims when observe says so.
func trimLoop(ctx context.Context, clients func() int64, trimmed func(), log *slog.Logger) {
	var t trimmer
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			n := clients()
			if !t.observe(now, n) {
				continue
			}
			start := time.Now()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range trimPasses - 1 {
				runtime.GC()
			}
			debug.FreeOSMemory() // a last collection, then everything free goes back
			runtime.ReadMemStats(&after)
			trimmed()
			log.Debug("returned memory to the OS after a change in clients", "clients", n, "took", time.Since(start),
				"stack_before", before.StackInuse, "stack_after", after.StackInuse,
				"released", int64(after.HeapReleased)-int64(before.HeapReleased))
		}
	}
}
