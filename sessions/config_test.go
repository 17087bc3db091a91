package sessions_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/sessions"
)

// TestConfigValidate: each unusable setting is refused as a *ConfigError
// naming its Go field, so that cmd/broker can name the flag.
func TestConfigValidate(t *testing.T) {
	require.NoError(t, sessions.DefaultConfig().Validate())
	tests := []struct {
		field  string
		change func(c *sessions.Config)
		msg    string
	}{
		{"TickInterval", func(c *sessions.Config) { c.TickInterval = 5 * time.Millisecond }, "must be at least 10ms, got 5ms"},
		{"SweepInterval", func(c *sessions.Config) { c.SweepInterval = 0 }, "must be at least 10ms, got 0s"},
		{"IdleEvict", func(c *sessions.Config) { c.IdleEvict = -time.Second }, "must be positive"},
		{"Retention.MaxEvents", func(c *sessions.Config) { c.Retention.MaxEvents = 0 }, "must be at least 1, got 0"},
		{"Retention.MaxAge", func(c *sessions.Config) { c.Retention.MaxAge = -time.Hour }, "must not be negative"},
		{"MaxCursor", func(c *sessions.Config) { c.MaxCursor = 0 }, "must be at least 1"},
		{"MaxSessionsPerUser", func(c *sessions.Config) { c.MaxSessionsPerUser = -1 }, "must be at least 1"},
		{"DefaultPolicy.Liveness", func(c *sessions.Config) { c.DefaultPolicy.Liveness = 500 * time.Millisecond }, "must be at least 1s, got 500ms"},
		{"DefaultPolicy.Window", func(c *sessions.Config) { c.DefaultPolicy.Window = -time.Minute }, "must not be negative"},
		{"Rules[1].Policy.Mode", func(c *sessions.Config) {
			c.Rules = []sessions.Rule{{Pattern: "a*", Policy: sessions.DefaultPolicy()}, {Pattern: "b*", Policy: sessions.Policy{Mode: "solo", Liveness: time.Minute}}}
		}, `must be takeover or exclusive, got "solo"`},
		{"Rules[0].Pattern", func(c *sessions.Config) {
			c.Rules = []sessions.Rule{{Pattern: "[", Policy: sessions.DefaultPolicy()}}
		}, "syntax error in pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			c := sessions.DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			var ce *sessions.ConfigError
			require.True(t, errors.As(err, &ce), "%T: %v", err, err)
			require.Equal(t, tt.field, ce.Field)
			require.Contains(t, ce.Msg, tt.msg)
			require.Equal(t, "sessions: "+tt.field+": "+ce.Msg, err.Error())
		})
	}
	require.NoError(t, func() error { c := sessions.DefaultConfig(); c.Retention.MaxAge = 0; return c.Validate() }(), "0 keeps events of any age")
}
