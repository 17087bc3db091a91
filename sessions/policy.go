package sessions

import (
	"path"
	"time"
)

// Mode says what a begin does while another instance is current.
type Mode string

const (
	// Takeover: the newest begin wins; the old instance's requests get stale_nonce.
	Takeover Mode = "takeover"
	// Exclusive: a begin is refused with session_busy while the current instance is live.
	Exclusive Mode = "exclusive"
)

// Policy is the server-side rule set of a session. Devices never choose it.
type Policy struct {
	Mode Mode `json:"mode" yaml:"mode"`
	// Window, when positive, is the session's time window from its first begin.
	Window time.Duration `json:"window,omitempty" yaml:"window"`
	// Liveness is how long an active session may stay silent (no request)
	// before the sweep detaches it.
	Liveness time.Duration `json:"liveness" yaml:"liveness"`
}

// DefaultPolicy is takeover, no window, 60 s liveness.
func DefaultPolicy() Policy { return Policy{Mode: Takeover, Liveness: 60 * time.Second} }

// Validate checks the policy's fields; the error is a *ConfigError.
func (p Policy) Validate() error {
	if p.Mode != Takeover && p.Mode != Exclusive {
		return configErrorf("Mode", "must be takeover or exclusive, got %q", p.Mode)
	}
	if p.Window < 0 {
		return configErrorf("Window", "must not be negative (0: no window), got %s", p.Window)
	}
	if p.Liveness < time.Second {
		return configErrorf("Liveness", "must be at least 1s, got %s", p.Liveness)
	}
	return nil
}

// Rule applies Policy to sessions whose name matches Pattern (path.Match
// syntax against the session name, e.g. "quiz-*"; "*/…" is not special).
type Rule struct {
	Pattern string `json:"pattern" yaml:"pattern"`
	Policy  Policy `json:"policy" yaml:"policy"`
}

// Validate checks the pattern and the policy; the error is a *ConfigError.
func (r Rule) Validate() error {
	if _, err := path.Match(r.Pattern, ""); err != nil {
		return configErrorf("Pattern", "%q: %v", r.Pattern, err)
	}
	return within("Policy", r.Policy.Validate())
}

// policyFor returns the policy of session name: its own override, else the
// first matching rule, else def.
func policyFor(s *Session, rules []Rule, def Policy) Policy {
	if s.Policy != nil {
		return *s.Policy
	}
	for _, r := range rules {
		if ok, _ := path.Match(r.Pattern, s.Name); ok {
			return r.Policy
		}
	}
	return def
}
