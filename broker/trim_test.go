package broker

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTrimmerWaitsForBurstToEnd: no trim while clients keep arriving or
// leaving, one once the count has held still for trimQuiet after moving by
// a tenth, none for small moves.
func TestTrimmerWaitsForBurstToEnd(t *testing.T) {
	var tr trimmer
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	steps := []struct {
		at      float64
		clients int64
		trim    bool
	}{
		{0, 0, false},
		{1, 3000, false},    // connecting
		{2, 10000, false},   // still connecting
		{2.5, 10000, false}, // still, but not for long enough
		{3, 10000, true},    // held still for a second: trim
		{4, 10000, false},   // trimmed already
		{5, 10500, false},   // a small move
		{7, 10500, false},   // held still, but 500 < 10000/10
		{8, 9000, false},    // a mass disconnect…
		{9, 8000, false},
		{10, 8000, true}, // …that has ended: 2000 from 10000
		{11, 8100, false},
		{13, 8100, false}, // 100 < 256
	}
	for _, s := range steps {
		require.Equal(t, s.trim, tr.observe(at(s.at), s.clients), "at %gs with %d clients", s.at, s.clients)
	}
}

// TestTrimLoopTrims runs the loop on a made-up client count: it trims
// once after the count jumps and holds still, and stops with its context.
func TestTrimLoopTrims(t *testing.T) {
	var clients, trims atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimLoop(ctx, clients.Load, func() { trims.Add(1) }, slog.New(slog.DiscardHandler))
	}()
	clients.Store(5000)
	require.Eventually(t, func() bool { return trims.Load() == 1 }, 10*time.Second, 50*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	require.Equal(t, int64(1), trims.Load(), "one trim per burst")
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("trimLoop did not stop with its context")
	}
}
