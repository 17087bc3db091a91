package broker

import (
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// countedConn counts the writes that reach a real connection.
type countedConn struct {
	net.Conn
	writes int
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes++
	return c.Conn.Write(p)
}

// tcpPair is a connected loopback TCP pair.
func tcpPair(t *testing.T) (near, far net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	near, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	far = <-accepted
	require.NotNil(t, far)
	t.Cleanup(func() { near.Close(); far.Close() })
	return near, far
}

func TestCorkConnSendsHeldWritesInOrderAtLastUncork(t *testing.T) {
	near, far := tcpPair(t)
	counted := &countedConn{Conn: near}
	c := &corkConn{Conn: counted}

	write := func(s string) {
		n, err := c.Write([]byte(s))
		require.NoError(t, err)
		require.Equal(t, len(s), n)
	}
	write("a") // not corked: sent at once
	require.Equal(t, 1, counted.writes)
	c.cork()
	write("b")
	c.cork()
	write("c")
	c.uncork() // an inner cork: still held
	write("d")
	require.Equal(t, 1, counted.writes)
	c.uncork()
	require.Equal(t, 2, counted.writes, "held writes leave in one write")
	c.cork()
	c.uncork() // nothing held: nothing written
	require.Equal(t, 2, counted.writes)
	write("e")

	got := make([]byte, 5)
	_, err := io.ReadFull(far, got)
	require.NoError(t, err)
	require.Equal(t, "abcde", string(got))
}

func TestCorkConnFailsEveryWriteAfterAFailedOne(t *testing.T) {
	near, _ := tcpPair(t)
	counted := &countedConn{Conn: near}
	c := &corkConn{Conn: counted}
	require.NoError(t, near.Close())

	_, err := c.Write([]byte("lost"))
	require.ErrorIs(t, err, net.ErrClosed)
	c.cork()
	_, err2 := c.Write([]byte("held"))
	require.Equal(t, err, err2, "a corked write reports the earlier failure")
	c.uncork()
	require.Equal(t, 1, counted.writes, "nothing is written after a failed write")
}
