package broker

import (
	"net"
	"sync"
)

// corkConn is a connection whose writes can be gathered: between cork and
// uncork, writes are kept in order and sent in one write at uncork. An ack
// queue corks its connection around a run's PUBACKs, which mochi would
// otherwise send with one system call each. Bytes leave in the order they
// were written, corked or not. After a failed write (which may have sent
// part of a packet) every later write fails with the same error.
type corkConn struct {
	net.Conn
	mu    sync.Mutex
	corks int
	held  []byte
	err   error // the first failed write
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corks > 0 {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	c.err = err
	return n, err
}

// cork holds writes until the matching uncork.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// uncork sends what was held once no cork is left.
func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corks--; c.corks > 0 || len(c.held) == 0 || c.err != nil {
		return
	}
	_, c.err = c.Conn.Write(c.held)
	c.held = nil // an idle connection keeps no buffer
}
