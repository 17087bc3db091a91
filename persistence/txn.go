package persistence

import (
	"bytes"
	"context"
	"errors"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// Txn is the view of the store a part gets inside Update or View. Keys are
// laid out as documented in docs/storage.md. A Txn must not be used after the
// function it was passed to returns.
type Txn interface {
	// Get returns a copy of the value at key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Set writes value at key.
	Set(key, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(key []byte) error
	// Scan calls fn for each key with prefix, in key order, starting at
	// start (or at prefix if start is nil), until fn returns false or an error.
	// The slices are valid only during the call.
	Scan(prefix, start []byte, fn func(key, value []byte) (bool, error)) error
	// ScanReverse is Scan from the last key with prefix backwards.
	ScanReverse(prefix []byte, fn func(key, value []byte) (bool, error)) error
}

// txn notes whether anything was written, so a read-only commit does not
// wait for a sync round, and whether a value may go to the value log, so
// that the commit can tell the sync rounds once Badger has written it.
type txn struct {
	t     *badger.Txn
	wrote bool
	large bool // a value of at least valueLogMin bytes was set
}

func (x *txn) Get(key []byte) ([]byte, error) {
	item, err := x.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (x *txn) Set(key, value []byte) error {
	x.wrote = true
	x.large = x.large || len(value) >= valueLogMin
	return x.t.Set(key, value)
}

func (x *txn) Delete(key []byte) error {
	x.wrote = true
	return x.t.Delete(key)
}

func (x *txn) Scan(prefix, start []byte, fn func(key, value []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false
	it := x.t.NewIterator(opts)
	defer it.Close()
	if start == nil {
		start = prefix
	}
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		if more, err := visit(it.Item(), fn); err != nil || !more {
			return err
		}
	}
	return nil
}

func (x *txn) ScanReverse(prefix []byte, fn func(key, value []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Reverse = true
	opts.PrefetchValues = false
	it := x.t.NewIterator(opts)
	defer it.Close()
	// In reverse, Seek lands on the largest key <= the seek key: seek to the
	// first key after the prefix range and step off it if it exists.
	if end := prefixEnd(prefix); end == nil {
		it.Rewind()
	} else {
		it.Seek(end)
		if it.Valid() && bytes.Equal(it.Item().Key(), end) {
			it.Next()
		}
	}
	for ; it.ValidForPrefix(prefix); it.Next() {
		if more, err := visit(it.Item(), fn); err != nil || !more {
			return err
		}
	}
	return nil
}

// prefixEnd is the smallest key greater than every key with prefix, or nil
// if there is none (the prefix is all 0xff).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte{}, prefix...)
	for len(end) > 0 && end[len(end)-1] == 0xff {
		end = end[:len(end)-1]
	}
	if len(end) == 0 {
		return nil
	}
	end[len(end)-1]++
	return end
}

func visit(item *badger.Item, fn func(key, value []byte) (bool, error)) (bool, error) {
	var more bool
	err := item.Value(func(v []byte) error {
		var err error
		more, err = fn(item.Key(), v)
		return err
	})
	return more, err
}

// badgerLogger sends Badger's messages to slog; its chatty info lines are debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.debug(f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.debug(f, a) }

// debug formats only when debug logging is on: Badger logs on every write batch.
func (b badgerLogger) debug(f string, a []any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(sprintf(f, a...))
	}
}
