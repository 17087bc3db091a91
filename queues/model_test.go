package queues_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// model is the queue kept naively in memory: the reference the store must
// agree with after every operation.
type model struct {
	entries []queues.Entry // in seq order
	meta    queues.Meta
}

func (m *model) size() (n int) {
	for _, e := range m.entries {
		n += len(e.Data)
	}
	return n
}

func (m *model) remove(seq uint64) queues.Entry {
	i := slices.IndexFunc(m.entries, func(e queues.Entry) bool { return e.Seq == seq })
	e := m.entries[i]
	m.entries = slices.Delete(m.entries, i, i+1)
	return e
}

func (m *model) drop(seq uint64, r queues.Reason, out *[]queues.Drop) {
	e := m.remove(seq)
	if m.meta.Dropped == nil {
		m.meta.Dropped = map[queues.Reason]uint64{}
	}
	m.meta.Dropped[r]++
	*out = append(*out, queues.Drop{Seq: seq, Reason: r, Key: e.Key})
}

// expired lists the entries expired at now in expiry order, but skip.
func (m *model) expired(now time.Time, skip uint64) []queues.Entry {
	var out []queues.Entry
	for _, e := range m.entries {
		if !e.Expires.IsZero() && !now.Before(e.Expires) && e.Seq != skip {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b queues.Entry) int { return a.Expires.Compare(b.Expires) })
	return out
}

func (m *model) enqueue(msg queues.Message, def queues.Limits, now time.Time) (queues.Entry, []queues.Drop, error) {
	lim := m.meta.EffectiveLimits(def)
	p := cmp.Or(lim.Policy, queues.DropOldest)
	if len(msg.Data) > lim.MaxBytes {
		return queues.Entry{}, nil, queues.ErrTooLarge
	}
	e := queues.Entry{Seq: m.meta.NextSeq, Data: msg.Data, Enqueued: now.UTC(), Key: msg.Key}
	if msg.TTL > 0 {
		e.Expires = now.Add(msg.TTL).UTC()
	}
	var same *queues.Entry
	for i := range m.entries {
		if msg.Key != "" && m.entries[i].Key == msg.Key {
			same = &m.entries[i]
		}
	}
	count, size := len(m.entries)+1, m.size()+len(e.Data)
	skip := uint64(0)
	if same != nil {
		count, size, skip = count-1, size-len(same.Data), same.Seq
	}
	fits := func() bool { return count <= lim.MaxMessages && size <= lim.MaxBytes }
	var expired []queues.Entry
	if !fits() {
		expired = m.expired(now, skip)
		for _, x := range expired {
			count, size = count-1, size-len(x.Data)
		}
	}
	if !fits() && p == queues.Reject {
		return queues.Entry{}, nil, queues.ErrFull
	}
	var drops []queues.Drop
	sameSeq, sameExpired := uint64(0), false
	if same != nil {
		sameSeq, sameExpired = same.Seq, !same.Expires.IsZero() && !now.Before(same.Expires)
	}
	for _, x := range expired {
		m.drop(x.Seq, queues.ReasonExpired, &drops)
	}
	if !fits() && p == queues.DropNewest {
		m.meta.NextSeq++
		if m.meta.Dropped == nil {
			m.meta.Dropped = map[queues.Reason]uint64{}
		}
		m.meta.Dropped[queues.ReasonOverflowNewest]++
		return queues.Entry{}, append(drops, queues.Drop{Seq: e.Seq, Reason: queues.ReasonOverflowNewest, Key: e.Key}), nil
	}
	if sameSeq != 0 {
		m.drop(sameSeq, map[bool]queues.Reason{false: queues.ReasonCollapsed, true: queues.ReasonExpired}[sameExpired], &drops)
	}
	for !fits() {
		x := m.entries[0]
		m.drop(x.Seq, queues.ReasonOverflowOldest, &drops)
		count, size = count-1, size-len(x.Data)
	}
	m.entries = append(m.entries, e)
	m.meta.NextSeq++
	return e, drops, nil
}

// ack removes the entries up to upto: those expired at now as drops,
// the others acknowledged (counted in n).
func (m *model) ack(upto uint64, now time.Time) (n int, drops []queues.Drop, err error) {
	if upto >= m.meta.NextSeq {
		return 0, nil, queues.ErrInvalid
	}
	if upto <= m.meta.Acked {
		return 0, nil, nil
	}
	for len(m.entries) > 0 && m.entries[0].Seq <= upto {
		if e := m.entries[0]; !e.Expires.IsZero() && !now.Before(e.Expires) {
			m.drop(e.Seq, queues.ReasonExpired, &drops)
			continue
		}
		m.entries = m.entries[1:]
		n++
	}
	m.meta.Acked = upto
	return n, drops, nil
}

func (m *model) expire(now time.Time, limit int) []queues.Drop {
	var drops []queues.Drop
	for i, x := range m.expired(now, 0) {
		if i == limit {
			break
		}
		m.drop(x.Seq, queues.ReasonExpired, &drops)
	}
	return drops
}

// TestAgainstModel runs random operations (every policy, collapse keys,
// TTLs, a clock that sometimes goes back, limits changed on the fly) and
// compares the store with the model after each one.
func TestAgainstModel(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			s := openStore(t)
			m := &model{meta: queues.Meta{NextSeq: 1}}
			policies := []queues.Policy{queues.DropOldest, queues.DropNewest, queues.Reject, ""}
			def := limits(1+rng.IntN(8), 15+rng.IntN(100), policies[rng.IntN(len(policies))])
			now := t0
			for step := range 300 {
				now = now.Add(time.Duration(rng.IntN(3000)-300) * time.Millisecond) // sometimes back
				what := ""
				switch op := rng.IntN(20); {
				case op < 11:
					msg := queues.Message{Data: json.RawMessage(`"` + strings.Repeat("x", rng.IntN(20)) + `"`)}
					if rng.IntN(2) == 0 {
						msg.TTL = time.Duration(1+rng.IntN(10_000)) * time.Millisecond
					}
					if rng.IntN(2) == 0 {
						msg.Key = fmt.Sprint("k", rng.IntN(4))
					}
					what = fmt.Sprintf("enqueue %+v", msg)
					wantE, wantDrops, wantErr := m.enqueue(msg, def, now)
					var e queues.Entry
					var drops []queues.Drop
					err := s.Update(func(tx persistence.Txn) error {
						var err error
						e, drops, err = queues.Enqueue(tx, user, sess, msg, def, now)
						return err
					})
					if wantErr != nil {
						require.ErrorIs(t, err, wantErr, what)
					} else {
						require.NoError(t, err, what)
						require.Equal(t, wantE, e, what)
						require.Equal(t, wantDrops, drops, what)
					}
				case op < 14:
					upto := m.meta.Acked + uint64(rng.IntN(6))
					what = fmt.Sprint("ack ", upto)
					want, wantDrops, wantErr := m.ack(upto, now)
					var (
						n     int
						drops []queues.Drop
						more  bool
					)
					err := s.Update(func(tx persistence.Txn) error {
						var err error
						n, drops, more, err = queues.Ack(tx, user, sess, upto, 0, now)
						return err
					})
					if wantErr != nil {
						require.ErrorIs(t, err, wantErr, what)
					} else {
						require.NoError(t, err, what)
						require.Equal(t, want, n, what)
						require.Equal(t, wantDrops, drops, what)
						require.False(t, more)
					}
				case op < 17:
					limit := 1 + rng.IntN(3)
					what = fmt.Sprint("expire ", limit)
					require.Equal(t, m.expire(now, limit), expire(t, s, now, limit), what)
				case op < 18:
					l := limits(1+rng.IntN(8), 15+rng.IntN(100), policies[rng.IntN(len(policies))])
					what = fmt.Sprintf("set limits %+v", l)
					m.meta.Limits = &l
					update(t, s, func(tx persistence.Txn) error { return queues.SetLimits(tx, user, sess, &l) })
				default:
					what = "clear limits"
					m.meta.Limits = nil
					update(t, s, func(tx persistence.Txn) error { return queues.SetLimits(tx, user, sess, nil) })
				}
				what = fmt.Sprintf("step %d: %s", step, what)

				var live []queues.Entry
				for _, e := range m.entries {
					if e.Expires.IsZero() || now.Before(e.Expires) {
						live = append(live, e)
					}
				}
				got := readAll(t, s, now)
				if len(live) == 0 {
					require.Empty(t, got, what)
				} else {
					require.Equal(t, live, got, what)
				}
				meta := getMeta(t, s)
				want := m.meta
				want.Count, want.Bytes = len(m.entries), m.size()
				require.Equal(t, want, meta, what)
				checkInvariants(t, s)
			}
			t.Logf("final meta %+v", getMeta(t, s))
		})
	}
}
