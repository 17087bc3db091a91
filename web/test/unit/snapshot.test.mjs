// Unit tests of the client's snapshot keeping: the newest blob by version,
// persisted per user/session in an injected storage, presented at begin.
// Run by `node --test test/unit/` (TestJSUnit).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SnapshotKeeper, defaultStorage, snapshotKey } from '../../src/snapshot.js';
import { Client, Codes, TetherError } from '../../src/tether.js';

// memoryStorage is the part of the Web Storage API the keeper uses.
function memoryStorage(entries = {}) {
  const m = new Map(Object.entries(entries));
  return {
    map: m,
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

const KEY = snapshotKey('alice', 'cart');
const stored = (storage) => JSON.parse(storage.getItem(KEY));

test('the storage key is per user and session', () => {
  assert.equal(snapshotKey('alice', 'cart'), 'tether:snapshot:alice/cart');
  assert.notEqual(snapshotKey('alice', 'cart'), snapshotKey('bob', 'cart'));
  assert.notEqual(snapshotKey('alice', 'cart'), snapshotKey('alice', 'cart2'));
});

test('keeps the newest blob by version; older, equal and malformed ones are ignored', () => {
  const storage = memoryStorage();
  const k = new SnapshotKeeper({ key: KEY, storage });
  assert.equal(k.current(), null);
  assert.equal(k.keep(2, 'ts1.two'), true);
  assert.deepEqual(k.current(), { version: 2, blob: 'ts1.two' });
  assert.equal(k.keep(1, 'ts1.one'), false, 'older: a late arrival');
  assert.equal(k.keep(2, 'ts1.two-again'), false, 'same version: nothing newer');
  assert.equal(k.keep(5, 'ts1.five'), true, 'versions may skip');
  assert.equal(k.keep(4, 'ts1.four'), false);
  for (const [v, b] of [[6, ''], [6, null], [0, 'ts1.zero'], [-1, 'x'], [6.5, 'x'], ['7', 'x'], [undefined, 'x'], [7, 42]]) {
    assert.equal(k.keep(v, b), false, `keep(${JSON.stringify(v)}, ${JSON.stringify(b)})`);
  }
  assert.deepEqual(k.current(), { version: 5, blob: 'ts1.five' });
  assert.deepEqual(stored(storage), { version: 5, blob: 'ts1.five' });
});

test('a new keeper starts from what is stored; a stored newer one wins at load', () => {
  const storage = memoryStorage();
  new SnapshotKeeper({ key: KEY, storage }).keep(3, 'ts1.three');
  const k = new SnapshotKeeper({ key: KEY, storage });
  assert.deepEqual(k.current(), { version: 3, blob: 'ts1.three' });
  assert.equal(k.keep(3, 'ts1.other'), false, 'what was stored counts as held');

  // Another tab (same storage) keeps a newer one: load adopts it, and this
  // keeper never writes an older one over it.
  const other = new SnapshotKeeper({ key: KEY, storage });
  assert.equal(other.keep(9, 'ts1.nine'), true);
  assert.equal(k.keep(4, 'ts1.four'), true, 'newer than what this one held');
  assert.deepEqual(stored(storage), { version: 9, blob: 'ts1.nine' }, 'not overwritten by an older one');
  assert.deepEqual(k.load(), { version: 9, blob: 'ts1.nine' });
  assert.equal(k.keep(8, 'ts1.eight'), false);
});

test('other sessions and damaged entries do not count', () => {
  const storage = memoryStorage({
    [snapshotKey('alice', 'other')]: JSON.stringify({ version: 50, blob: 'ts1.other' }),
    [KEY]: '{not json',
  });
  const k = new SnapshotKeeper({ key: KEY, storage });
  assert.equal(k.current(), null);
  assert.equal(k.keep(1, 'ts1.one'), true);
  assert.deepEqual(stored(storage), { version: 1, blob: 'ts1.one' }, 'a damaged entry is overwritten');
  storage.setItem(KEY, JSON.stringify({ version: 'x', blob: 'ts1.bad' }));
  assert.deepEqual(k.load(), { version: 1, blob: 'ts1.one' });
});

test('an initial blob (version unknown) is replaced by any stored or sent one', () => {
  const k = new SnapshotKeeper({ key: KEY, storage: null, initial: 'ts1.app' });
  assert.deepEqual(k.current(), { version: 0, blob: 'ts1.app' });
  assert.equal(k.keep(1, 'ts1.one'), true);

  const storage = memoryStorage({ [KEY]: JSON.stringify({ version: 2, blob: 'ts1.two' }) });
  assert.deepEqual(new SnapshotKeeper({ key: KEY, storage, initial: 'ts1.app' }).current(), { version: 2, blob: 'ts1.two' });
  assert.deepEqual(new SnapshotKeeper({ key: KEY, storage, initial: { version: 7, blob: 'ts1.seven' } }).current(), {
    version: 7,
    blob: 'ts1.seven',
  });
});

test('without a storage it keeps in memory; a failing storage is reported, not fatal', () => {
  const k = new SnapshotKeeper({ key: KEY, storage: null });
  assert.equal(k.keep(1, 'ts1.one'), true);
  assert.deepEqual(k.load(), { version: 1, blob: 'ts1.one' });

  const errors = [];
  const full = {
    getItem: () => null,
    setItem: () => {
      throw new Error('QuotaExceededError');
    },
    removeItem: () => {},
  };
  const f = new SnapshotKeeper({ key: KEY, storage: full, onError: (err) => errors.push(err.message) });
  assert.equal(f.keep(1, 'ts1.one'), true);
  assert.deepEqual(f.current(), { version: 1, blob: 'ts1.one' });
  assert.deepEqual(errors, ['QuotaExceededError']);
  assert.equal(defaultStorage(), null, 'node has no localStorage');
});

test('forget drops a refused blob from memory and storage, but not a newer one', () => {
  const storage = memoryStorage();
  const k = new SnapshotKeeper({ key: KEY, storage });
  k.keep(3, 'ts1.three');
  k.forget('ts1.three');
  assert.equal(k.current(), null);
  assert.equal(storage.getItem(KEY), null);
  assert.equal(k.keep(1, 'ts1.one'), true, 'any version after forgetting');
  k.forget('ts1.zzz');
  assert.deepEqual(k.current(), { version: 1, blob: 'ts1.one' });
  assert.deepEqual(stored(storage), { version: 1, blob: 'ts1.one' });
});

// The client, without a broker: messages fed to onMessage, requests caught.
function client(storage, options = {}) {
  const c = new Client('ws://127.0.0.1:1/mqtt', 'alice', 'tok', 'cart', { storage, ...options });
  c.sent = [];
  c.replies = [];
  c.request = async (op, fields) => {
    c.sent.push({ op, ...fields });
    const r = c.replies.shift();
    if (r instanceof Error) {
      throw r;
    }
    return r ?? { nonce: 'n1', next_seq: 1, acked: 0 };
  };
  return c;
}

const message = (c, leaf, body) => c.onMessage(`sessions/alice/cart/${leaf}`, new TextEncoder().encode(JSON.stringify(body)));

test('the client subscribes to the snapshot topic, keeps the newest, emits it, and presents it at begin', async () => {
  const storage = memoryStorage();
  const fromOption = [];
  const c = client(storage, { onSnapshot: (s) => fromOption.push(s.version) });
  assert.deepEqual(c.subscriptions['sessions/alice/cart/snapshot'], { qos: 0 });
  const events = [];
  c.on('snapshot', (s) => events.push(s));

  await c.begin();
  assert.deepEqual(c.sent, [{ op: 'begin' }], 'nothing to restore yet');

  message(c, 'snapshot', { version: 2, blob: 'ts1.two' });
  message(c, 'snapshot', { version: 1, blob: 'ts1.one' });
  message(c, 'snapshot', { version: 3 });
  message(c, 'snapshot', { version: 4, blob: 'ts1.four' });
  message(c, 'snapshot', { version: 4, blob: 'ts1.four-again' });
  assert.deepEqual(events, [
    { version: 2, blob: 'ts1.two' },
    { version: 4, blob: 'ts1.four' },
  ]);
  assert.deepEqual(fromOption, [2, 4]);
  assert.deepEqual(c.snapshot(), { version: 4, blob: 'ts1.four' });
  assert.deepEqual(JSON.parse(storage.getItem(snapshotKey('alice', 'cart'))), { version: 4, blob: 'ts1.four' });

  await c.begin();
  assert.deepEqual(c.sent[1], { op: 'begin', restore: 'ts1.four' });

  // A page that comes back (a new client on the same storage) presents it too.
  const again = client(storage);
  assert.deepEqual(again.snapshot(), { version: 4, blob: 'ts1.four' });
  await again.begin();
  assert.deepEqual(again.sent, [{ op: 'begin', restore: 'ts1.four' }]);
  c.close();
  again.close();
});

test('a snapshot the broker refuses fails that begin and is not presented again', async () => {
  const storage = memoryStorage({ [snapshotKey('alice', 'cart')]: JSON.stringify({ version: 4, blob: 'ts1.stale' }) });
  const c = client(storage);
  c.replies.push(new TetherError(Codes.BadRequest, 'restore refused: snapshot: expired'));
  await assert.rejects(c.begin(), (err) => err.code === Codes.BadRequest);
  assert.equal(c.snapshot(), null);
  assert.equal(storage.getItem(snapshotKey('alice', 'cart')), null);
  await c.begin();
  assert.deepEqual(c.sent, [
    { op: 'begin', restore: 'ts1.stale' },
    { op: 'begin' },
  ]);

  // Other failures (the connection, a busy session) keep it.
  const d = client(memoryStorage({ [snapshotKey('alice', 'cart')]: JSON.stringify({ version: 4, blob: 'ts1.ok' }) }));
  d.replies.push(new TetherError(Codes.ConnectionLost, 'dropped'));
  await assert.rejects(d.begin());
  assert.deepEqual(d.snapshot(), { version: 4, blob: 'ts1.ok' });
  c.close();
  d.close();
});
