package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// A scenario file (YAML, or a report's JSON) never panics the parser, and
// every scenario it accepts comes back the same through the report's JSON.
func FuzzScenarioFile(f *testing.F) {
	for _, s := range []string{"devices: 7\nnotify_rate: 5\nkill_every: 3s\n", `{"preset":"chaos","devices":12,"ramp":"1.5s","seed":42}`,
		"preset: soak\n", "duration: -1s\n", "notify_rate: .nan\n", "crash_mode: drop\ndevices: 5000\n", "[1, 2]", "ramp: 10\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var sc Scenario
		if err := sc.UnmarshalJSON(b); err != nil || sc.Validate() != nil {
			return
		}
		out, err := json.Marshal(sc)
		require.NoError(t, err)
		var again Scenario
		require.NoError(t, json.Unmarshal(out, &again), "%s", out)
		require.Equal(t, sc, again)
	})
}
