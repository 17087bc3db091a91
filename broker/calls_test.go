package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/f47fa0da/tether/auth"
	"github.com/f47fa0da/tether/broker"
	"github.com/f47fa0da/tether/client"
	"github.com/f47fa0da/tether/internal/brokertest"
	"github.com/f47fa0da/tether/nonce"
	"github.com/f47fa0da/tether/wire"
)

// shop is the application of these tests: "buy" increments a per-session
// counter in app state (bought/<session>) and counts its runs, so a test
// can tell a run that committed from one that did not.
type shop struct {
	runs atomic.Int64
	seqs chan uint64 // the seq of every run, when not nil
}

type bought struct {
	Bought int    `json:"bought"`
	Item   string `json:"item"`
	Seq    uint64 `json:"seq"`
}

func (s *shop) buy(_ context.Context, c *nonce.Call) (any, error) {
	s.runs.Add(1)
	if s.seqs != nil {
		s.seqs <- c.Seq
	}
	var args struct {
		Item string `json:"item"`
	}
	if len(c.Args) > 0 {
		if err := json.Unmarshal(c.Args, &args); err != nil {
			return nil, err
		}
	}
	var n int
	if _, err := c.State.GetJSON("bought/"+c.Session, &n); err != nil {
		return nil, err
	}
	n++
	if err := c.State.SetJSON("bought/"+c.Session, n); err != nil {
		return nil, err
	}
	return bought{Bought: n, Item: args.Item, Seq: c.Seq}, nil
}

// startShop starts a broker serving shop's "buy" and issues alice a device token.
func startShop(t *testing.T, cfg broker.Config) (*broker.Broker, *shop, string) {
	t.Helper()
	b := brokertest.Start(t, cfg)
	s := &shop{}
	b.Handle("buy", s.buy)
	return b, s, brokertest.Token(t, b, "alice", auth.RoleDevice)
}

// counter returns the committed bought/<session> counter of user.
func counter(t *testing.T, b *broker.Broker, user, session string) int {
	t.Helper()
	v, ok, err := b.AppState(user, "bought/"+session)
	require.NoError(t, err)
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(string(v))
	require.NoError(t, err, "%q", v)
	return n
}

func decode[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(raw, &v), "%s", raw)
	return v
}

// calls counts the "call" events in the session's journal.
func calls(t *testing.T, b *broker.Broker, user, name string) int {
	t.Helper()
	n := 0
	for _, k := range journal(t, b, user, name) {
		if k == "call" {
			n++
		}
	}
	return n
}

// rawSession speaks the wire protocol with a plain paho client, so a test
// can send exactly the bytes it wants (the SDK would renumber or resend).
type rawSession struct {
	c       paho.Client
	req     string
	replies *brokertest.Messages
}

// rawResponse is a reply as it travels.
type rawResponse struct {
	ID    json.RawMessage `json:"id"`
	OK    json.RawMessage `json:"ok"`
	Error *wire.Error     `json:"error"`
}

func raw(t *testing.T, url, user, token, name string) *rawSession {
	t.Helper()
	r := &rawSession{
		c:       brokertest.MustConnect(t, brokertest.ClientOptions(url, user, token)),
		req:     wire.SessionTopic(user, name, wire.LeafReq),
		replies: brokertest.NewMessages(64),
	}
	require.NoError(t, brokertest.Wait(r.c.Subscribe(wire.SessionTopic(user, name, wire.LeafRes), 1, r.replies.Handler)))
	return r
}

// publish sends payload on the session's req topic (QoS 1, acknowledged).
func (r *rawSession) publish(t *testing.T, payload string) {
	t.Helper()
	require.NoError(t, brokertest.Wait(r.c.Publish(r.req, 1, false, payload)))
}

// next returns the next reply whose id is id (replies to other clients of
// the session, e.g. an SDK device, are skipped).
func (r *rawSession) next(t *testing.T, id string) rawResponse {
	t.Helper()
	for {
		msg := r.replies.Next(t, 5*time.Second)
		var res rawResponse
		require.NoError(t, json.Unmarshal(msg.Payload(), &res), "%s", msg.Payload())
		if string(res.ID) == id {
			return res
		}
	}
}

// send publishes payload and returns the reply to id.
func (r *rawSession) send(t *testing.T, id, payload string) rawResponse {
	t.Helper()
	r.publish(t, payload)
	return r.next(t, id)
}

func callPayload(id, nonce string, seq uint64, method, args string) string {
	return fmt.Sprintf(`{"id":%s,"op":"call","nonce":%q,"seq":%d,"method":%q,"args":%s}`, id, nonce, seq, method, args)
}

// TestCallDuplicateSeqReturnsCachedReply sends the same call request twice
// with raw paho: the handler runs once and both replies are the stored one.
func TestCallDuplicateSeqReturnsCachedReply(t *testing.T) {
	b, s, token := startShop(t, brokertest.Config(t))
	r := raw(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	begun := r.send(t, `"b1"`, `{"id":"b1","op":"begin"}`)
	require.Nil(t, begun.Error)
	got := decode[client.Begun](t, begun.OK)
	require.Equal(t, uint64(1), got.NextSeq)

	req := callPayload(`"c1"`, got.Nonce, 1, "buy", `{"item":"toaster"}`)
	r.publish(t, req)
	r.publish(t, req) // a device that saw no reply sends the very same request
	first, second := r.next(t, `"c1"`), r.next(t, `"c1"`)
	require.Nil(t, first.Error)
	require.Nil(t, second.Error)
	require.JSONEq(t, `{"bought":1,"item":"toaster","seq":1}`, string(first.OK))
	require.JSONEq(t, string(first.OK), string(second.OK), "the retry gets the stored reply")
	require.Equal(t, int64(1), s.runs.Load(), "the handler ran once")

	// Later, the same request still gets the stored reply; seq 1 with other
	// args or another method is refused, neither answered nor run.
	again := r.send(t, `"c1"`, req)
	require.Nil(t, again.Error)
	require.JSONEq(t, string(first.OK), string(again.OK))
	for i, other := range []string{
		callPayload(`"o1"`, got.Nonce, 1, "buy", `{"item":"kettle"}`),
		callPayload(`"o2"`, got.Nonce, 1, "sell", `{"item":"toaster"}`),
	} {
		res := r.send(t, fmt.Sprintf(`"o%d"`, i+1), other)
		require.NotNil(t, res.Error, other)
		require.Equal(t, wire.CodeBadRequest, res.Error.Code)
		require.Contains(t, res.Error.Message, "seq 1 was buy with other arguments")
	}
	require.Equal(t, int64(1), s.runs.Load())

	require.Equal(t, 1, counter(t, b, "alice", "shop"), "one effect")
	sess, err := b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.Equal(t, uint64(1), sess.LastCallSeq)
	require.Equal(t, 1, calls(t, b, "alice", "shop"), "one call journaled")
	stored, ok, err := b.StoredReply("alice", "shop", 1)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "buy", stored.Method)
	require.JSONEq(t, string(first.OK), string(stored.OK))

	// The next seq runs.
	next := r.send(t, `"c3"`, callPayload(`"c3"`, got.Nonce, 2, "buy", `{"item":"kettle"}`))
	require.JSONEq(t, `{"bought":2,"item":"kettle","seq":2}`, string(next.OK))
	require.Equal(t, int64(2), s.runs.Load())
}

// TestCallReplyLostIsResent: the connection drops between a call's commit
// and its reply; the SDK reconnects by itself, resends the same seq and gets
// the stored reply: one run, one effect.
func TestCallReplyLostIsResent(t *testing.T) {
	var (
		proxy atomic.Pointer[brokertest.Proxy]
		cuts  atomic.Int64
	)
	t.Cleanup(broker.SetAfterCallCommit(func(user, session string, seq uint64) {
		if seq == 2 && cuts.Add(1) == 1 {
			proxy.Load().Cut() // committed, reply not yet sent: it is lost with the socket
		}
	}))
	b, s, token := startShop(t, brokertest.Config(t))
	proxy.Store(brokertest.NewProxy(t, b.Addrs().MQTT))
	d := device(t, "tcp://"+proxy.Load().Addr(), "alice", token, "shop")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)

	res, err := d.Call(ctx(t), "buy", map[string]string{"item": "toaster"}, 1)
	require.NoError(t, err)
	require.Equal(t, bought{Bought: 1, Item: "toaster", Seq: 1}, decode[bought](t, res))

	res, err = d.Call(ctx(t), "buy", map[string]string{"item": "kettle"}, 2)
	require.NoError(t, err, "the SDK resends after the reconnect")
	// The cut ran before the reply was published on the old socket: this
	// reply came from a resend on a new connection.
	require.Equal(t, int64(1), cuts.Load(), "the connection was cut after seq 2 committed")
	require.Equal(t, bought{Bought: 2, Item: "kettle", Seq: 2}, decode[bought](t, res))
	require.Equal(t, int64(2), s.runs.Load(), "seq 2 ran once")
	require.Equal(t, 2, counter(t, b, "alice", "shop"))
	require.Equal(t, 2, calls(t, b, "alice", "shop"))

	res, err = d.Call(ctx(t), "buy", map[string]string{"item": "lamp"}, 3)
	require.NoError(t, err)
	require.Equal(t, bought{Bought: 3, Item: "lamp", Seq: 3}, decode[bought](t, res))
	sess, err := b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.Equal(t, uint64(3), sess.LastCallSeq)
	require.JSONEq(t, "3", string(sess.Memento))
}

// TestCallConcurrentBegins: two devices begin the same session at once
// (takeover): both begins succeed, but exactly one instance is current.
// Its call runs; the other's fails with stale_nonce before its handler runs.
func TestCallConcurrentBegins(t *testing.T) {
	b, s, token := startShop(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	for round := range 5 {
		name := fmt.Sprintf("tv%d", round)
		devs := []*client.Client{device(t, url, "alice", token, name), device(t, url, "alice", token, name)}
		runsBefore := s.runs.Load()

		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			nonce [2]string
			errs  [2]error
		)
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var got client.Begun
				got, errs[i] = d.Begin(ctx(t))
				nonce[i] = got.Nonce
			}()
		}
		close(start)
		wg.Wait()
		require.NoError(t, errs[0])
		require.NoError(t, errs[1])
		require.NotEqual(t, nonce[0], nonce[1])

		var results [2]error
		start = make(chan struct{})
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, results[i] = d.Call(ctx(t), "buy", nil, i)
			}()
		}
		close(start)
		wg.Wait()

		sess, err := b.Sessions().Get("alice", name)
		require.NoError(t, err)
		winner := 0
		if sess.Nonce == nonce[1] {
			winner = 1
		}
		require.Equal(t, nonce[winner], sess.Nonce)
		require.NoError(t, results[winner], "round %d: the current instance calls", round)
		require.ErrorIs(t, results[1-winner], client.ErrStaleNonce, "round %d", round)
		require.Equal(t, runsBefore+1, s.runs.Load(), "round %d: the stale instance's handler never ran", round)
		require.Equal(t, 1, counter(t, b, "alice", name))
		require.Equal(t, uint64(1), sess.LastCallSeq)
		require.JSONEq(t, strconv.Itoa(winner), string(sess.Memento), "the memento is the winner's")
	}
}

// TestCallHandlerErrorLeavesNoTrace: a handler that wrote app state and set
// the phase, then failed (or panicked), leaves nothing behind: no state,
// phase, memento, seq, stored reply or journal line. The device gets an
// error reply, and the same seq can be sent again and runs.
func TestCallHandlerErrorLeavesNoTrace(t *testing.T) {
	tests := []struct {
		name    string
		fail    func() error // nil: panic
		code    wire.Code
		message string
	}{
		{"error", func() error { return errors.New("out of stock") }, wire.CodeBadRequest, "fail failed: out of stock"},
		{"wire error keeps its code", func() error { return wire.Errorf(wire.CodeForbidden, "not for sale to you") }, wire.CodeForbidden, "not for sale to you"},
		{"wrapped wire error", func() error { return fmt.Errorf("checkout: %w", wire.Errorf(wire.CodeQueueFull, "basket full")) }, wire.CodeQueueFull, "basket full"},
		{"panic", nil, wire.CodeInternal, "fail failed inside the application; nothing was committed"},
	}
	b, s, token := startShop(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT
	var failRuns atomic.Int64
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "err" + strconv.Itoa(i)
			b.Handle("fail", func(_ context.Context, c *nonce.Call) (any, error) {
				failRuns.Add(1)
				if err := c.State.SetJSON("bought/"+c.Session, 100); err != nil {
					return nil, err
				}
				c.SetPhase("failed")
				if tc.fail == nil {
					panic("boom")
				}
				return nil, tc.fail()
			})
			b.Handle("ok", func(ctx context.Context, c *nonce.Call) (any, error) {
				c.SetPhase("paid")
				return s.buy(ctx, c)
			})
			d := device(t, url, "alice", token, name)
			_, err := d.Begin(ctx(t))
			require.NoError(t, err)
			_, err = d.Call(ctx(t), "ok", nil, "m1")
			require.NoError(t, err)
			before, err := b.Sessions().Get("alice", name)
			require.NoError(t, err)
			journaled := journal(t, b, "alice", name)

			runs := failRuns.Load()
			_, err = d.Call(ctx(t), "fail", nil, "m2")
			var ce *client.Error
			require.ErrorAs(t, err, &ce)
			require.Equal(t, tc.code, ce.Code)
			require.Equal(t, tc.message, ce.Message)
			require.Equal(t, runs+1, failRuns.Load(), "the handler ran")

			after, err := b.Sessions().Get("alice", name)
			require.NoError(t, err)
			require.Equal(t, 1, counter(t, b, "alice", name), "app state unchanged")
			require.Equal(t, "paid", after.Phase, "phase unchanged")
			require.JSONEq(t, `"m1"`, string(after.Memento), "memento unchanged")
			require.Equal(t, uint64(1), after.LastCallSeq, "seq not consumed")
			require.Equal(t, before.Journal, after.Journal)
			require.Equal(t, journaled, journal(t, b, "alice", name), "nothing journaled")
			_, ok, err := b.StoredReply("alice", name, 2)
			require.NoError(t, err)
			require.False(t, ok, "no reply stored for the failed seq")

			// The failed seq was not consumed: the same seq runs normally.
			r := raw(t, url, "alice", token, name)
			res := r.send(t, `"again"`, callPayload(`"again"`, d.Nonce(), 2, "ok", `{"item":"retry"}`))
			require.Nil(t, res.Error)
			require.Equal(t, bought{Bought: 2, Item: "retry", Seq: 2}, decode[bought](t, res.OK))

			// The SDK moved on after the error reply: its next call is seq 3.
			out, err := d.Call(ctx(t), "ok", nil, "m3")
			require.NoError(t, err)
			require.Equal(t, bought{Bought: 3, Seq: 3}, decode[bought](t, out))
			after, err = b.Sessions().Get("alice", name)
			require.NoError(t, err)
			require.Equal(t, uint64(3), after.LastCallSeq)
			require.JSONEq(t, `"m3"`, string(after.Memento))
			require.Equal(t, 3, calls(t, b, "alice", name))
		})
	}
	// The panic took nothing down: a new device begins and calls.
	d := device(t, url, "alice", token, "after-panic")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	_, err = d.Call(ctx(t), "buy", nil, nil)
	require.NoError(t, err)
}

// TestCallRefusedBeforeTheHandler: an unknown method and a stale nonce are
// refused, nothing runs and nothing changes.
func TestCallRefusedBeforeTheHandler(t *testing.T) {
	b, s, token := startShop(t, brokertest.Config(t))
	url := "tcp://" + b.Addrs().MQTT

	t.Run("unknown method", func(t *testing.T) {
		d := device(t, url, "alice", token, "unknown")
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		before, err := b.Sessions().Get("alice", "unknown")
		require.NoError(t, err)
		_, err = d.Call(ctx(t), "sell", nil, 1)
		require.ErrorIs(t, err, client.ErrUnknownMethod)
		require.Contains(t, err.Error(), `"sell"`)
		after, err := b.Sessions().Get("alice", "unknown")
		require.NoError(t, err)
		require.Zero(t, after.LastCallSeq)
		require.Nil(t, after.Memento)
		require.Equal(t, before.Journal, after.Journal, "nothing journaled")
		_, ok, err := b.StoredReply("alice", "unknown", 1)
		require.NoError(t, err)
		require.False(t, ok)
		require.Zero(t, s.runs.Load())
	})

	t.Run("stale nonce", func(t *testing.T) {
		old := device(t, url, "alice", token, "stale")
		_, err := old.Begin(ctx(t))
		require.NoError(t, err)
		oldNonce := old.Nonce()
		_, err = old.Call(ctx(t), "buy", nil, "old") // seq 1 commits under the old instance
		require.NoError(t, err)
		current := device(t, url, "alice", token, "stale")
		begun, err := current.Begin(ctx(t))
		require.NoError(t, err)
		require.Equal(t, uint64(2), begun.NextSeq)
		runs := s.runs.Load()
		before, err := b.Sessions().Get("alice", "stale")
		require.NoError(t, err)

		_, err = old.Call(ctx(t), "buy", nil, "stale")
		require.ErrorIs(t, err, client.ErrStaleNonce)
		r := raw(t, url, "alice", token, "stale")
		for i, req := range []string{
			callPayload(`"r1"`, oldNonce, 1, "buy", `{}`),     // a committed seq: still refused, not answered from the cache
			callPayload(`"r2"`, oldNonce, 2, "buy", `{}`),     // the next seq
			callPayload(`"r3"`, "feedface", 2, "buy", `{}`),   // a nonce that never was
			callPayload(`"r4"`, oldNonce, 2, "nothing", `{}`), // unknown method too: the nonce is checked first
		} {
			res := r.send(t, fmt.Sprintf(`"r%d"`, i+1), req)
			require.NotNil(t, res.Error, req)
			require.Equal(t, wire.CodeStaleNonce, res.Error.Code, req)
		}
		require.Equal(t, runs, s.runs.Load(), "no handler ran")
		after, err := b.Sessions().Get("alice", "stale")
		require.NoError(t, err)
		require.Equal(t, before.LastCallSeq, after.LastCallSeq)
		require.Equal(t, before.Memento, after.Memento)
		require.Equal(t, before.Nonce, after.Nonce)
		require.Equal(t, 1, counter(t, b, "alice", "stale"))

		_, err = current.Call(ctx(t), "buy", nil, "new")
		require.NoError(t, err, "the current instance is unaffected")
		require.Equal(t, 2, counter(t, b, "alice", "stale"))
	})
}

// TestCallMementoAndNextSeq: the memento commits with the call; a new device
// that kept nothing begins with it and with next_seq after the last call.
func TestCallMementoAndNextSeq(t *testing.T) {
	b, s, token := startShop(t, brokertest.Config(t))
	s.seqs = make(chan uint64, 16)
	url := "tcp://" + b.Addrs().MQTT
	d := device(t, url, "alice", token, "shop")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	_, err = d.Call(ctx(t), "buy", map[string]string{"item": "toaster"}, 6)
	require.NoError(t, err)
	_, err = d.Call(ctx(t), "buy", map[string]string{"item": "kettle"}, 7)
	require.NoError(t, err)
	_, err = d.Call(ctx(t), "buy", nil, nil) // no memento: the last one stays
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3}, []uint64{<-s.seqs, <-s.seqs, <-s.seqs})
	d.Close() // crashes without end

	d2 := device(t, url, "alice", token, "shop")
	begun, err := d2.Begin(ctx(t))
	require.NoError(t, err)
	require.True(t, begun.Crashed)
	require.JSONEq(t, "7", string(begun.Memento))
	require.Equal(t, uint64(4), begun.NextSeq)
	res, err := d2.Call(ctx(t), "buy", nil, 8)
	require.NoError(t, err)
	require.Equal(t, bought{Bought: 4, Seq: 4}, decode[bought](t, res))
	require.Equal(t, uint64(4), <-s.seqs)

	events, err := b.Sessions().Log("alice", "shop", 0, 0)
	require.NoError(t, err)
	var mementos []any
	for _, e := range events {
		if e.Kind == "call" {
			mementos = append(mementos, e.Detail["memento"])
		}
	}
	require.Equal(t, []any{json.Number("6"), json.Number("7"), nil, json.Number("8")}, mementos, "each call journals the memento it committed")
}

// TestCallTimedOutSeqNotReusedForAnotherCall: a call whose caller gave up
// (its context ended) may still commit. The SDK keeps that seq for its next
// call, so that retrying the same call is answered from the reply cache; a
// different call under that seq is refused (not answered with the other
// call's reply, not run), and the call after it runs under the next seq.
func TestCallTimedOutSeqNotReusedForAnotherCall(t *testing.T) {
	b, s, token := startShop(t, brokertest.Config(t))
	var slow atomic.Int64
	b.Handle("slow", func(_ context.Context, c *nonce.Call) (any, error) {
		slow.Add(1)
		time.Sleep(300 * time.Millisecond)
		return "slow done", c.State.SetJSON("slow", c.Seq)
	})
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = d.Call(short, "slow", nil, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	brokertest.WaitFor(t, 2*time.Second, "seq 1 to commit", func() bool {
		sess, err := b.Sessions().Get("alice", "shop")
		return err == nil && sess.LastCallSeq == 1
	})

	res, err := d.Call(ctx(t), "buy", map[string]string{"item": "toaster"}, nil)
	var ce *client.Error
	require.ErrorAs(t, err, &ce, "buy must not get slow's stored reply: %s", res)
	require.Equal(t, wire.CodeBadRequest, ce.Code)
	require.Contains(t, ce.Message, "seq 1 was slow")
	require.Zero(t, s.runs.Load(), "buy did not run under slow's seq")

	res, err = d.Call(ctx(t), "buy", map[string]string{"item": "toaster"}, nil)
	require.NoError(t, err)
	require.Equal(t, bought{Bought: 1, Item: "toaster", Seq: 2}, decode[bought](t, res))
	require.Equal(t, int64(1), slow.Load())
	v, _, err := b.AppState("alice", "slow")
	require.NoError(t, err)
	require.Equal(t, "1", string(v))
}

// TestCallAfterCommit: effects a handler registers with AfterCommit run
// once when its call commits: not when it fails, not for a cached retry.
func TestCallAfterCommit(t *testing.T) {
	b, _, token := startShop(t, brokertest.Config(t))
	var after atomic.Int64
	b.Handle("notify", func(_ context.Context, c *nonce.Call) (any, error) {
		c.AfterCommit(func() { after.Add(1) })
		var args struct{ Fail bool }
		if err := json.Unmarshal(c.Args, &args); err != nil {
			return nil, err
		}
		if args.Fail {
			return nil, errors.New("refused")
		}
		return "sent", nil
	})
	r := raw(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	nonce := decode[client.Begun](t, r.send(t, `"b"`, `{"id":"b","op":"begin"}`).OK).Nonce

	res := r.send(t, `"f"`, callPayload(`"f"`, nonce, 1, "notify", `{"fail":true}`))
	require.NotNil(t, res.Error)
	require.Zero(t, after.Load(), "an aborted call's effects never run")
	req := callPayload(`"n"`, nonce, 1, "notify", `{"fail":false}`)
	require.Nil(t, r.send(t, `"n"`, req).Error)
	require.Equal(t, int64(1), after.Load())
	require.Nil(t, r.send(t, `"n"`, req).Error)
	require.Equal(t, int64(1), after.Load(), "a cached retry runs nothing")
}

// TestCallsOfOneUserShareAppState: sessions of one user call at once, each
// incrementing the same app state key. Badger detects the conflicting
// transactions and persistence.Store.Update retries them; every call must
// still commit once and the counter must count every call (a retried
// attempt starts from a fresh session copy, so it is not refused as a seq
// already used).
func TestCallsOfOneUserShareAppState(t *testing.T) {
	const sessions, each = 8, 50
	b, _, token := startShop(t, brokertest.Config(t))
	b.Handle("inc", func(_ context.Context, c *nonce.Call) (any, error) {
		var n int
		if _, err := c.State.GetJSON("total", &n); err != nil {
			return nil, err
		}
		return n + 1, c.State.SetJSON("total", n+1)
	})
	url := "tcp://" + b.Addrs().MQTT
	var (
		wg   sync.WaitGroup
		errs = make(chan error, sessions*each)
	)
	for i := range sessions {
		d := device(t, url, "alice", token, "s"+strconv.Itoa(i))
		_, err := d.Begin(ctx(t))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := d.Call(context.Background(), "inc", nil, nil); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}
	v, _, err := b.AppState("alice", "total")
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(sessions*each), string(v), "every call counted once")
	for i := range sessions {
		sess, err := b.Sessions().Get("alice", "s"+strconv.Itoa(i))
		require.NoError(t, err)
		require.Equal(t, uint64(each), sess.LastCallSeq)
		require.Equal(t, each, calls(t, b, "alice", "s"+strconv.Itoa(i)))
	}
}

// TestCallMementoLimitIsTheConfiguredOne: a call's memento is held to the
// configured sessions.Config.MaxMemento, as remember's is (not
// sessions.DefaultConfig's).
func TestCallMementoLimitIsTheConfiguredOne(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.Sessions.MaxMemento = 64
	b, s, token := startShop(t, cfg)
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	big := strings.Repeat("m", 100)
	var ce *client.Error
	require.ErrorAs(t, d.Remember(ctx(t), big, nil), &ce)
	require.Equal(t, wire.CodeTooLarge, ce.Code, "remember keeps the configured limit")
	_, err = d.Call(ctx(t), "buy", nil, big)
	require.ErrorAs(t, err, &ce, "a call's memento has the same limit")
	require.Equal(t, wire.CodeTooLarge, ce.Code)
	require.Zero(t, s.runs.Load())
}

// wireCode returns the code of err, which must be an error reply.
func wireCode(t *testing.T, err error) wire.Code {
	t.Helper()
	var we *client.Error
	require.ErrorAs(t, err, &we)
	return we.Code
}

// begun dials alice's session name on b and begins it.
func begun(t *testing.T, b *broker.Broker, token, name string) *client.Client {
	t.Helper()
	d := device(t, "tcp://"+b.Addrs().MQTT, "alice", token, name)
	_, err := d.Begin(ctx(t))
	require.NoError(t, err)
	return d
}

// panicky is a reply value whose encoding panics.
type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("bad marshaller") }

// TestCallPanicsAreContained: a reply whose encoding panics aborts its call
// with internal, and an AfterCommit function that panics leaves its call
// committed and answered; the broker serves on either way.
func TestCallPanicsAreContained(t *testing.T) {
	b, _, token := startShop(t, brokertest.Config(t))
	b.Handle("badreply", func(context.Context, *nonce.Call) (any, error) { return panicky{}, nil })
	b.Handle("badafter", func(_ context.Context, c *nonce.Call) (any, error) {
		c.AfterCommit(func() { panic("bad effect") })
		return "done", nil
	})
	d := begun(t, b, token, "shop")
	_, err := d.Call(ctx(t), "badreply", nil, 1)
	require.Equal(t, wire.CodeInternal, wireCode(t, err))
	sess, err := b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.Empty(t, sess.Memento, "the aborted call's memento is not kept")
	got, err := d.Call(ctx(t), "badafter", nil, 2)
	require.NoError(t, err)
	require.JSONEq(t, `"done"`, string(got))
	got, err = d.Call(ctx(t), "buy", map[string]string{"item": "toaster"}, 3)
	require.NoError(t, err)
	require.Equal(t, 1, decode[bought](t, got).Bought)
	sess, err = b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.JSONEq(t, `3`, string(sess.Memento))
}

// TestCallHandlerChoosesCode: a handler may fail with a code of the closed
// set; one outside it reaches the device as bad_request, with its message.
func TestCallHandlerChoosesCode(t *testing.T) {
	b, _, token := startShop(t, brokertest.Config(t))
	b.Handle("fail", func(_ context.Context, c *nonce.Call) (any, error) {
		return nil, wire.Errorf(wire.Code(c.Args[1:len(c.Args)-1]), "no %s", c.Args)
	})
	d := begun(t, b, token, "shop")
	for _, tt := range []struct {
		code string
		want wire.Code
	}{{"forbidden", wire.CodeForbidden}, {"queue_full", wire.CodeQueueFull}, {"out_of_stock", wire.CodeBadRequest}} {
		_, err := d.Call(ctx(t), "fail", tt.code, nil)
		var we *client.Error
		require.ErrorAs(t, err, &we, tt.code)
		require.Equal(t, tt.want, we.Code, tt.code)
		require.Contains(t, we.Message, tt.code)
	}
}

// TestCallReplyRetention: replies are kept for the last RepliesKept seqs,
// also when a device skips seqs: a call after a gap forgets every reply
// that fell out of the window, and a retry of one is refused, not re-run.
func TestCallReplyRetention(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.RepliesKept = 3
	b, s, token := startShop(t, cfg)
	r := raw(t, "tcp://"+b.Addrs().MQTT, "alice", token, "shop")
	nonce := decode[client.Begun](t, r.send(t, `"b"`, `{"id":"b","op":"begin"}`).OK).Nonce
	kept := func() []uint64 {
		var seqs []uint64
		for seq := uint64(1); seq <= 20; seq++ {
			_, ok, err := b.StoredReply("alice", "shop", seq)
			require.NoError(t, err)
			if ok {
				seqs = append(seqs, seq)
			}
		}
		return seqs
	}
	for _, seq := range []uint64{1, 2, 3, 4} {
		require.Nil(t, r.send(t, `"c"`, callPayload(`"c"`, nonce, seq, "buy", `{}`)).Error)
	}
	require.Equal(t, []uint64{2, 3, 4}, kept())
	require.Nil(t, r.send(t, `"c"`, callPayload(`"c"`, nonce, 10, "buy", `{}`)).Error)
	require.Equal(t, []uint64{10}, kept(), "after the gap only seqs 8-10 may be kept")
	res := r.send(t, `"c"`, callPayload(`"c"`, nonce, 4, "buy", `{}`))
	require.NotNil(t, res.Error)
	require.Equal(t, wire.CodeBadRequest, res.Error.Code)
	require.Contains(t, res.Error.Message, "no longer kept")
	require.Equal(t, int64(5), s.runs.Load(), "nothing ran twice")
}

// TestCallTimeout: a handler that outruns CallTimeout (and honours its
// context) aborts its call with internal; nothing of it is kept, and the
// next call runs.
func TestCallTimeout(t *testing.T) {
	cfg := brokertest.Config(t)
	cfg.CallTimeout = 100 * time.Millisecond
	b, _, token := startShop(t, cfg)
	var slow atomic.Bool
	slow.Store(true)
	b.Handle("slow", func(ctx context.Context, c *nonce.Call) (any, error) {
		if !slow.Load() {
			return "quick", nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	d := begun(t, b, token, "shop")
	_, err := d.Call(ctx(t), "slow", nil, 1)
	require.Equal(t, wire.CodeInternal, wireCode(t, err))
	sess, err := b.Sessions().Get("alice", "shop")
	require.NoError(t, err)
	require.Empty(t, sess.Memento)
	slow.Store(false)
	got, err := d.Call(ctx(t), "slow", nil, 2)
	require.NoError(t, err)
	require.JSONEq(t, `"quick"`, string(got))
}
