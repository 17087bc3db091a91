package broker

import (
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fullListener fails its first Accepts as a process out of file
// descriptors does (EMFILE), then accepts from the real listener.
type fullListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *fullListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestTCPListenerOutlivesFailedAccepts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	full := &fullListener{Listener: ln}
	full.fails.Store(3)
	l := newTCPListener("mqtt", full, time.Minute, slog.New(slog.DiscardHandler))
	established := make(chan struct{}, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		l.Serve(func(string, net.Conn) error { established <- struct{}{}; return nil })
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	select {
	case <-established:
	case <-served:
		t.Fatal("Serve returned after a failed accept: the MQTT port would accept nothing more")
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was never established")
	}
	require.Less(t, full.fails.Load(), int32(0), "every failure was retried")
	_ = ln.Close()
	select {
	case <-served: // a closed listener still ends Serve
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return once its listener was closed")
	}
}
