package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReplication runs the example as it is: the first broker process is
// killed with SIGKILL and its data directory deleted; the device moves to a
// second broker process with separate storage, resumes with its memento and
// phase intact, and carries on — an exactly-once call continuing from the
// memento, then a remember — which a later begin on the second broker sees.
func TestReplication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute) // includes building cmd/broker
	defer cancel()
	var out bytes.Buffer
	got, err := run(ctx, &out, "")
	require.NoError(t, err, out.String())
	t.Log("\n" + out.String())

	require.Contains(t, got.Killed, "killed", "broker 1 died by SIGKILL")
	require.True(t, got.DataDirGone, "broker 1's data directory is deleted")

	want1 := progress{Cart: []string{"kettle", "lamp"}, Step: 3, Bought: 2}
	require.Equal(t, want1, got.OnBroker1)
	var resumed progress
	require.NoError(t, json.Unmarshal(got.Resumed.Memento, &resumed))
	require.Equal(t, want1, resumed, "the memento came with the device")
	require.Equal(t, "checkout", got.Resumed.Phase, "the phase came with the device")
	require.True(t, got.Resumed.Crashed, "the instance on the destroyed broker never ended")
	require.Equal(t, uint64(3), got.Resumed.NextSeq, "calls continue after the two committed on broker 1")

	require.Equal(t, progress{Cart: []string{"kettle", "lamp"}, Step: 5, Bought: 3}, got.Carried)
	require.Equal(t, int64(1), got.BuyCount, "the call ran once, on broker 2 (demo.buy's counter is broker 2's own)")
	var final progress
	require.NoError(t, json.Unmarshal(got.Final.Memento, &final))
	require.Equal(t, got.Carried, final, "what the device committed on broker 2 is there")
	require.Equal(t, "paid", got.Final.Phase)
	require.Equal(t, uint64(4), got.Final.NextSeq, "broker 2 committed the call after the restored ones")
}
