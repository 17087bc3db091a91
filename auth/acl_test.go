package auth_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
)

var (
	alice     = auth.Principal{User: "alice", Role: auth.RoleDevice, TokenID: "0123456789abcdef"}
	billing   = auth.Principal{User: "billing", Role: auth.RoleService, TokenID: "fedcba9876543210"}
	anonymous = auth.Principal{Anonymous: true}
)

const (
	sub = false // subscribe (read)
	pub = true  // publish (write)
)

func TestAllowed(t *testing.T) {
	tests := []struct {
		name  string
		p     auth.Principal
		topic string
		write bool
		want  bool
	}{
		// A device on its own sessions.
		{"device publishes req", alice, "sessions/alice/s1/req", pub, true},
		{"device publishes presence", alice, "sessions/alice/s1/presence", pub, true},
		{"device publishes another leaf", alice, "sessions/alice/s1/custom", pub, true},
		{"device subscribes res", alice, "sessions/alice/s1/res", sub, true},
		{"device subscribes own #", alice, "sessions/alice/#", sub, true},
		{"device subscribes own session #", alice, "sessions/alice/s1/#", sub, true},
		{"device subscribes own +/res", alice, "sessions/alice/+/res", sub, true},
		{"device subscribes own s1/+", alice, "sessions/alice/s1/+", sub, true},

		// Broker-owned leaves are read-only for devices.
		{"device publishes res", alice, "sessions/alice/s1/res", pub, false},
		{"device publishes notify", alice, "sessions/alice/s1/notify", pub, false},
		{"device publishes tick", alice, "sessions/alice/s1/tick", pub, false},
		{"device publishes snapshot", alice, "sessions/alice/s1/snapshot", pub, false},
		{"device subscribes notify", alice, "sessions/alice/s1/notify", sub, true},

		// Publishing needs an exact, well-shaped topic.
		{"publish with + session", alice, "sessions/alice/+/req", pub, false},
		{"publish with # leaf", alice, "sessions/alice/s1/#", pub, false},
		{"publish with + leaf", alice, "sessions/alice/s1/+", pub, false},
		{"publish with wildcard inside leaf", alice, "sessions/alice/s1/re+q", pub, false},
		{"publish with empty leaf", alice, "sessions/alice/s1/", pub, false},
		{"publish too deep", alice, "sessions/alice/s1/req/x", pub, false},
		{"publish with no leaf", alice, "sessions/alice/s1", pub, false},
		{"publish with empty session", alice, "sessions/alice//req", pub, false},
		{"publish with invalid session", alice, "sessions/alice/s$1/req", pub, false},
		{"publish to user root", alice, "sessions/alice", pub, false},

		// Other users' topics and filters that could reach them.
		{"device publishes other user", alice, "sessions/bob/s1/req", pub, false},
		{"device subscribes other user", alice, "sessions/bob/#", sub, false},
		{"device subscribes other user's res", alice, "sessions/bob/s1/res", sub, false},
		{"user name prefix is not the user", alice, "sessions/alicex/#", sub, false},
		{"user name is case-sensitive", alice, "sessions/Alice/#", sub, false},
		{"subscribe sessions/+/x", alice, "sessions/+/x", sub, false},
		{"subscribe sessions/+/s1/res", alice, "sessions/+/s1/res", sub, false},
		{"subscribe sessions/#", alice, "sessions/#", sub, false},
		{"subscribe sessions/+", alice, "sessions/+", sub, false},
		{"subscribe #", alice, "#", sub, false},
		{"subscribe +/alice/#", alice, "+/alice/#", sub, false},
		{"subscribe sessions", alice, "sessions", sub, false},
		{"subscribe sessions/alice", alice, "sessions/alice", sub, false},
		{"subscribe sessions/alice/", alice, "sessions/alice/", sub, false},
		{"shared subscription", alice, "$share/g/sessions/alice/#", sub, false},
		{"empty topic", alice, "", sub, false},
		{"empty topic publish", alice, "", pub, false},

		// Beyond sessions/: devices get nothing.
		{"device publishes tether/notify", alice, "tether/notify/alice/s1", pub, false},
		{"device subscribes tether/#", alice, "tether/#", sub, false},
		{"device plain topic", alice, "weather/today", pub, false},
		{"device $SYS", alice, "$SYS/broker/uptime", sub, false},

		// A service also owns tether/...
		{"service publishes tether/notify", billing, "tether/notify/alice/s1", pub, true},
		{"service subscribes tether/#", billing, "tether/#", sub, true},
		{"service subscribes tether/+/x", billing, "tether/+/x", sub, true},
		{"service own sessions", billing, "sessions/billing/s1/req", pub, true},
		{"service other user's sessions", billing, "sessions/alice/s1/notify", pub, false},
		{"service subscribes other user", billing, "sessions/alice/#", sub, false},
		{"service subscribes #", billing, "#", sub, false},
		{"service subscribes +/notify", billing, "+/notify", sub, false},
		{"service $SYS", billing, "$SYS/#", sub, false},
		{"service plain topic", billing, "weather/today", pub, false},
		{"tether prefix is not tether", billing, "tetherx/notify", pub, false},

		// Anonymous clients: plain topics only.
		{"anonymous plain publish", anonymous, "weather/today", pub, true},
		{"anonymous plain subscribe", anonymous, "weather/#", sub, true},
		{"anonymous single level", anonymous, "weather", pub, true},
		{"anonymous root-level empty", anonymous, "/weather", pub, true},
		{"anonymous sessions", anonymous, "sessions/alice/s1/req", pub, false},
		{"anonymous sessions subscribe", anonymous, "sessions/#", sub, false},
		{"anonymous bare sessions", anonymous, "sessions", sub, false},
		{"anonymous tether", anonymous, "tether/notify/alice/s1", pub, false},
		{"anonymous $SYS", anonymous, "$SYS/broker/uptime", sub, false},
		{"anonymous $share", anonymous, "$share/g/weather", sub, false},
		{"anonymous # root", anonymous, "#", sub, false},
		{"anonymous + root", anonymous, "+/alice/s1/req", sub, false},
		{"anonymous + alone", anonymous, "+", sub, false},
		{"anonymous empty", anonymous, "", sub, false},
		{"anonymous with a user still anonymous", auth.Principal{User: "alice", Role: auth.RoleService, Anonymous: true}, "sessions/alice/#", sub, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.p.Allowed(tc.topic, tc.write), "%+v Allowed(%q, write=%v)", tc.p, tc.topic, tc.write)
		})
	}
}
