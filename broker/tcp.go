package broker

import (
	"context"
	"log/slog"
	"net"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener serves MQTT over TCP (or TLS). Unlike mochi's Net listener it
// knows every connection it handed to the server: Close stops accepting,
// closes them all and waits until each has left the server. mochi counts
// clients with a WaitGroup that its Close waits on; a connection accepted
// while it closes would otherwise Add to that group during the Wait.
type tcpListener struct {
	id    string
	ln    net.Listener
	conns connSet
}

func newTCPListener(id string, ln net.Listener) *tcpListener {
	return &tcpListener{id: id, ln: ln}
}

func (l *tcpListener) ID() string              { return l.id }
func (l *tcpListener) Address() string         { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string        { return "tcp" }
func (l *tcpListener) Init(*slog.Logger) error { return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.conns.add(conn) {
			return
		}
		go func() {
			reserveStack32K(0)
			defer l.conns.done(conn)
			_ = establish(l.id, &corkConn{Conn: conn})
		}()
	}
}

// Close (mochi's, at its Close) stops accepting and ends every connection.
func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	_ = l.ln.Close()
	l.conns.stop(context.Background())
	closeClients(l.id)
}
