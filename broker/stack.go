package broker

// A goroutine's stack starts small (at the average the runtime has seen)
// and is copied to one twice its size whenever a call would overflow it.
// mochi's frames hold packets by value, 800 bytes each, so a connection's
// read goroutine reaches 32 KiB while it handles CONNECT, SUBSCRIBE and the
// first publishes: a copy at every doubling, a sixth of the broker's CPU in
// a connect storm. A drain goroutine (started for each burst of a
// connection's publishes) and a pump goroutine (for each burst of a
// session's deliveries) need 16 KiB for a Badger transaction.
//
// Calling a function whose frame needs nearly n bytes first thing, while
// almost nothing is on the stack, grows the stack to n in one step and
// copies a few hundred bytes. It costs no memory the goroutine would not
// have taken anyway: the collector halves a stack that is four times larger
// than it uses, as before.

// reserveStack32K grows the calling goroutine's stack to 32 KiB; for a
// connection's read goroutine.
//
//go:noinline
func reserveStack32K(i int) byte {
	var b [28 << 10]byte // too large for 16 KiB
	b[i] = 1
	return b[i+1]
}

// reserveStack16K grows the calling goroutine's stack to 16 KiB; for a
// drain or pump goroutine.
//
//go:noinline
func reserveStack16K(i int) byte {
	var b [12 << 10]byte // too large for 8 KiB
	b[i] = 1
	return b[i+1]
}
