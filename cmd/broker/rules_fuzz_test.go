package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/sessions"
)

// FuzzPolicyRules: --policies either refuses its value with an error or
// reads rules that validate (liveness filled in, as loadServeConfig does)
// and that read back the same from their printed form.
func FuzzPolicyRules(f *testing.F) {
	for _, s := range []string{"quiz*=exclusive/60m", "shop=takeover", "a=takeover/10m/5s,b*=exclusive//2m", "x=sometimes", "=takeover", "a=takeover/1/2/3", "a=takeover/10m/0s", " a =takeover , ,b=exclusive"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var rules []sessions.Rule
		if (rulesValue{&rules}).Set(s) != nil {
			return
		}
		for _, r := range rules {
			if r.Policy.Liveness == 0 {
				r.Policy.Liveness = sessions.DefaultPolicy().Liveness
			}
			require.NoError(t, r.Validate(), "%q", s)
		}
		var again []sessions.Rule
		printed := rulesValue{&rules}.String()
		require.NoError(t, (rulesValue{&again}).Set(printed), "%q printed as %q", s, printed)
		require.Equal(t, rules, again, "%q printed as %q", s, printed)
	})
}

// FuzzQueueRules: --queue-rules either refuses its value with an error or
// reads rules with a positive max that read back the same from their
// printed form.
func FuzzQueueRules(f *testing.F) {
	for _, s := range []string{"alerts*=1", "log=1000/65536/drop_newest", "a=5//reject,b=2", "a=0", "a=x", "[=1", "a=1/2/3/4", "a=1/2/sometimes"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var rules []broker.QueueRule
		if (queueRulesValue{&rules}).Set(s) != nil {
			return
		}
		for _, r := range rules {
			require.Positive(t, r.Limits.MaxMessages, "%q", s)
			require.GreaterOrEqual(t, r.Limits.MaxBytes, 0, "%q", s)
		}
		var again []broker.QueueRule
		printed := queueRulesValue{&rules}.String()
		require.NoError(t, (queueRulesValue{&again}).Set(printed), "%q printed as %q", s, printed)
		require.Equal(t, rules, again, "%q printed as %q", s, printed)
	})
}
