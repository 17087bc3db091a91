// Package pahoconn gives paho clients a read buffer on plain TCP.
//
// paho reads every packet straight from its connection: the first byte,
// then the remaining length a byte at a time, then the body, so a small
// packet costs three or more read system calls. Through a buffer one read
// takes in every packet that has arrived. (TLS and WebSocket connections
// buffer by themselves; paho opens those as it always does.)
package pahoconn

import (
	"bufio"
	"net"
	"net/url"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// readBuffer holds a burst of small packets, or a few of the broker's
// corked writes, per read.
const readBuffer = 4096

// Use makes opts open broker URLs of scheme tcp:// or mqtt:// with Open;
// other schemes stay with paho's own connection code. Call it after
// AddBroker.
func Use(opts *paho.ClientOptions) {
	for _, u := range opts.Servers {
		if !plainTCP(u) {
			return // paho calls one function for every server: keep its own
		}
	}
	opts.SetCustomOpenConnectionFn(Open)
}

func plainTCP(u *url.URL) bool { return u.Scheme == "tcp" || u.Scheme == "mqtt" }

// Open dials uri's host as paho does for tcp:// (its dialer, through a
// proxy named by the environment's ALL_PROXY / NO_PROXY, if any) and
// returns the connection with a read buffer.
func Open(uri *url.URL, opts paho.ClientOptions) (net.Conn, error) {
	dialer := opts.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: 30 * time.Second}
	}
	conn, err := proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBuffer)}, nil
}

// bufferedConn is a connection whose reads go through a buffer. Only
// paho's one reading goroutine calls Read.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
