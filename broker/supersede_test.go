package broker_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
)

// Another device begins between a begin and its reply: the broker's
// takeover notice reaches the first device before the reply naming the
// nonce it replaces. The first device still learns it is taken over, and
// hands none of the new instance's notifications to its application.
func TestTakeoverNoticeBeforeOwnBeginReply(t *testing.T) {
	var begins atomic.Int32
	paused, resume := make(chan struct{}), make(chan struct{})
	restore := broker.SetAfterBegin(func(_, session string) {
		if session == "tv" && begins.Add(1) == 1 {
			close(paused)
			<-resume
		}
	})
	b := brokertest.Start(t, brokertest.Config(t))
	t.Cleanup(func() { _ = b.Close(); restore() })
	token := brokertest.Token(t, b, "alice", auth.RoleDevice)
	url := "tcp://" + b.Addrs().MQTT
	first := device(t, url, "alice", token, "tv")
	other := device(t, url, "alice", token, "tv")
	begun := make(chan error, 1)
	go func() { _, err := first.Begin(ctx(t)); begun <- err }()
	<-paused // first's instance is attached; its reply is not out
	_, err := other.Begin(ctx(t))
	require.NoError(t, err)
	close(resume)
	require.NoError(t, <-begun)

	select {
	case e := <-first.Events():
		require.Equal(t, client.EventTakenOver, e)
	case <-time.After(2 * time.Second):
		t.Fatalf("never told: the first device holds nonce %q", first.Nonce())
	}
	require.Empty(t, first.Nonce())
	_, err = b.Notify("alice", "tv", "for the new instance")
	require.NoError(t, err)
	receive(t, other, 1)
	select {
	case n := <-first.Notifications():
		t.Fatalf("the replaced device handed the new instance's seq %d to its application", n.Seq)
	case <-time.After(500 * time.Millisecond):
	}
}
