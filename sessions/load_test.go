package sessions

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
)

type nopOutbox struct{}

func (nopOutbox) Tick(string, string, Tick)         {}
func (nopOutbox) Presence(string, string, Presence) {}

// newTestRegistry returns a registry over a store in t.TempDir().
func newTestRegistry(t *testing.T) *Registry {
	t.Helper()
	pcfg := persistence.DefaultConfig()
	pcfg.Dir, pcfg.Logger = t.TempDir(), slog.New(slog.DiscardHandler)
	st, err := persistence.Open(pcfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	r, err := New(DefaultConfig(), st, nopOutbox{})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

// TestConcurrentFirstLoadsShareOneEntry has many callers touch a session
// that is not in memory at once (the store read runs outside the
// registry's lock): they all get the one entry, so no change is lost to a
// second copy of the record.
func TestConcurrentFirstLoadsShareOneEntry(t *testing.T) {
	r := newTestRegistry(t)

	const callers = 32
	var (
		wg      sync.WaitGroup
		entries [callers]*entry
	)
	for i := range callers {
		wg.Go(func() {
			e, err := r.load("alice", "kitchen")
			require.NoError(t, err)
			entries[i] = e
			require.NoError(t, r.Update("alice", "kitchen", func(_ persistence.Txn, s *Session) (Change, error) {
				s.Phase += "x"
				return Change{Changed: true}, nil
			}))
		})
	}
	wg.Wait()
	for _, e := range entries {
		require.Same(t, entries[0], e)
	}
	s, err := r.read("alice", "kitchen")
	require.NoError(t, err)
	require.Len(t, s.Phase, callers, "every change kept")
	require.Empty(t, r.loading)
}

// TestLateRequestFromOlderConnection: a request that arrives on the
// connection the device has left (a retry sent on both) does not move the
// instance back to it, so that connection's end does not detach a
// session that is live on the newer one.
func TestLateRequestFromOlderConnection(t *testing.T) {
	r := newTestRegistry(t)

	b, err := r.Begin("alice", "kitchen", 1)
	require.NoError(t, err)
	ping := func(conn Conn) {
		t.Helper()
		require.NoError(t, r.Exec("alice", "kitchen", conn, b.Nonce, func(persistence.Txn, *Session) (Change, error) { return Change{}, nil }))
	}
	ping(2) // the device reconnected
	ping(1) // a late copy from the old connection
	r.Disconnected(1)
	e, err := r.load("alice", "kitchen")
	require.NoError(t, err)
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Equal(t, StateActive, e.s.State)
	require.Equal(t, Conn(2), e.conn)
}
