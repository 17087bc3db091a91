// Unit tests of the client without a broker: messages fed to onMessage,
// requests answered by a fake that keeps the broker's acked seq and nonce.
// Run by `node --test test/unit/` (TestJSUnit).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Client, Codes, StaleNonceError, TetherError } from '../../src/tether.js';

const settle = () => new Promise((r) => setTimeout(r, 5));

function client() {
  const c = new Client('ws://127.0.0.1:1/mqtt', 'alice', 'tok', 'lamp', { storage: null, manualPing: true });
  const broker = { nonce: 'n1', acked: 0, sent: [] };
  c.request = async (op, fields, _resend, onOK) => {
    broker.sent.push(op + (fields.upto !== undefined ? ` ${fields.upto}` : ''));
    await settle(); // answered in order, a little later
    if (op === 'begin') {
      const ok = { nonce: broker.nonce, next_seq: 1, acked: broker.acked };
      onOK?.(ok);
      return ok;
    }
    if (fields.nonce !== broker.nonce) {
      throw new TetherError(Codes.StaleNonce, 'another instance took over');
    }
    if (op === 'ack') {
      broker.acked = Math.max(broker.acked, fields.upto);
    }
    if (op === 'end') {
      broker.nonce = '';
    }
    return {};
  };
  c.on('error', () => {});
  return { c, broker };
}

const message = (c, leaf, body) => c.onMessage(`sessions/alice/lamp/${leaf}`, new TextEncoder().encode(JSON.stringify(body)));

test('end acknowledges every handled notification before it ends', async () => {
  const { c, broker } = client();
  const handled = [];
  c.onNotify((n) => handled.push(n.seq));
  await c.begin();
  message(c, 'notify', { seq: 1, prev: 0, data: 1 });
  await new Promise((r) => setTimeout(r, 0)); // ack 1 in flight
  message(c, 'notify', { seq: 2, prev: 1, data: 2 }); // handled; its ack waits for ack 1
  await new Promise((r) => setTimeout(r, 0));
  await c.end();
  c.close();
  assert.deepEqual(handled, [1, 2]);
  assert.equal(broker.acked, 2, `sent: ${broker.sent.join(', ')}`);
  assert.equal(broker.sent.at(-1), 'end', 'the acks went before the end');
});

test("the broker's takeover notice ends the instance: 'stale', and no more notifications", async () => {
  const { c, broker } = client();
  const handled = [];
  const stale = [];
  c.onNotify((n) => handled.push(n.seq));
  c.on('stale', (err) => stale.push(err.code));
  await c.begin();
  message(c, 'res', { id: null, superseded: 'another nonce', error: { code: 'stale_nonce', message: 'x' } });
  assert.deepEqual(stale, [], "a notice for another instance's nonce changes nothing");
  message(c, 'res', { id: null, superseded: 'n1', error: { code: 'stale_nonce', message: 'taken over' } });
  assert.deepEqual(stale, [Codes.StaleNonce]);
  message(c, 'notify', { seq: 1, prev: 0, data: 'for the new instance' });
  await settle();
  assert.deepEqual(handled, [], "the new instance's notification is not handed over");
  await assert.rejects(c.call('m'), (err) => err.code === Codes.StaleNonce, 'as the broker would answer');

  broker.nonce = 'n2'; // begin again: current once more
  await c.begin();
  message(c, 'notify', { seq: 1, prev: 0, data: 'mine again' });
  await settle();
  assert.deepEqual(handled, [1]);
  c.close();
});

test('a notice that overtakes our own begin reply still ends that instance', async () => {
  const { c, broker } = client();
  const stale = [];
  c.on('stale', (err) => stale.push(err.code));
  // Another device began while our begin waited for its reply: the notice names our new nonce first.
  broker.nonce = 'n9';
  message(c, 'res', { id: null, superseded: 'n9', error: { code: 'stale_nonce', message: 'x' } });
  assert.deepEqual(stale, [], 'not ours yet');
  await c.begin();
  assert.deepEqual(stale, [Codes.StaleNonce], 'dead at birth');
  await assert.rejects(c.ping(), (err) => err.code === Codes.StaleNonce);
  c.close();
});

test("end's own reply ends the instance: a ping's stale_nonce read right after it is no takeover", async () => {
  const { c } = client();
  const stale = [];
  c.on('stale', () => stale.push(1));
  await c.begin();
  const real = c.request;
  c.request = (op, fields, resend, onOK) => {
    if (op !== 'end') {
      return real(op, fields, resend, onOK);
    }
    // The broker answers end and, in the same read, a ping sent before it
    // with the same nonce: its stale_nonce is settled before end() resumes.
    onOK?.({});
    c.pending.set('ping', { nonce: fields.nonce, resolve() {}, reject() {}, timer: null });
    c.settle('ping', null, new StaleNonceError('the session ended'));
    return Promise.resolve({});
  };
  await c.end();
  assert.deepEqual(stale, [], 'no stale event after our own end');
  c.close();
});

test('a refused reconnect is told once, and the client keeps trying, slowly, until accepted again', async () => {
  const c = new Client('ws://127.0.0.1:1/mqtt', 'alice', 'tok', 'lamp', { storage: null, manualPing: true, reconnectMaxMs: 30000 });
  const errors = [];
  c.on('error', (err) => errors.push(err.code));
  c.firstConnect = null; // connected once before
  const refusedConn = () => {
    const m = { end() {}, tetherClosed: false };
    c.mqtt = m;
    c.onMqttError(m, { code: 5 }); // CONNACK: not authorized
    c.onClose(m);
  };
  refusedConn();
  assert.deepEqual(errors, [Codes.Unauthorized]);
  assert.notEqual(c.reconnectTimer, null, 'another attempt is scheduled');
  assert.equal(c.retryMs, 30000, 'at the slowest pace');
  refusedConn();
  assert.deepEqual(errors, [Codes.Unauthorized], 'told once');
  clearTimeout(c.reconnectTimer);
  c.close();
});
