package broker

import (
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/f47fa0da/tether/persistence"
	"github.com/f47fa0da/tether/queues"
	"github.com/f47fa0da/tether/wire"
)

// maxPendingAcks bounds the publishes one connection may have read but not
// yet acknowledged; its next publish waits for room.
const maxPendingAcks = 1024

// publishQueues lets a connection keep many publishes in flight while its
// read goroutine goes on reading. mochi reads a connection's packets one at
// a time and acknowledges each after the hook returns, which would make
// every notify wait for its own sync round, and would run every request —
// JSON, a Badger commit, the reply — on the read goroutine, whose stack
// stays as deep as the deepest request for as long as the connection lives.
// So the hook hands the publish to the connection's ackQueue: a notify is
// committed at once (in arrival order, keeping seq order) and acknowledged
// once durable; a request is run, answered and acknowledged by the queue's
// drain goroutine, which exists only while there is work; a refused
// publish (deny) is acknowledged in its turn. PUBACKs leave in arrival
// order, as MQTT requires [MQTT-4.6.0-2].
type publishQueues struct {
	queues sync.Map // *mqtt.Client -> *ackQueue
	// commitNotifies commits a run of notifies, consecutive publishes of
	// one connection (several only when they all go to one session's
	// queue: one transaction), setting each one's durable, err and then.
	commitNotifies func(run []pendingAck)
}

// pendingAck is one publish waiting to be acknowledged.
type pendingAck struct {
	pk       publishRef
	run      func()     // the request to run before the PUBACK
	notify   *notifyJob // the notify to commit before the PUBACK
	durable  persistence.Durable
	err      error  // the refusal to report: a packets.Code as is, else mapped by reasonFor
	unsynced bool   // durable's sync failed
	then     func() // runs once durable (set only where something was queued): start delivering
}

// publishRef is what an ack queue keeps of a publish: enough to
// acknowledge it and to name it in a log line, not the whole packet (a
// packets.Packet is over a kilobyte, and a busy connection queues many).
type publishRef struct {
	id    uint16
	qos   byte
	topic string
}

func refOf(pk packets.Packet) publishRef {
	return publishRef{id: pk.PacketID, qos: pk.FixedHeader.Qos, topic: pk.TopicName}
}

// notifyJob is a notify waiting in its connection's ack queue to be
// committed: m for user's session target (a name, a pattern, or "" for
// every session).
type notifyJob struct {
	user, target string
	m            queues.Message
}

// joins reports whether o may share j's transaction: both go to the
// same single session.
func (j *notifyJob) joins(o *notifyJob) bool {
	return o != nil && j.user == o.user && j.target == o.target && wire.ValidName(j.target)
}

// maxNotifyRun bounds the notifies committed in one transaction.
const maxNotifyRun = 64

// ackQueue holds one connection's pending acks in arrival order; a drain
// goroutine runs while it is not empty.
type ackQueue struct {
	cl      *mqtt.Client
	commit  func(run []pendingAck) // publishQueues.commitNotifies
	mu      sync.Mutex
	room    sync.Cond
	pending []pendingAck
	running bool          // a drain goroutine exists
	idle    bool          // it lingers with nothing to do, waiting for wake
	wake    chan struct{} // capacity 1: push wakes a lingering drain
}

// drainLinger is how long a drain goroutine waits for more work before it
// ends: a device making calls back to back keeps one goroutine (whose
// stack has grown to what a request needs) instead of starting one per
// request, while an idle connection keeps none.
const drainLinger = 50 * time.Millisecond

// push queues p behind cl's earlier publishes, waiting while the
// connection has maxPendingAcks outstanding.
func (n *publishQueues) push(cl *mqtt.Client, p pendingAck) {
	v, ok := n.queues.Load(cl)
	if !ok {
		q := &ackQueue{cl: cl, commit: n.commitNotifies, wake: make(chan struct{}, 1)}
		q.room.L = &q.mu
		v, _ = n.queues.LoadOrStore(cl, q)
	}
	q := v.(*ackQueue)
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.pending) >= maxPendingAcks {
		q.room.Wait()
	}
	q.pending = append(q.pending, p)
	switch {
	case !q.running:
		q.running = true
		go q.drain()
	case q.idle:
		q.idle = false
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// deny refuses pk without forwarding or retaining it, and returns the
// error OnPublish must return. A QoS 1 publish is acknowledged by cl's ack
// queue, behind cl's earlier publishes [MQTT-4.6.0-2]: MQTT 5 publishers
// get code in the PUBACK, MQTT 3.1.1 ones a plain PUBACK (3.1.1 has no way
// to say no short of disconnecting). QoS 0 publishes are simply dropped.
// QoS 2 is answered at once, as its PUBREC handshake stays with mochi:
// PUBRECs keep their own order [MQTT-4.6.0-3], as every QoS 2 publish is
// answered on the read goroutine, but may pass queued PUBACKs.
func (n *publishQueues) deny(cl *mqtt.Client, pk packets.Packet, code packets.Code) error {
	// Never refused by returning code: mochi would send the same ack but
	// log every one at ERROR with the whole packet, so any client could
	// flood the log.
	switch {
	case pk.FixedHeader.Qos == 0:
		return packets.ErrRejectPacket
	case pk.FixedHeader.Qos == 1:
		n.push(cl, pendingAck{pk: refOf(pk), err: code})
		return packets.ErrRejectPacket // no PUBACK from mochi: the ack queue sends it
	case cl.Properties.ProtocolVersion == 5:
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, ReasonCode: code.Code}
		ack.Properties.ReasonString = code.Reason
		_ = cl.WritePacket(ack) // fails only when the connection is gone
		return packets.ErrRejectPacket
	default:
		return packets.CodeSuccessIgnore
	}
}

// settle returns once every publish cl sent so far has been run and
// acknowledged: a will or a disconnect must not overtake the requests
// before it (a begin run after the disconnect would attach the session to
// a dead connection).
func (n *publishQueues) settle(cl *mqtt.Client) {
	v, ok := n.queues.Load(cl)
	if !ok {
		return
	}
	q := v.(*ackQueue)
	q.mu.Lock()
	for q.running && !q.idle {
		q.room.Wait()
	}
	q.mu.Unlock()
}

// forget drops cl's queue when it disconnects, after settle.
func (n *publishQueues) forget(cl *mqtt.Client) { n.queues.Delete(cl) }

func (q *ackQueue) drain() {
	reserveStack16K(0)
	linger := time.NewTimer(drainLinger)
	defer linger.Stop()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.pending = nil    // let a burst's backing array go
			q.room.Broadcast() // wake settle
			if q.idle {        // lingered for nothing: end
				q.running, q.idle = false, false
				q.mu.Unlock()
				return
			}
			q.idle = true
			q.mu.Unlock()
			linger.Reset(drainLinger)
			select {
			case <-q.wake:
			case <-linger.C:
			}
			continue
		}
		run := q.take()
		q.mu.Unlock()
		if run[0].notify == nil {
			q.finish(run)
			continue
		}
		// Notifies that arrived while a run was committed are committed
		// too before anyone waits for the run's sync round, so they ride
		// the same round: a notifier's burst is read one publish at a
		// time, and the first one alone would otherwise make the rest wait
		// a round more. PUBACKs still leave in arrival order.
		q.commit(run)
		runs := [commitAhead][]pendingAck{run}
		ahead := 1
		for ; ahead < commitAhead; ahead++ {
			if runs[ahead] = q.takeNotifies(); runs[ahead] == nil {
				break
			}
			q.commit(runs[ahead])
		}
		for _, run := range runs[:ahead] {
			q.finish(run)
		}
	}
}

// commitAhead bounds the notify runs committed before the first of them is
// acknowledged.
const commitAhead = 4

// takeNotifies takes the next run if it is a notify run, else returns nil.
func (q *ackQueue) takeNotifies() []pendingAck {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 || q.pending[0].notify == nil {
		return nil
	}
	return q.take()
}

// take removes the next run from q.pending, which is not empty: a request,
// a refusal, or a notify with the notifies to the same session queued right
// behind it, which share its transaction (a notifier that keeps many
// publishes in flight pays one commit for them, not one each). q.mu is
// held.
func (q *ackQueue) take() []pendingAck {
	n := 1
	if j := q.pending[0].notify; j != nil {
		for n < len(q.pending) && n < maxNotifyRun && j.joins(q.pending[n].notify) {
			n++
		}
	}
	run := q.pending[:n:n] // push appends only beyond q.pending: run stays as is
	q.pending = q.pending[n:]
	q.room.Broadcast()
	return run
}

// finish runs each of run's requests, waits for its commit and then
// acknowledges the run's QoS 1 publishes in one write: success, or (MQTT 5)
// the refusal's reason code; MQTT 3.1.1 has no negative PUBACK, so a
// refusal (logged when it happened, if at all) is acknowledged like a
// success. If the sync fails nothing is known to be on disk: MQTT 5
// clients get an error, 3.1.1 clients no PUBACK, so they send it again
// after reconnecting. Once acknowledged, the thens run (start delivering).
func (q *ackQueue) finish(run []pendingAck) {
	acks := 0
	for i := range run {
		p := &run[i]
		if p.run != nil {
			p.run()
		}
		if p.durable.Wait() != nil {
			p.unsynced = true
			if p.err == nil {
				p.err = errNotDurable
			}
		}
		if p.pk.qos != 0 {
			acks++
		}
	}
	conn, cork := q.cl.Net.Conn.(*corkConn)
	if cork = cork && acks > 1; cork {
		conn.cork()
	}
	for _, p := range run {
		if p.pk.qos != 0 {
			q.acknowledge(p)
		}
	}
	if cork {
		conn.uncork()
	}
	for _, p := range run {
		if !p.unsynced && p.then != nil {
			p.then()
		}
	}
}

// acknowledge sends p's PUBACK, if it gets one.
func (q *ackQueue) acknowledge(p pendingAck) {
	code := packets.CodeSuccess
	switch {
	case p.err == nil:
	case q.cl.Properties.ProtocolVersion == 5:
		code = refusalCode(p.err)
	case p.unsynced:
		return
	}
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    p.pk.id,
		ReasonCode:  code.Code,
	}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		ack.Properties.ReasonString = code.Reason
	}
	_ = q.cl.WritePacket(ack) // fails only when the connection is gone
}

// refusalCode is the MQTT 5 reason code that reports err: err itself when
// it is one (a refusal from deny), else what reasonFor maps it to.
func refusalCode(err error) packets.Code {
	var code packets.Code
	if errors.As(err, &code) {
		return code
	}
	return reasonFor(err)
}

var errNotDurable = errors.New("broker: the store could not make the notification durable")
