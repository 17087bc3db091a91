package broker

import (
	"context"
	"net"
	"sync"
)

// connSet is what a listener hands to mochi: every connection from the
// moment it is accepted until mochi is done with it. mochi counts clients
// only once their CONNECT is read, and its Close must not run while a
// connection it has not counted yet is being established (the two race
// inside mochi), so the broker stops a listener's connections itself
// first: stop refuses new ones, closes the rest and waits for them.
type connSet struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// add registers c before it is handed to mochi; false (and c closed) once
// the set is stopped. Every c added must be passed to done.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// done is called when mochi has returned from c.
func (s *connSet) done(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// stop refuses new connections, closes the open ones and waits until
// mochi has returned from each, or ctx ends. It reports whether all did.
func (s *connSet) stop(ctx context.Context) bool {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	all := make(chan struct{})
	go func() { s.wg.Wait(); close(all) }()
	select {
	case <-all:
		return true
	case <-ctx.Done():
		return false
	}
}
