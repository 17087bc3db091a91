package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReplication: the first broker is destroyed (closed and its data
// directory deleted); the device moves to a second broker with separate
// storage and carries on with its memento and phase intact.
func TestReplication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	got, err := run(ctx, &out)
	require.NoError(t, err, out.String())
	require.JSONEq(t, `{"cart":["kettle","lamp"],"step":3}`, got.Memento)
	require.Equal(t, "checkout", got.Phase)
	require.True(t, got.Crashed, "the instance on the destroyed broker never ended")
	require.Contains(t, out.String(), "destroyed")
}
