package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener serves MQTT over TCP (or TLS). Unlike mochi's Net listener it
// knows every connection it handed to the server: Close stops accepting,
// closes them all and waits until each has left the server. mochi counts
// clients with a WaitGroup that its Close waits on; a connection accepted
// while it closes would otherwise Add to that group during the Wait.
type tcpListener struct {
	id             string
	ln             net.Listener
	connectTimeout time.Duration
	log            *slog.Logger
	conns          connSet
}

func newTCPListener(id string, ln net.Listener, connectTimeout time.Duration, log *slog.Logger) *tcpListener {
	return &tcpListener{id: id, ln: ln, connectTimeout: connectTimeout, log: log}
}

func (l *tcpListener) ID() string              { return l.id }
func (l *tcpListener) Address() string         { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string        { return "tcp" }
func (l *tcpListener) Init(*slog.Logger) error { return nil }

// Serve accepts until the listener is closed. A failed accept (the
// process out of file descriptors, say) is retried after a pause that
// grows to a second while the failures go on, as net/http does: one
// EMFILE must not end the MQTT port for good.
func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	var pause time.Duration
	for {
		conn, err := l.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "error", err, "in", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		if !l.conns.add(conn) {
			return
		}
		go func() {
			reserveStack32K(0)
			defer l.conns.done(conn)
			_ = establish(l.id, &corkConn{Conn: connectBy(conn, l.connectTimeout)})
		}()
	}
}

// connectBy gives c until timeout from now to send its CONNECT: mochi sets
// a connection's deadline only once it has read one (from the keepalive it
// asks for), so a socket that never speaks would otherwise stay open for
// good, outside MaxClients.
func connectBy(c net.Conn, timeout time.Duration) net.Conn {
	_ = c.SetDeadline(time.Now().Add(timeout))
	return c
}

// Close (mochi's, at its Close) stops accepting and ends every connection.
func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	_ = l.ln.Close()
	l.conns.stop(context.Background())
	closeClients(l.id)
}
