// Unit tests of the client's notification inbox: order, de-duplication and
// coalesced cumulative acks. Run by `node --test test/unit/` (TestJSUnit).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Inbox } from '../../src/inbox.js';

// settle lets queued promise callbacks run.
const settle = () => new Promise((r) => setTimeout(r, 0));

// fakeAcks records acks and lets the test decide when each completes.
function fakeAcks() {
  const sent = [];
  const waiting = [];
  return {
    sent,
    send: (upto, resend) => {
      sent.push(resend ? `resend after ${upto}` : upto);
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    },
    complete: async (err) => {
      const w = waiting.shift();
      assert.ok(w, 'no ack in flight');
      if (err) {
        w.reject(err);
      } else {
        w.resolve({});
      }
      await settle();
    },
    inFlight: () => waiting.length,
  };
}

function inbox(acks, extra = {}) {
  const handled = [];
  const acked = [];
  const errors = [];
  const box = new Inbox({
    sendAck: acks.send,
    handle: (n) => {
      handled.push(n.seq);
    },
    onAcked: (upto) => acked.push(upto),
    onError: (err) => errors.push(err.message),
    ...extra,
  });
  return { box, handled, acked, errors };
}

test('delivers in seq order and drops every seq not above the last seen', async () => {
  const acks = fakeAcks();
  const { box, handled } = inbox(acks);
  for (const seq of [1, 2, 2, 1, 3, 5, 4, 5, 6]) {
    box.receive({ seq, data: `n${seq}` });
  }
  await settle();
  assert.deepEqual(handled, [1, 2, 3, 5, 6], 'duplicates and late arrivals dropped; gaps not waited for');
});

test('refuses payloads without a positive integer seq', async () => {
  const { box, handled, errors } = inbox(fakeAcks());
  assert.equal(box.receive({ seq: 0 }), false);
  assert.equal(box.receive({ seq: '3' }), false);
  assert.equal(box.receive(null), false);
  assert.equal(box.receive({ seq: 1.5 }), false);
  await settle();
  assert.deepEqual(handled, []);
  assert.equal(errors.length, 4);
});

test('acks are cumulative and coalesced: one in flight, then the latest', async () => {
  const acks = fakeAcks();
  const { box, acked } = inbox(acks);
  box.receive({ seq: 1 });
  await settle();
  assert.deepEqual(acks.sent, [1]);
  for (const seq of [2, 3, 4]) {
    box.receive({ seq });
  }
  await settle();
  assert.deepEqual(acks.sent, [1], 'no second ack while one is in flight');
  await acks.complete();
  assert.deepEqual(acked, [1]);
  assert.deepEqual(acks.sent, [1, 4], 'then one ack for the latest handled');
  await acks.complete();
  assert.deepEqual(acked, [1, 4]);
  assert.equal(acks.inFlight(), 0);
  assert.equal(box.acked, 4);
});

test('waits for an async handler before acking, one notification at a time', async () => {
  const acks = fakeAcks();
  const started = [];
  let release;
  const box = new Inbox({
    sendAck: acks.send,
    handle: (n) => {
      started.push(n.seq);
      return n.seq === 1 ? new Promise((r) => (release = r)) : undefined;
    },
  });
  box.receive({ seq: 1 });
  box.receive({ seq: 2 });
  await settle();
  assert.deepEqual(started, [1], 'seq 2 waits for seq 1');
  assert.deepEqual(acks.sent, []);
  release();
  await settle();
  await settle();
  assert.deepEqual(started, [1, 2]);
  assert.deepEqual(acks.sent, [1]);
});

test('a failing handler holds delivery and acks; the next begin delivers the rest again, each once', async () => {
  const acks = fakeAcks();
  const handled = [];
  const errors = [];
  let failing = true;
  const box = new Inbox({
    sendAck: acks.send,
    handle: (n) => {
      if (n.seq === 2 && failing) {
        failing = false;
        throw new Error('cannot show it');
      }
      handled.push(n.seq);
    },
    onError: (err) => errors.push(err.message),
  });
  box.receive({ seq: 1 });
  await settle();
  await acks.complete();
  box.receive({ seq: 2 });
  box.receive({ seq: 3 });
  await settle();
  assert.equal(box.receive({ seq: 4 }), false, 'nothing more is taken until the next begin');
  await settle();
  assert.deepEqual(handled, [1], 'seq 3 is not handed over past the failed 2');
  assert.deepEqual(errors, ['cannot show it']);
  assert.deepEqual(acks.sent, [1], 'nothing after the failed seq is acked');

  box.beginning(); // a new begin: the broker sends everything after 1 again
  box.receive({ seq: 2 });
  box.receive({ seq: 3 });
  box.receive({ seq: 4 });
  box.begun(1);
  await settle();
  assert.deepEqual(handled, [1, 2, 3, 4], 'in order, each once');
  assert.deepEqual(acks.sent, [1, 2]);
  await acks.complete();
  assert.deepEqual(acks.sent, [1, 2, 4]);
});

test('a begin on a broker whose acked seq is lower (a restored session) counts from it', async () => {
  const acks = fakeAcks();
  const { box, handled } = inbox(acks);
  for (let seq = 1; seq <= 5; seq++) {
    box.receive({ seq, prev: seq - 1 });
  }
  await settle();
  await acks.complete();
  await acks.complete();
  assert.deepEqual(acks.sent, [1, 5]);
  // Another broker restores the session; it held seqs 3 and 4 (acked 2).
  box.beginning();
  box.begun(2);
  box.receive({ seq: 3, prev: 2 });
  box.receive({ seq: 4, prev: 3 });
  await settle();
  assert.deepEqual(handled, [1, 2, 3, 4, 5, 3, 4], "the other broker's 3 and 4 are delivered, not taken for duplicates");
  assert.deepEqual(acks.sent, [1, 5, 3], 'and acked in its numbering');
});

test('ackNow acknowledges what was handled and resolves once confirmed', async () => {
  const acks = fakeAcks();
  const { box } = inbox(acks);
  box.receive({ seq: 1 });
  await settle();
  box.receive({ seq: 2 });
  await settle();
  assert.deepEqual(acks.sent, [1], 'ack 2 waits for ack 1 in flight');
  let done = false;
  const now = box.ackNow().then(() => (done = true));
  await settle();
  assert.deepEqual(acks.sent, [1, 2], 'ackNow does not wait for the one in flight');
  await acks.complete(); // ack 1
  assert.equal(done, false);
  await acks.complete(); // ack 2
  await now;
  assert.equal(box.acked, 2);
});

test('a begin drops what was handled but not yet acked, and acks it', async () => {
  const acks = fakeAcks();
  const { box, handled } = inbox(acks);
  box.receive({ seq: 1 });
  box.receive({ seq: 2 });
  await settle();
  assert.deepEqual(acks.sent, [1]);
  await acks.complete(new Error('connection lost'));
  assert.deepEqual(acks.sent, [1, 2], 'the newer handled seq is tried');
  await acks.complete(new Error('connection lost'));

  box.beginning(); // begin again: the broker acked nothing and resends 1 and 2
  box.receive({ seq: 1 });
  box.receive({ seq: 2 });
  box.receive({ seq: 3 });
  box.begun(0);
  await settle();
  assert.deepEqual(handled, [1, 2, 3], 'each once');
  assert.deepEqual(acks.sent, [1, 2, 2]);
  await acks.complete();
  assert.deepEqual(acks.sent, [1, 2, 2, 3]);
});

test('notifications that arrive before the begin reply are kept, and acked once begun', async () => {
  const acks = fakeAcks();
  let current = false;
  const handled = [];
  const errors = [];
  const box = new Inbox({
    sendAck: acks.send,
    canAck: () => current,
    handle: (n) => {
      handled.push(n.seq);
    },
    onError: (err) => errors.push(err.message),
  });
  box.beginning();
  box.receive({ seq: 4 });
  box.receive({ seq: 5 });
  await settle();
  assert.deepEqual(handled, [4, 5]);
  assert.deepEqual(acks.sent, [], 'no ack without an instance');
  current = true;
  box.begun(3);
  assert.deepEqual(acks.sent, [5]);
  await acks.complete();
  assert.equal(box.acked, 5);
  assert.deepEqual(errors, []);
});

test('a begin while an ack is in flight acks again once it completes', async () => {
  const acks = fakeAcks();
  const { box } = inbox(acks);
  box.receive({ seq: 1 });
  await settle();
  assert.deepEqual(acks.sent, [1]);
  box.beginning();
  box.begun(0);
  await acks.complete(new Error('stale nonce')); // the old instance's ack
  assert.deepEqual(acks.sent, [1, 1], 'sent again under the new instance');
  await acks.complete();
  assert.equal(box.acked, 1);
});

test("a begin adopts the broker's acked seq (what another device handled)", async () => {
  const acks = fakeAcks();
  const { box, handled } = inbox(acks);
  box.beginning();
  box.begun(7);
  box.receive({ seq: 7 });
  box.receive({ seq: 8 });
  await settle();
  assert.deepEqual(handled, [8]);
  assert.deepEqual(acks.sent, [8]);
});

test('a failed ack is reported with op ack and its upto', async () => {
  const acks = fakeAcks();
  const errs = [];
  const box = new Inbox({ sendAck: acks.send, onError: (e) => errs.push(e) });
  box.receive({ seq: 2 });
  await settle();
  await acks.complete(new Error('bad_request'));
  assert.equal(errs.length, 1);
  assert.equal(errs[0].op, 'ack');
  assert.equal(errs[0].upto, 2);
});

test('with autoAck off, only ack() acknowledges', async () => {
  const acks = fakeAcks();
  const { box, handled } = inbox(acks, { autoAck: false });
  box.receive({ seq: 1 });
  box.receive({ seq: 2 });
  await settle();
  assert.deepEqual(handled, [1, 2]);
  assert.deepEqual(acks.sent, []);
  box.ack(2);
  assert.deepEqual(acks.sent, [2]);
});

test('holes the broker made (prev not above the last seen) are not gaps', async () => {
  const acks = fakeAcks();
  const { box, handled } = inbox(acks, { autoAck: false });
  box.receive({ seq: 1, prev: 0 });
  box.receive({ seq: 4, prev: 1 }); // 2 and 3 dropped or expired
  box.receive({ seq: 2, prev: 0 }); // a redelivery
  await settle();
  assert.deepEqual(handled, [1, 4]);
  assert.deepEqual(acks.sent, []);
});

test('a gap in transit is not acked past: one resend is asked for, then all arrive in order', async () => {
  const acks = fakeAcks();
  const { box, handled, errors } = inbox(acks);
  box.receive({ seq: 1, prev: 0 });
  await settle();
  assert.deepEqual(acks.sent, [1]);
  await acks.complete();
  box.receive({ seq: 3, prev: 2 }); // 2 never arrived
  box.receive({ seq: 4, prev: 3 }); // in transit before the resend: the same gap
  await settle();
  assert.deepEqual(handled, [1], 'nothing after the gap is handed over');
  assert.deepEqual(acks.sent, [1, 'resend after 1'], 'one resend while it is in flight');
  await acks.complete();
  for (const [seq, prev] of [[2, 1], [3, 2], [4, 3]]) {
    box.receive({ seq, prev });
  }
  await settle();
  assert.deepEqual(handled, [1, 2, 3, 4]);
  assert.deepEqual(acks.sent.slice(2), [2], 'coalesced: one ack in flight');
  await acks.complete();
  assert.deepEqual(acks.sent.slice(2), [2, 4]);
  assert.deepEqual(errors, []);
});

test('a failed resend is reported and the next gap asks again', async () => {
  const acks = fakeAcks();
  const { box, errors } = inbox(acks);
  box.receive({ seq: 2, prev: 1 });
  await settle();
  await acks.complete(new Error('timeout'));
  assert.deepEqual(errors, ['timeout']);
  box.receive({ seq: 3, prev: 2 });
  await settle();
  assert.deepEqual(acks.sent, ['resend after 0', 'resend after 0']);
});

test("a renumbering begin drops the old numbering's queue, and acks nothing of it", async () => {
  const sent = [];
  const handled = [];
  let release;
  const box = new Inbox({
    sendAck: (upto) => {
      sent.push(upto);
      return Promise.resolve({});
    },
    handle: (n) => {
      handled.push(n.seq);
      return n.seq === 50 ? new Promise((r) => (release = r)) : undefined;
    },
  });
  for (let seq = 1; seq <= 49; seq++) {
    box.receive({ seq });
  }
  await settle();
  box.receive({ seq: 50 }); // its handler is slow
  box.receive({ seq: 51 }); // waiting behind it
  await settle();
  assert.equal(box.acked, 49);
  const before = sent.length;
  box.beginning();
  box.begun(3); // another broker: acked up to 3, holds 4.. not yet delivered
  release();
  await settle();
  await settle();
  assert.deepEqual(sent.slice(before), [], 'no ack of the old numbering under the new one');
  assert.deepEqual(handled.slice(-1), [50], 'seq 51 of the old numbering is not handed over');
  box.receive({ seq: 4, prev: 3 });
  await settle();
  assert.deepEqual(sent.slice(before), [4], "the new broker's own are delivered and acked");
});

test('a handler that fails after a begin it started before blocks nothing of the new instance', async () => {
  const acks = fakeAcks();
  const handled = [];
  let fail;
  const box = new Inbox({
    sendAck: acks.send,
    handle: (n) => {
      if (n.seq === 1 && !fail) {
        return new Promise((_, reject) => (fail = reject));
      }
      handled.push(n.seq);
    },
    onError: () => {},
  });
  box.receive({ seq: 1 });
  await settle();
  box.beginning(); // a begin while 1's handler runs: the broker sends 1 again
  box.begun(0);
  fail(new Error('the old instance is gone'));
  await settle();
  box.receive({ seq: 2 }); // the new instance's
  await settle();
  assert.deepEqual(handled, [2], 'delivery goes on');
  assert.deepEqual(acks.sent, [2]);
});

test('a failed ack is sent again after a pause, unless the broker refused it', async () => {
  const acks = fakeAcks();
  const { box } = inbox(acks);
  box.receive({ seq: 1 });
  await settle();
  assert.deepEqual(acks.sent, [1]);
  await acks.complete(Object.assign(new Error('no reply'), { code: 'timeout' }));
  assert.deepEqual(acks.sent, [1], 'not at once');
  await new Promise((r) => setTimeout(r, 150)); // the first pause is 100 ms
  assert.deepEqual(acks.sent, [1, 1], 'again');
  await acks.complete(Object.assign(new Error('ended'), { code: 'session_expired' }));
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(acks.sent, [1, 1], 'a refusal is final');
});

test("an ack confirmed after a renumbering begin does not count in the new numbering", async () => {
  const acks = fakeAcks();
  const { box } = inbox(acks);
  for (let seq = 1; seq <= 50; seq++) {
    box.receive({ seq });
  }
  await settle();
  await acks.complete(); // ack 1
  assert.deepEqual(acks.sent, [1, 50]);
  box.beginning();
  box.begun(0); // another broker: it acked nothing
  await acks.complete(); // the old ack 50, confirmed only now
  assert.equal(box.acked, 0, 'not 50: the new broker has acked nothing');
  box.receive({ seq: 1 });
  await settle();
  assert.deepEqual(acks.sent.slice(2), [1], "the new numbering's own ack goes out");
});
