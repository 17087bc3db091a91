package main

import (
	"io"
	"net"
	"sync"
)

// link is one device's own path to the broker: a loopback listener that
// forwards to the broker, so that a crash can kill the device's socket
// the way a dead device does (the broker reads EOF, no DISCONNECT, and
// publishes the will). The client SDK has no hook into its socket.
type link struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

// newLink listens on a free loopback port and forwards to target.
func newLink(target string) (*link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &link{ln: ln, target: target}
	go l.accept()
	return l, nil
}

// Addr is where the device dials.
func (l *link) Addr() string { return l.ln.Addr().String() }

func (l *link) accept() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", l.target)
		if err != nil { // the broker is down: the device sees its connection fail
			in.Close()
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		l.conns = append(l.conns, in, out)
		l.mu.Unlock()
		go pipe(out, in)
		go pipe(in, out)
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut kills the device's sockets and stops accepting: the device cannot
// reconnect through this link again.
func (l *link) cut() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	l.ln.Close()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST: nothing more leaves, as when a device loses power
		}
		c.Close()
	}
}
