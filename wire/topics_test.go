package wire_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/wire"
)

func TestSessionTopic(t *testing.T) {
	require.Equal(t, "sessions/alice/s1/req", wire.SessionTopic("alice", "s1", wire.LeafReq))
}

func TestParseSessionTopic(t *testing.T) {
	long := strings.Repeat("u", wire.MaxNameLen)
	tests := []struct {
		topic               string
		user, session, leaf string
		ok                  bool
	}{
		{"sessions/alice/s1/req", "alice", "s1", "req", true},
		{"sessions/alice/s1/res", "alice", "s1", "res", true},
		{"sessions/alice/s1/presence", "alice", "s1", "presence", true},
		{"sessions/A.b_c-1/x.y/notify", "A.b_c-1", "x.y", "notify", true},
		{"sessions/" + long + "/" + long + "/tick", long, long, "tick", true},

		{"", "", "", "", false},
		{"sessions", "", "", "", false},
		{"sessions/alice", "", "", "", false},
		{"sessions/alice/s1", "", "", "", false},
		{"sessions/alice/s1/req/extra", "", "", "", false},
		{"sessions/alice/s1/req/", "", "", "", false},
		{"/sessions/alice/s1/req", "", "", "", false},
		{"session/alice/s1/req", "", "", "", false},
		{"Sessions/alice/s1/req", "", "", "", false},
		{"tether/alice/s1/req", "", "", "", false},
		{"sessions//s1/req", "", "", "", false},
		{"sessions/alice//req", "", "", "", false},
		{"sessions/+/s1/req", "", "", "", false},
		{"sessions/alice/#/req", "", "", "", false},
		{"sessions/alice/+/req", "", "", "", false},
		{"sessions/al ice/s1/req", "", "", "", false},
		{"sessions/" + long + "x/s1/req", "", "", "", false},
		{"sessions/alice/s1" + long + "/req", "", "", "", false},
		{"$share/g/alice/s1", "", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.topic, func(t *testing.T) {
			user, session, leaf, ok := wire.ParseSessionTopic(tc.topic)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.user, user)
			require.Equal(t, tc.session, session)
			require.Equal(t, tc.leaf, leaf)
			if ok {
				require.Equal(t, tc.topic, wire.SessionTopic(user, session, leaf))
			}
		})
	}
}

func TestBrokerOwnedLeaf(t *testing.T) {
	for leaf, want := range map[string]bool{
		wire.LeafRes: true, wire.LeafNotify: true, wire.LeafTick: true, wire.LeafSnapshot: true,
		wire.LeafReq: false, wire.LeafPresence: false, "": false, "Res": false, "res/": false,
	} {
		require.Equal(t, want, wire.BrokerOwnedLeaf(leaf), "leaf %q", leaf)
	}
}

// FuzzParseSessionTopic: whatever ParseSessionTopic accepts is exactly the
// topic SessionTopic builds from its parts, with valid names.
func FuzzParseSessionTopic(f *testing.F) {
	for _, s := range []string{
		"sessions/alice/s1/req",
		"sessions/alice/s1/presence",
		"sessions/alice/s1/",
		"sessions/alice/s1/req/x",
		"sessions/+/s1/req",
		"sessions//s1/req",
		"tether/notify/alice/s1",
		"",
		"/",
		"sessions/a/b/c/d",
		"sessions/é/s/req",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		user, session, leaf, ok := wire.ParseSessionTopic(topic)
		if !ok {
			require.Empty(t, user+session+leaf)
			return
		}
		require.Equal(t, topic, wire.SessionTopic(user, session, leaf))
		require.True(t, wire.ValidName(user), "user %q", user)
		require.True(t, wire.ValidName(session), "session %q", session)
		require.NotContains(t, leaf, "/")
	})
}
