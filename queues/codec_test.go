package queues_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
)

// TestJSONRowsOfEarlierReleasesStillRead writes a queue's rows as JSON, as
// releases before the binary rows did, and uses the queue: every entry is
// read back as written, acks and enqueues go on from the stored state, and
// the rows they rewrite are binary.
func TestJSONRowsOfEarlierReleasesStillRead(t *testing.T) {
	s := openStore(t)
	meta := persistence.Key("queue", user, sess, "meta")
	entry := func(seq uint64) []byte {
		return persistence.Uint64Key(persistence.Prefix("queue", user, sess, "e"), seq)
	}
	update(t, s, func(tx persistence.Txn) error {
		for _, row := range []struct{ k, v []byte }{
			{meta, []byte(`{"next_seq":4,"acked":1,"count":2,"bytes":14,"limits":{"max_messages":5,"max_bytes":1000,"policy":"reject"},"dropped":{"expired":1},"first":2}`)},
			{entry(2), []byte(`{"seq":2,"data":{"n":2},"ts":"2026-03-01T12:00:00Z"}`)},
			{entry(3), []byte(`{"seq":3,"data":{"n":3},"ts":"2026-03-01T12:00:01Z","key":"k"}`)},
			{persistence.Key("queue", user, sess, "k", "k"), []byte{0, 0, 0, 0, 0, 0, 0, 3}},
		} {
			if err := tx.Set(row.k, row.v); err != nil {
				return err
			}
		}
		return nil
	})
	got := readAll(t, s, t0)
	require.Equal(t, []uint64{2, 3}, seqs(got))
	require.JSONEq(t, `{"n":3}`, string(got[1].Data))
	require.Equal(t, "k", got[1].Key)
	require.True(t, got[1].Enqueued.Equal(t0.Add(time.Second)))
	m := getMeta(t, s)
	require.Equal(t, queues.Meta{NextSeq: 4, Acked: 1, Count: 2, Bytes: 14,
		Limits: &queues.Limits{MaxMessages: 5, MaxBytes: 1000, Policy: queues.Reject}, Dropped: map[queues.Reason]uint64{queues.ReasonExpired: 1}}, m)

	update(t, s, func(tx persistence.Txn) error {
		_, _, _, err := queues.Ack(tx, user, sess, 2, 0, time.Now())
		return err
	})
	e, _ := enqueue(t, s, queues.Message{Data: json.RawMessage(`{"n":4}`), Key: "k"}, limits(9, 9999, queues.DropOldest), t0)
	require.Equal(t, uint64(4), e.Seq, "seqs go on from the stored next_seq")
	require.Equal(t, []uint64{4}, seqs(readAll(t, s, t0)), "the collapse key of the JSON row was found and replaced")
	for k, v := range dump(t, s) {
		if len(v) > 0 {
			require.NotEqual(t, byte('{'), v[0], "row %s rewritten as JSON", k)
		}
	}
	checkInvariants(t, s)
}

// TestRowsRoundTrip stores entries and states of every shape and reads
// them back unchanged.
func TestRowsRoundTrip(t *testing.T) {
	s := openStore(t)
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	update(t, s, func(tx persistence.Txn) error {
		return queues.SetLimits(tx, user, sess, &queues.Limits{MaxMessages: 3, MaxBytes: 1 << 20, Policy: queues.DropNewest})
	})
	for i, m := range []queues.Message{
		{Data: json.RawMessage(`"plain"`)},
		{Data: json.RawMessage(`{"a":[1,2,{"b":null}]}`), Key: "k€y"},
		{Data: json.RawMessage(`3.5`), TTL: time.Hour},
		{Data: json.RawMessage(`"<&>"`), TTL: time.Minute, Key: "k2"},
	} {
		e, _ := enqueue(t, s, m, limits(100, 1<<20, queues.DropOldest), at.Add(time.Duration(i)*time.Second))
		if i == 3 {
			require.Zero(t, e.Seq, "drop_newest: the fourth does not fit")
		}
	}
	got := readAll(t, s, at)
	require.Equal(t, []uint64{1, 2, 3}, seqs(got))
	require.Equal(t, queues.Entry{Seq: 2, Data: json.RawMessage(`{"a":[1,2,{"b":null}]}`), Enqueued: at.Add(time.Second), Key: "k€y"}, got[1])
	require.Equal(t, queues.Entry{Seq: 3, Data: json.RawMessage(`3.5`), Enqueued: at.Add(2 * time.Second), Expires: at.Add(2*time.Second + time.Hour)}, got[2])
	m := getMeta(t, s)
	require.Equal(t, map[queues.Reason]uint64{queues.ReasonOverflowNewest: 1}, m.Dropped)
	require.Equal(t, &queues.Limits{MaxMessages: 3, MaxBytes: 1 << 20, Policy: queues.DropNewest}, m.Limits)
	checkInvariants(t, s)
}

// FuzzDecodeRows feeds arbitrary bytes to the row decoders: they return an
// error or a value, never panic, and a decoded row written again reads
// back the same.
func FuzzDecodeRows(f *testing.F) {
	f.Add([]byte(`{"seq":1,"data":1,"ts":"2026-03-01T12:00:00Z"}`))
	f.Add([]byte{1, 1, 2, 0, 1, 'k', '1'})
	f.Add([]byte(`{"next_seq":3,"acked":1,"count":-1}`))
	f.Add([]byte(`{"next_seq":3,"limits":{"max_messages":-5,"max_bytes":1}}`))
	f.Add([]byte{1, 2, 1, 1, 1, 0, 0, 1, 5, 5, 6, 'r', 'e', 'j', 'e', 'c', 't', 1, 7, 'e', 'x', 'p', 'i', 'r', 'e', 'd', 1})
	f.Fuzz(func(t *testing.T, v []byte) {
		if e, err := queues.DecodeEntryRow(1, v); err == nil {
			again, err := queues.DecodeEntryRow(1, queues.EncodeEntryRow(e))
			require.NoError(t, err)
			require.Equal(t, string(e.Data), string(again.Data))
			require.Equal(t, e.Key, again.Key)
			require.True(t, e.Enqueued.Equal(again.Enqueued) && e.Expires.Equal(again.Expires))
		}
		if m, first, from, err := queues.DecodeStateRow(v); err == nil {
			m2, first2, from2, err := queues.DecodeStateRow(queues.EncodeStateRow(m, first, from))
			require.NoError(t, err)
			require.Equal(t, m, m2)
			require.Equal(t, [2]uint64{first, from}, [2]uint64{first2, from2})
		}
	})
}
