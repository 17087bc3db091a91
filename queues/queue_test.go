package queues_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

func TestEmptyQueue(t *testing.T) {
	s := openStore(t)
	require.Equal(t, queues.Meta{NextSeq: 1}, getMeta(t, s))
	require.Empty(t, readAll(t, s, t0))
	require.Empty(t, dump(t, s), "reading writes nothing")
}

func TestEnqueueStoresAndReadsBack(t *testing.T) {
	s := openStore(t)
	def := queues.DefaultLimits()
	// White space is compacted; <, >, & and U+2028 are kept as they are.
	e1, drops := enqueue(t, s, queues.Message{Data: json.RawMessage(" {\"a\" : [1, 2],\n \"h\": \"<b>&\u2028\"} ")}, def, t0)
	require.Empty(t, drops)
	require.Equal(t, queues.Entry{Seq: 1, Data: json.RawMessage("{\"a\":[1,2],\"h\":\"<b>&\u2028\"}"), Enqueued: t0}, e1)
	e2, _ := enqueue(t, s, queues.Message{Data: json.RawMessage(`7`), TTL: time.Minute, Key: "score/π"}, def, t0.Add(time.Second))
	require.Equal(t, queues.Entry{Seq: 2, Data: json.RawMessage(`7`), Enqueued: t0.Add(time.Second),
		Expires: t0.Add(time.Second + time.Minute), Key: "score/π"}, e2)

	require.Equal(t, []queues.Entry{e1, e2}, readAll(t, s, t0))
	m := getMeta(t, s)
	require.Equal(t, queues.Meta{NextSeq: 3, Count: 2, Bytes: len(e1.Data) + len(e2.Data)}, m)
	checkInvariants(t, s)

	// An entry's JSON is the notify payload's shape.
	j, err := json.Marshal(e2)
	require.NoError(t, err)
	require.JSONEq(t, `{"seq":2,"data":7,"ts":"2026-03-01T12:00:01Z","expires":"2026-03-01T12:01:01Z","key":"score/π"}`, string(j))
}

func TestEnqueueConvertsTimesToUTC(t *testing.T) {
	s := openStore(t)
	local := t0.In(time.FixedZone("CET", 3600))
	e, _ := enqueue(t, s, queues.Message{Data: json.RawMessage(`1`), TTL: time.Hour}, queues.DefaultLimits(), local)
	require.Equal(t, time.UTC, e.Enqueued.Location())
	require.Equal(t, []queues.Entry{e}, readAll(t, s, t0))
}

// TestPolicies fills a queue of 3 with 5 messages under each policy.
func TestPolicies(t *testing.T) {
	tests := []struct {
		name      string
		lim       queues.Limits
		wantSeqs  []uint64 // left in the queue
		wantDrops []queues.Drop
		wantNext  uint64
		wantFull  int // enqueues refused with ErrFull
	}{
		{
			name: "drop_oldest keeps the newest N", lim: limits(3, 1<<20, queues.DropOldest),
			wantSeqs:  []uint64{3, 4, 5},
			wantDrops: []queues.Drop{{Seq: 1, Reason: queues.ReasonOverflowOldest}, {Seq: 2, Reason: queues.ReasonOverflowOldest}},
			wantNext:  6,
		},
		{
			name: "empty policy is drop_oldest", lim: limits(3, 1<<20, ""),
			wantSeqs:  []uint64{3, 4, 5},
			wantDrops: []queues.Drop{{Seq: 1, Reason: queues.ReasonOverflowOldest}, {Seq: 2, Reason: queues.ReasonOverflowOldest}},
			wantNext:  6,
		},
		{
			name: "drop_newest keeps the oldest N", lim: limits(3, 1<<20, queues.DropNewest),
			wantSeqs:  []uint64{1, 2, 3},
			wantDrops: []queues.Drop{{Seq: 4, Reason: queues.ReasonOverflowNewest}, {Seq: 5, Reason: queues.ReasonOverflowNewest}},
			wantNext:  6, // dropped messages used up their seqs
		},
		{
			name: "reject refuses and keeps the oldest N", lim: limits(3, 1<<20, queues.Reject),
			wantSeqs: []uint64{1, 2, 3},
			wantNext: 4, // refused messages got no seq
			wantFull: 2,
		},
		{
			name: "limit 1 keeps only the latest", lim: limits(1, 1<<20, queues.DropOldest),
			wantSeqs: []uint64{5},
			wantDrops: []queues.Drop{{Seq: 1, Reason: queues.ReasonOverflowOldest}, {Seq: 2, Reason: queues.ReasonOverflowOldest},
				{Seq: 3, Reason: queues.ReasonOverflowOldest}, {Seq: 4, Reason: queues.ReasonOverflowOldest}},
			wantNext: 6,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			var drops []queues.Drop
			full := 0
			for i := 1; i <= 5; i++ {
				var got queues.Entry
				var d []queues.Drop
				err := s.Update(func(tx persistence.Txn) error {
					var err error
					got, d, err = queues.Enqueue(tx, user, sess, msg(i), tc.lim, t0)
					return err
				})
				if errors.Is(err, queues.ErrFull) {
					full++
					continue
				}
				require.NoError(t, err)
				if len(d) > 0 && d[len(d)-1].Reason == queues.ReasonOverflowNewest {
					require.Zero(t, got, "a dropped incoming message returns no entry")
				} else {
					require.Equal(t, msg(i).Data, got.Data)
				}
				drops = append(drops, d...)
			}
			entries := readAll(t, s, t0)
			require.Equal(t, tc.wantSeqs, seqs(entries))
			for _, e := range entries {
				require.Equal(t, msg(int(e.Seq)).Data, e.Data, "entry %d holds its own message", e.Seq)
			}
			require.Equal(t, tc.wantDrops, drops)
			require.Equal(t, tc.wantFull, full)
			m := getMeta(t, s)
			require.Equal(t, tc.wantNext, m.NextSeq)
			if len(tc.wantDrops) > 0 {
				require.Equal(t, map[queues.Reason]uint64{tc.wantDrops[0].Reason: uint64(len(tc.wantDrops))}, m.Dropped)
			} else {
				require.Empty(t, m.Dropped)
			}
			checkInvariants(t, s)
		})
	}
}

// TestRejectChangesNothing compares every stored byte before and after a
// refused message, for a full count, full bytes, and a collapse that would
// not make room.
func TestRejectChangesNothing(t *testing.T) {
	s := openStore(t)
	lim := limits(3, 100, queues.Reject)
	enqueue(t, s, sized(10), lim, t0)
	enqueue(t, s, queues.Message{Data: json.RawMessage(`"k"`), Key: "k", TTL: time.Hour}, lim, t0)
	enqueue(t, s, sized(50), lim, t0)
	before, meta, entries := dump(t, s), getMeta(t, s), readAll(t, s, t0)

	for name, m := range map[string]queues.Message{
		"count":                  msg(9),
		"count with a new key":   {Data: json.RawMessage(`1`), Key: "other"},
		"bytes after a collapse": {Data: sized(90).Data, Key: "k"},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.Update(func(tx persistence.Txn) error {
				e, drops, err := queues.Enqueue(tx, user, sess, m, lim, t0.Add(time.Minute))
				require.Zero(t, e)
				require.Nil(t, drops)
				return err
			})
			require.ErrorIs(t, err, queues.ErrFull)
			require.ErrorContains(t, err, "queues: queue full: 3 messages, 63 bytes queued; the limits are 3 messages, 100 bytes")
			require.Equal(t, before, dump(t, s))
			require.Equal(t, meta, getMeta(t, s))
			require.Equal(t, entries, readAll(t, s, t0))
		})
	}

	// Even when the caller commits after ErrFull, nothing was written.
	update(t, s, func(tx persistence.Txn) error {
		_, _, err := queues.Enqueue(tx, user, sess, msg(9), lim, t0)
		require.ErrorIs(t, err, queues.ErrFull)
		return nil
	})
	require.Equal(t, before, dump(t, s))

	// A collapse that makes room is accepted: the count does not grow.
	e, drops := enqueue(t, s, queues.Message{Data: json.RawMessage(`"k2"`), Key: "k"}, lim, t0)
	require.Equal(t, uint64(4), e.Seq)
	require.Equal(t, []queues.Drop{{Seq: 2, Reason: queues.ReasonCollapsed, Key: "k"}}, drops)
	require.Equal(t, []uint64{1, 3, 4}, seqs(readAll(t, s, t0)))
	checkInvariants(t, s)
}

func TestMaxBytes(t *testing.T) {
	t.Run("drop_oldest drops as many as needed", func(t *testing.T) {
		s := openStore(t)
		lim := limits(100, 100, queues.DropOldest)
		for range 3 {
			enqueue(t, s, sized(30), lim, t0) // 90 bytes
		}
		_, drops := enqueue(t, s, sized(10), lim, t0) // exactly 100: fits
		require.Empty(t, drops)
		_, drops = enqueue(t, s, sized(65), lim, t0) // needs 1, 2 and 3 gone: 10+65 = 75
		require.Equal(t, []uint64{1, 2, 3}, dropSeqs(drops))
		require.Equal(t, []uint64{4, 5}, seqs(readAll(t, s, t0)))
		_, drops = enqueue(t, s, sized(100), lim, t0) // exactly the limit, alone
		require.Equal(t, []uint64{4, 5}, dropSeqs(drops))
		require.Equal(t, []uint64{6}, seqs(readAll(t, s, t0)))
		require.Equal(t, 100, getMeta(t, s).Bytes)
		checkInvariants(t, s)
	})
	t.Run("drop_newest", func(t *testing.T) {
		s := openStore(t)
		lim := limits(100, 100, queues.DropNewest)
		enqueue(t, s, sized(60), lim, t0)
		e, drops := enqueue(t, s, sized(41), lim, t0)
		require.Zero(t, e)
		require.Equal(t, []queues.Drop{{Seq: 2, Reason: queues.ReasonOverflowNewest}}, drops)
		e, drops = enqueue(t, s, sized(40), lim, t0)
		require.Equal(t, uint64(3), e.Seq)
		require.Empty(t, drops)
		require.Equal(t, []uint64{1, 3}, seqs(readAll(t, s, t0)))
		checkInvariants(t, s)
	})
	t.Run("reject", func(t *testing.T) {
		s := openStore(t)
		lim := limits(100, 100, queues.Reject)
		enqueue(t, s, sized(60), lim, t0)
		err := s.Update(func(tx persistence.Txn) error {
			_, _, err := queues.Enqueue(tx, user, sess, sized(41), lim, t0)
			return err
		})
		require.ErrorIs(t, err, queues.ErrFull)
		require.Equal(t, queues.Meta{NextSeq: 2, Count: 1, Bytes: 60}, getMeta(t, s))
	})
	t.Run("one message above the limit is too large under every policy", func(t *testing.T) {
		for _, p := range []queues.Policy{queues.DropOldest, queues.DropNewest, queues.Reject} {
			s := openStore(t)
			lim := limits(100, 100, p)
			enqueue(t, s, sized(10), lim, t0)
			before := dump(t, s)
			err := s.Update(func(tx persistence.Txn) error {
				_, _, err := queues.Enqueue(tx, user, sess, sized(101), lim, t0)
				return err
			})
			require.ErrorIs(t, err, queues.ErrTooLarge, "policy %s", p)
			require.ErrorContains(t, err, "data is 101 bytes; the queue holds at most 100")
			require.Equal(t, before, dump(t, s), "policy %s", p)
		}
	})
	t.Run("bytes are counted compacted", func(t *testing.T) {
		s := openStore(t)
		lim := limits(100, 5, queues.DropOldest)
		e, _ := enqueue(t, s, queues.Message{Data: json.RawMessage(" [ 1 , 2 ] ")}, lim, t0)
		require.Equal(t, json.RawMessage(`[1,2]`), e.Data)
		require.Equal(t, 5, getMeta(t, s).Bytes)
	})
}

func TestCollapse(t *testing.T) {
	s := openStore(t)
	def := queues.DefaultLimits()
	key := func(data, k string) queues.Message { return queues.Message{Data: json.RawMessage(data), Key: k} }

	enqueue(t, s, key(`"score 1"`, "score"), def, t0)
	enqueue(t, s, key(`"chat"`, ""), def, t0)
	enqueue(t, s, key(`"other"`, "other"), def, t0)
	e, drops := enqueue(t, s, key(`"score 2"`, "score"), def, t0)
	require.Equal(t, uint64(4), e.Seq, "the newer message gets a new seq at the tail")
	require.Equal(t, []queues.Drop{{Seq: 1, Reason: queues.ReasonCollapsed, Key: "score"}}, drops)
	entries := readAll(t, s, t0)
	require.Equal(t, []uint64{2, 3, 4}, seqs(entries))
	require.Equal(t, json.RawMessage(`"score 2"`), entries[2].Data)
	checkInvariants(t, s)

	_, drops = enqueue(t, s, key(`"score 3"`, "score"), def, t0)
	require.Equal(t, []queues.Drop{{Seq: 4, Reason: queues.ReasonCollapsed, Key: "score"}}, drops)
	require.Equal(t, map[queues.Reason]uint64{queues.ReasonCollapsed: 2}, getMeta(t, s).Dropped)

	// Keys are exact: a prefix or a different case is another key.
	for _, k := range []string{"scor", "Score", "score "} {
		_, drops = enqueue(t, s, key(`0`, k), def, t0)
		require.Empty(t, drops, "key %q", k)
	}

	// Once the keyed entry is acknowledged, the key collapses nothing.
	update(t, s, func(tx persistence.Txn) error {
		_, _, _, err := queues.Ack(tx, user, sess, 5, 0, time.Now())
		return err
	})
	_, drops = enqueue(t, s, key(`"score 4"`, "score"), def, t0)
	require.Empty(t, drops)
	checkInvariants(t, s)
}

func TestCollapseWithDropNewest(t *testing.T) {
	s := openStore(t)
	lim := limits(2, 10, queues.DropNewest)
	enqueue(t, s, queues.Message{Data: json.RawMessage(`1`), Key: "k"}, lim, t0)
	enqueue(t, s, queues.Message{Data: json.RawMessage(`2`)}, lim, t0)

	// Fits once the same-key entry is gone: replaced.
	e, drops := enqueue(t, s, queues.Message{Data: json.RawMessage(`333`), Key: "k"}, lim, t0)
	require.Equal(t, uint64(3), e.Seq)
	require.Equal(t, []queues.Drop{{Seq: 1, Reason: queues.ReasonCollapsed, Key: "k"}}, drops)

	// Does not fit even then: the queued one stays, the incoming one is dropped.
	e, drops = enqueue(t, s, queues.Message{Data: json.RawMessage(`"12345678"`), Key: "k"}, lim, t0)
	require.Zero(t, e)
	require.Equal(t, []queues.Drop{{Seq: 4, Reason: queues.ReasonOverflowNewest, Key: "k"}}, drops)
	entries := readAll(t, s, t0)
	require.Equal(t, []uint64{2, 3}, seqs(entries))
	require.Equal(t, json.RawMessage(`333`), entries[1].Data)
	checkInvariants(t, s)
}

// TestSeqNeverReused mixes every way an entry leaves the queue, closes and
// reopens the store, and checks that seqs only ever grow.
func TestSeqNeverReused(t *testing.T) {
	dir := t.TempDir()
	s, err := persistence.Open(storeConfig(dir))
	require.NoError(t, err)
	defer func() { _ = s.Close() }()
	lim := limits(3, 1<<20, queues.DropOldest)
	var seen []uint64
	note := func(e queues.Entry, drops []queues.Drop) {
		if e.Seq != 0 {
			seen = append(seen, e.Seq)
		}
		for _, d := range drops {
			if d.Reason == queues.ReasonOverflowNewest {
				seen = append(seen, d.Seq)
			}
		}
	}
	step := func(i int) {
		switch i % 5 {
		case 0, 1: // overflow drops once the queue is full
			note(enqueue(t, s, msg(i), lim, t0))
		case 2: // collapse
			note(enqueue(t, s, queues.Message{Data: msg(i).Data, Key: "k"}, lim, t0))
		case 3: // ack everything
			update(t, s, func(tx persistence.Txn) error {
				m, err := queues.GetMeta(tx, user, sess)
				require.NoError(t, err)
				_, _, _, err = queues.Ack(tx, user, sess, m.NextSeq-1, 0, time.Now())
				return err
			})
		case 4: // expiry
			note(enqueue(t, s, queues.Message{Data: msg(i).Data, TTL: time.Second}, lim, t0))
			update(t, s, func(tx persistence.Txn) error {
				_, err := queues.Expire(tx, user, sess, t0.Add(time.Hour), 0)
				return err
			})
		}
	}
	for i := range 40 {
		step(i)
	}
	require.NoError(t, s.Close())
	s, err = persistence.Open(storeConfig(dir))
	require.NoError(t, err)
	for i := 40; i < 60; i++ {
		step(i)
	}
	// drop_newest after the reopen: a dropped message uses up a seq too.
	lim.Policy = queues.DropNewest
	for i := range 5 {
		note(enqueue(t, s, msg(i), lim, t0))
	}
	for i := 1; i < len(seen); i++ {
		require.Equal(t, seen[i-1]+1, seen[i], "seqs are assigned one after another, never reused: %v", seen)
	}
	require.Equal(t, seen[len(seen)-1]+1, getMeta(t, s).NextSeq)
	checkInvariants(t, s)
}

func TestSetLimits(t *testing.T) {
	s := openStore(t)
	def := limits(10, 1<<20, queues.DropOldest)
	own := limits(2, 1<<20, queues.DropNewest)
	update(t, s, func(tx persistence.Txn) error { return queues.SetLimits(tx, user, sess, &own) })
	own.MaxMessages = 99 // the stored limits do not alias the argument
	m := getMeta(t, s)
	require.Equal(t, &queues.Limits{MaxMessages: 2, MaxBytes: 1 << 20, Policy: queues.DropNewest}, m.Limits)
	require.Equal(t, *m.Limits, m.EffectiveLimits(def))
	require.Equal(t, uint64(1), m.NextSeq)

	for i := range 3 {
		enqueue(t, s, msg(i), def, t0)
	}
	require.Equal(t, []uint64{1, 2}, seqs(readAll(t, s, t0)), "the queue's own limits win over the default")

	update(t, s, func(tx persistence.Txn) error { return queues.SetLimits(tx, user, sess, nil) })
	require.Nil(t, getMeta(t, s).Limits)
	require.Equal(t, def, getMeta(t, s).EffectiveLimits(def))

	bad := limits(0, 1, queues.Reject)
	err := s.Update(func(tx persistence.Txn) error { return queues.SetLimits(tx, user, sess, &bad) })
	require.ErrorIs(t, err, queues.ErrInvalid)
}

// TestLoweredLimitsShrinkInBatches: a queue above lowered limits loses at
// most MaxBatch entries per Enqueue, so no commit grows without bound.
func TestLoweredLimitsShrinkInBatches(t *testing.T) {
	s := openStore(t)
	n := queues.MaxBatch + 500
	big := limits(n, 1<<30, queues.DropOldest)
	update(t, s, func(tx persistence.Txn) error {
		for i := range n {
			if _, _, err := queues.Enqueue(tx, user, sess, msg(i), big, t0); err != nil {
				return err
			}
		}
		return nil
	})
	small := limits(1, 1<<30, queues.DropOldest)
	_, drops := enqueue(t, s, msg(0), small, t0)
	require.Len(t, drops, queues.MaxBatch)
	require.Equal(t, 501, getMeta(t, s).Count, "still above the limit: shrinks on the next enqueue")
	_, drops = enqueue(t, s, msg(0), small, t0)
	require.Len(t, drops, 501)
	require.Equal(t, []uint64{uint64(n + 2)}, seqs(readAll(t, s, t0)))
	checkInvariants(t, s)
}

func TestInvalidArguments(t *testing.T) {
	s := openStore(t)
	def := queues.DefaultLimits()
	try := func(fn func(tx persistence.Txn) error) error {
		return s.Update(fn)
	}
	for _, name := range []string{"", "a/b", "a+b", "#", string(make([]byte, 65))} {
		err := try(func(tx persistence.Txn) error {
			_, _, err := queues.Enqueue(tx, name, sess, msg(1), def, t0)
			return err
		})
		require.ErrorIs(t, err, queues.ErrInvalid, "user %q", name)
		err = try(func(tx persistence.Txn) error {
			_, err := queues.Read(tx, user, name, 0, 1, t0)
			return err
		})
		require.ErrorIs(t, err, queues.ErrInvalid, "session %q", name)
	}
	for _, l := range []queues.Limits{limits(0, 1, ""), limits(1, 0, ""), limits(-1, 1, ""), limits(1, 1, "keep_last")} {
		require.ErrorIs(t, l.Validate(), queues.ErrInvalid, "%+v", l)
		err := try(func(tx persistence.Txn) error {
			_, _, err := queues.Enqueue(tx, user, sess, msg(1), l, t0)
			return err
		})
		require.ErrorIs(t, err, queues.ErrInvalid, "%+v", l)
	}
	require.NoError(t, queues.DefaultLimits().Validate())
	for name, m := range map[string]queues.Message{
		"no data":       {},
		"null data":     {Data: json.RawMessage(` null `)},
		"not json":      {Data: json.RawMessage(`{`)},
		"two values":    {Data: json.RawMessage(`1 2`)},
		"bad utf-8":     {Data: json.RawMessage("\"\xff\"")},
		"negative ttl":  {Data: json.RawMessage(`1`), TTL: -1},
		"ttl too long":  {Data: json.RawMessage(`1`), TTL: queues.MaxTTL + 1},
		"long key":      {Data: json.RawMessage(`1`), Key: string(make([]byte, queues.MaxKeyLen+1))},
		"control key":   {Data: json.RawMessage(`1`), Key: "a\nb"},
		"bad utf-8 key": {Data: json.RawMessage(`1`), Key: "\xff"},
	} {
		err := try(func(tx persistence.Txn) error {
			_, _, err := queues.Enqueue(tx, user, sess, m, def, t0)
			return err
		})
		require.ErrorIs(t, err, queues.ErrBadMessage, name)
		require.ErrorIs(t, m.Validate(), queues.ErrBadMessage, name)
	}
	require.Empty(t, dump(t, s), "nothing invalid was stored")
}

func TestCorruptMetaIsReported(t *testing.T) {
	s := openStore(t)
	for _, v := range []string{`{`, `{"next_seq":0}`, `{"next_seq":3,"acked":3}`, `{"next_seq":3,"count":-1}`} {
		update(t, s, func(tx persistence.Txn) error {
			return tx.Set(persistence.Key("queue", user, sess, "meta"), []byte(v))
		})
		err := s.View(func(tx persistence.Txn) error {
			_, err := queues.GetMeta(tx, user, sess)
			return err
		})
		require.ErrorIs(t, err, queues.ErrCorrupt, v)
	}
}

// A Run enqueues many messages in one transaction with one state write,
// and ends up where the same Enqueues one by one would: refusals change
// nothing, collapses and overflow drops apply within the run.
func TestRunMatchesEnqueues(t *testing.T) {
	lim := limits(3, 1000, queues.DropOldest)
	keyed := func(n int, key string) queues.Message { m := msg(n); m.Key = key; return m }
	ms := []queues.Message{msg(1), keyed(2, "k"), sized(2000), keyed(3, "k"), msg(4), msg(5)}

	one := openStore(t)
	for _, m := range ms {
		require.NoError(t, one.Update(func(tx persistence.Txn) error {
			_, _, err := queues.Enqueue(tx, user, sess, m, lim, t0)
			if errors.Is(err, queues.ErrTooLarge) {
				return nil
			}
			return err
		}))
	}

	run := openStore(t)
	var drops []queues.Drop
	update(t, run, func(tx persistence.Txn) error {
		r, err := queues.NewRun(tx, user, sess)
		if err != nil {
			return err
		}
		for i, m := range ms {
			_, d, err := r.Enqueue(m, lim, t0)
			if i == 2 {
				require.ErrorIs(t, err, queues.ErrTooLarge)
				continue
			}
			require.NoError(t, err)
			drops = append(drops, d...)
		}
		return r.Close()
	})
	require.Equal(t, []queues.Drop{{Seq: 2, Reason: queues.ReasonCollapsed, Key: "k"}, {Seq: 1, Reason: queues.ReasonOverflowOldest}}, drops)
	require.Equal(t, readAll(t, one, t0), readAll(t, run, t0))
	require.Equal(t, getMeta(t, one), getMeta(t, run))
	checkInvariants(t, run)
}
