// Tether's browser client: a device's session over MQTT over WebSocket,
// speaking docs/protocol.md like the Go SDK (client/client.go) does.
//
// The crash discipline: connect, begin (read the memento and phase), resume
// after the memento, call or remember as you go, end when done. A page that
// was reloaded does the same: begin returns crashed=true and the last
// memento, so nothing committed is done twice.
//
//   const c = await connect('ws://host:8083/mqtt', 'alice', token, 'kitchen');
//   c.on('tick', (t) => …); c.on('lost', …); c.on('recovered', …);
//   c.onNotify(async (n) => …);          // in seq order, once each, then acked
//   const b = await c.begin();           // {nonce, memento, crashed, phase, remaining_ms, next_seq, …}
//   const reply = await c.call('buy', {item: 'toaster'}, b.memento + 1);
//   await c.end();
//
// With snapshot keys on the broker, the client keeps the session's newest
// sealed snapshot (in localStorage, per user/session) and presents it at
// begin, so that a broker which lost the session restores it.
import mqtt from 'mqtt';
import { clearInterval as workerClearInterval, setInterval as workerSetInterval } from 'worker-timers';

import { Inbox } from './inbox.js';
import { SnapshotKeeper, defaultStorage, snapshotKey } from './snapshot.js';

export { Inbox, SnapshotKeeper, snapshotKey };

/** Codes are the broker's error codes (docs/protocol.md) and the client's own. */
export const Codes = Object.freeze({
  BadRequest: 'bad_request',
  Unauthorized: 'unauthorized',
  Forbidden: 'forbidden',
  StaleNonce: 'stale_nonce',
  SessionBusy: 'session_busy',
  SessionExpired: 'session_expired',
  UnknownMethod: 'unknown_method',
  QueueFull: 'queue_full',
  TooLarge: 'too_large',
  Internal: 'internal',
  // The client's own:
  ConnectionLost: 'connection_lost', // not connected, or the connection dropped before a reply that cannot be resent (begin)
  Timeout: 'timeout', // no reply within the request timeout
  NotBegun: 'not_begun', // no current instance: begin first
  Closed: 'closed', // close() was called
});

/** TetherError is an error reply from the broker or a failure of the client; code is one of Codes. */
export class TetherError extends Error {
  constructor(code, message) {
    super(`tether: ${code}: ${message}`);
    this.name = 'TetherError';
    this.code = code;
    this.reason = message;
  }
}

/**
 * StaleNonceError means another instance took over (another tab or device
 * began the session) or the session ended: this instance is dead. Begin
 * again to carry on.
 */
export class StaleNonceError extends TetherError {
  constructor(message) {
    super(Codes.StaleNonce, message);
    this.name = 'StaleNonceError';
  }
}

/** isStaleNonce reports whether err means this instance was taken over. */
export const isStaleNonce = (err) => err instanceof TetherError && err.code === Codes.StaleNonce;

/** defaults are the timings matching the broker's defaults (and the Go client's). */
export const defaults = Object.freeze({
  keepaliveSec: 10, // MQTT keepalive; the broker notices a dead socket within 1.5×
  requestTimeoutMs: 10_000, // a request without a reply by then fails with Codes.Timeout
  tickIntervalMs: 5_000, // expected tick interval until begin says the broker's
  lostAfter: 3, // missed ticks before 'lost'
  reconnectMinMs: 250, // first reconnect delay, doubled up to reconnectMaxMs
  reconnectMaxMs: 2_000,
  manualPing: false, // the application pings itself; no automatic pings
  autoAck: true, // ack each notification once its handler resolved
  trace: null, // (direction '>'|'<', topic, text) => void: every request sent and message received
  // Snapshots: where the newest one is kept. undefined: localStorage when
  // the page has it; null: memory only; or any {getItem, setItem, removeItem}.
  storage: undefined,
  snapshot: '', // a blob the application kept itself, presented at begin unless a newer one is stored
  onSnapshot: null, // ({version, blob}) => void: each newer snapshot, once kept (the 'snapshot' event)
});

const NAME = /^[A-Za-z0-9._-]{1,64}$/;

function checkName(what, v) {
  if (typeof v !== 'string' || !NAME.test(v)) {
    throw new TypeError(`tether: ${what} ${JSON.stringify(v)} must match [A-Za-z0-9._-]{1,64}`);
  }
}

function randomHex(bytes) {
  const b = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// Timers that keep running at full rate in a background tab (as mqtt.js's
// keepalive does): a throttled page would otherwise ping too rarely and be
// detached by the broker's sweep.
const timers =
  typeof window !== 'undefined' && typeof Worker !== 'undefined'
    ? { every: workerSetInterval, stop: workerClearInterval }
    : { every: (fn, ms) => setInterval(fn, ms), stop: (id) => clearInterval(id) };

/**
 * connect opens a connection to the broker at url (ws:// or wss://) as user
 * with an auth token, for one logical session, with a last will on the
 * session's presence topic, and subscribes to the session's topics before
 * it resolves. It reconnects by itself after a drop.
 */
export async function connect(url, user, token, session, options = {}) {
  const c = new Client(url, user, token, session, options);
  await c.open();
  return c;
}

/**
 * Client is one page's connection to one session. Events (on):
 *   'tick' (tick)        the broker's tick or a ping's reply: {remaining_ms?, state, phase?, server_time}
 *   'lost'               no tick for lostAfter tick intervals
 *   'recovered'          ticks arrive again after 'lost'
 *   'link' ('up'|'down') the MQTT connection itself
 *   'stale' (err)        another instance took over: this one is dead; begin again
 *   'acked' (upto)       the broker confirmed notifications up to upto
 *   'snapshot' ({version, blob}) a newer sealed snapshot of the session, kept (and stored)
 *   'error' (err)        something the application may want to show (a failed ack, a refused
 *                        reconnect — told once; the client keeps trying at its slowest pace and
 *                        carries on if accepted again —, a storage that failed to keep a
 *                        snapshot: op 'snapshot')
 */
export class Client {
  constructor(url, user, token, session, options = {}) {
    if (typeof url !== 'string' || !/^wss?:\/\//.test(url)) {
      throw new TypeError(`tether: url ${JSON.stringify(url)} must start with ws:// or wss://`);
    }
    checkName('user', user);
    checkName('session', session);
    this.opts = { ...defaults, ...options };
    if (!(this.opts.lostAfter >= 1) || !(this.opts.requestTimeoutMs > 0) || !(this.opts.tickIntervalMs > 0)) {
      throw new TypeError('tether: lostAfter ≥ 1, requestTimeoutMs and tickIntervalMs > 0');
    }
    this.url = url;
    this.user = user;
    this.token = token;
    this.session = session;
    const base = `sessions/${user}/${session}/`;
    this.topics = {
      req: base + 'req',
      res: base + 'res',
      tick: base + 'tick',
      notify: base + 'notify',
      presence: base + 'presence',
      snapshot: base + 'snapshot',
    };
    // Explicit topics rather than sessions/U/S/+, as the Go client does:
    // mochi v2.7.9 reads a topic's retained path without a lock when a
    // wildcard filter scans it, racing with the broker's retained presence.
    this.subscriptions = {
      [this.topics.res]: { qos: 1 },
      [this.topics.tick]: { qos: 0 },
      [this.topics.notify]: { qos: 1 },
      [this.topics.snapshot]: { qos: 0 }, // a lost one is superseded by the next
    };
    // Every device of a session reads the same res topic: request ids are
    // unique across devices, not just on this connection.
    this.connId = randomHex(8);
    this.clientId = this.opts.clientId ?? `tether-${user}-${randomHex(6)}`;

    this.counter = 0;
    this.pending = new Map(); // request id -> {payload, nonce, gen, sent, resend, resolve, reject, timer}
    this.nonce = '';
    this.nextSeq = 0;
    this.callQueue = Promise.resolve(); // one call at a time, so seqs reach the broker in order
    this.cursor = undefined;

    this.mqtt = null;
    this.connected = false;
    this.gen = 0; // connections made (and subscribed) so far
    this.closed = false;
    this.retryMs = this.opts.reconnectMinMs;
    this.reconnectTimer = null;

    this.interval = this.opts.tickIntervalMs; // ping and watchdog period
    this.lastTick = Date.now();
    this.lost = false;
    this.expired = false; // the session's window is over: no ticks, no pings
    this.stale = false; // taken over: notifications are the new instance's until the next begin
    this.replaced = []; // nonces the broker said were replaced, not ours when told (newest last)
    this.watchdogTimer = null;
    this.lastPing = 0;

    this.listeners = new Map();
    this.inbox = new Inbox({
      sendAck: (upto, resend) => this.sendAck(upto, resend),
      canAck: () => this.nonce !== '',
      onAcked: (upto) => this.emit('acked', upto),
      onError: (err) => this.emit('error', err),
      autoAck: this.opts.autoAck,
    });
    if (typeof this.opts.onSnapshot === 'function') {
      this.on('snapshot', this.opts.onSnapshot);
    }
    this.snapshots = new SnapshotKeeper({
      key: snapshotKey(user, session),
      storage: this.opts.storage === undefined ? defaultStorage() : this.opts.storage,
      initial: this.opts.snapshot,
      onError: (err) => this.emit('error', Object.assign(err instanceof Error ? err : new Error(String(err)), { op: 'snapshot' })),
    });
  }

  /**
   * snapshot is the newest sealed snapshot of the session this client holds,
   * {version, blob}, or null: what begin presents as restore.
   */
  snapshot() {
    return this.snapshots.current();
  }

  /** on registers fn for event and returns a function that removes it. */
  on(event, fn) {
    if (!this.listeners.has(event)) {
      this.listeners.set(event, new Set());
    }
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event)?.delete(fn);
  }

  emit(event, ...args) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`tether: ${event} listener failed`, err);
      }
    }
  }

  /**
   * onNotify sets the notification handler: it is called one notification at
   * a time, in seq order, never twice for a seq; once it resolves the
   * notification is acknowledged (cumulatively, coalesced), unless autoAck is
   * off and the application calls ack(seq) itself. A handler that throws
   * leaves the notification unacknowledged, and nothing more is handed
   * over until the next begin, which delivers it (and what follows) again.
   */
  onNotify(handler) {
    this.inbox.handle = handler;
  }

  /** ack acknowledges every notification up to seq (with autoAck off). */
  ack(seq) {
    this.inbox.ack(seq);
  }

  /** open makes the first connection; connect() calls it. */
  open() {
    return new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject };
      this.timeoutFirst = setTimeout(() => {
        this.failFirst(new TetherError(Codes.Timeout, `connect ${this.url}: no answer within ${this.opts.requestTimeoutMs} ms`));
      }, this.opts.requestTimeoutMs);
      this.dial();
    });
  }

  failFirst(err) {
    if (!this.firstConnect) {
      return;
    }
    const { reject } = this.firstConnect;
    this.firstConnect = null;
    clearTimeout(this.timeoutFirst);
    this.shutdown();
    reject(err);
  }

  dial() {
    const will = { topic: this.topics.presence, payload: JSON.stringify({ state: 'offline', conn: this.connId }), qos: 1, retain: false };
    // Reconnects are ours, not mqtt.js's: a fresh mqtt.js client per
    // connection, so that nothing is resent behind our back (a begin must
    // never be), and what is safe to resend is resent below.
    const m = mqtt.connect(this.url, {
      clientId: this.clientId,
      username: this.user,
      password: this.token,
      protocolVersion: 4,
      clean: true,
      keepalive: this.opts.keepaliveSec,
      connectTimeout: this.opts.requestTimeoutMs,
      reconnectPeriod: 0,
      resubscribe: false,
      will,
    });
    this.mqtt = m;
    m.on('connect', () => this.onConnect(m));
    m.on('message', (topic, payload) => this.onMessage(topic, payload));
    m.on('error', (err) => this.onMqttError(m, err));
    m.on('close', () => this.onClose(m));
  }

  onMqttError(m, err) {
    if (m !== this.mqtt) {
      return;
    }
    // CONNACK 4 (bad username or password) and 5 (not authorized): the
    // token is wrong, expired or revoked, or the broker could not check it.
    if (err && (err.code === 4 || err.code === 5 || err.code === 134 || err.code === 135)) {
      this.refused = new TetherError(Codes.Unauthorized, 'the broker refused the user or token (bad, expired or revoked)');
    }
  }

  onConnect(m) {
    if (m !== this.mqtt) {
      return;
    }
    m.subscribe(this.subscriptions, (err, granted) => {
      if (m !== this.mqtt) {
        return;
      }
      if (err || !granted || granted.some((g) => g.qos >= 0x80)) {
        const e = new TetherError(Codes.Forbidden, `subscribe to sessions/${this.user}/${this.session}/… refused`);
        if (this.firstConnect) {
          this.failFirst(e);
        } else {
          this.emit('error', e);
        }
        return;
      }
      this.connected = true;
      this.refused = null; // accepted again: a refusal was the broker's passing fault
      this.refusedTold = false;
      this.retryMs = this.opts.reconnectMinMs;
      const gen = ++this.gen;
      this.emit('link', 'up');
      if (this.firstConnect) {
        const { resolve } = this.firstConnect;
        this.firstConnect = null;
        clearTimeout(this.timeoutFirst);
        this.startWatchdog();
        resolve(this);
      }
      this.resend(gen);
      // Re-attach the instance to this connection at once, so ticks resume
      // without waiting for the next scheduled ping.
      if (this.nonce && !this.opts.manualPing && gen > 1) {
        this.autoPing();
      }
    });
  }

  // resend sends again, on connection gen, what was not answered: requests
  // never sent, and those safe to repeat (everything but begin).
  resend(gen) {
    for (const [id, p] of this.pending) {
      if (p.sent && p.gen >= gen) {
        continue;
      }
      if (!p.sent || p.resend) {
        p.sent = true;
        p.gen = gen;
        this.publish(p.payload);
      } else {
        this.settle(id, null, new TetherError(Codes.ConnectionLost, 'the connection dropped before the reply; begin again'));
      }
    }
  }

  onClose(m) {
    if (m !== this.mqtt || m.tetherClosed) {
      return;
    }
    m.tetherClosed = true; // mqtt.js may report a close more than once
    const was = this.connected;
    this.connected = false;
    if (was) {
      this.emit('link', 'down');
    }
    if (this.firstConnect) {
      this.failFirst(this.refused ?? new TetherError(Codes.ConnectionLost, `cannot reach ${this.url}`));
      return;
    }
    if (this.closed) {
      return;
    }
    if (this.refused && !this.refusedTold) {
      // Said once; the client keeps trying (slowly), as a refusal may be
      // the broker's passing fault (restarted on the wrong data, say): a
      // revoked token never passes, so the page should offer a new one.
      this.refusedTold = true;
      this.emit('error', this.refused);
    }
    if (this.refused) {
      this.retryMs = this.opts.reconnectMaxMs;
    }
    m.end(true);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (!this.closed) {
        this.dial();
      }
    }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, this.opts.reconnectMaxMs);
  }

  publish(payload) {
    this.opts.trace?.('>', this.topics.req, payload);
    this.mqtt.publish(this.topics.req, payload, { qos: 1 });
  }

  onMessage(topic, payload) {
    let msg;
    try {
      const text = new TextDecoder().decode(payload);
      this.opts.trace?.('<', topic, text);
      msg = JSON.parse(text);
    } catch {
      return; // not ours to judge: only JSON is spoken on these topics
    }
    switch (topic) {
      case this.topics.res:
        if (msg && typeof msg.superseded === 'string' && msg.superseded !== '') {
          // The broker's notice that another begin replaced this instance,
          // or the one a begin of ours still waiting for its reply made
          // (the notice overtook the reply): begin's onOK looks here.
          if (msg.superseded === this.nonce) {
            this.takenOver(this.errorOf(msg.error ?? { code: Codes.StaleNonce }));
          } else {
            this.replaced = [...this.replaced.slice(-7), msg.superseded];
          }
        } else if (msg && typeof msg.id === 'string') {
          this.settle(msg.id, msg.ok ?? {}, msg.error ? this.errorOf(msg.error) : null);
        }
        break;
      case this.topics.tick:
        this.gotTick(msg);
        break;
      case this.topics.notify:
        if (!this.stale) {
          this.inbox.receive(msg); // taken over: they are the new instance's
        }
        break;
      case this.topics.snapshot:
        if (msg && this.snapshots.keep(msg.version, msg.blob)) {
          this.emit('snapshot', { version: msg.version, blob: msg.blob });
        }
        break;
    }
  }

  errorOf(e) {
    const code = typeof e.code === 'string' ? e.code : Codes.Internal;
    const message = typeof e.message === 'string' ? e.message : '';
    return code === Codes.StaleNonce ? new StaleNonceError(message) : new TetherError(code, message);
  }

  settle(id, ok, err) {
    const p = this.pending.get(id);
    if (!p) {
      return; // another device's reply, or one that came after its timeout
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (!err) {
      p.onOK?.(ok);
      p.resolve(ok);
      return;
    }
    if (err.code === Codes.SessionExpired) {
      this.expired = true;
    }
    if (err.code === Codes.StaleNonce && p.nonce && p.nonce === this.nonce) {
      this.takenOver(err);
    }
    p.reject(err);
  }

  /**
   * noInstance is the error of a request without a current instance: a
   * StaleNonceError once the last one was taken over (as the broker would
   * answer, so the crash discipline sees one error), else not_begun.
   */
  noInstance() {
    return this.stale
      ? new StaleNonceError('another instance took the session over; begin again')
      : new TetherError(Codes.NotBegun, 'no current instance: begin first');
  }

  /**
   * takenOver ends this instance: another took over (or the session
   * ended). It stops pinging, hands over no more notifications (they are
   * the new instance's), and says so once, as 'stale'.
   */
  takenOver(err) {
    this.nonce = '';
    this.stale = true;
    this.emit('stale', err);
  }

  gotTick(t) {
    if (!t || typeof t !== 'object') {
      return;
    }
    this.lastTick = Date.now();
    if (t.state === 'expired') {
      this.expired = true; // no more ticks will come, and that is not a lost connection
    }
    if (this.lost) {
      this.lost = false;
      this.emit('recovered');
    }
    this.emit('tick', t);
  }

  startWatchdog() {
    // Check often so that 'lost' is reported close to the moment it is due;
    // ping once per interval.
    this.watchdogTimer = timers.every(() => this.watch(), 250);
  }

  watch() {
    if (this.closed || this.expired) {
      return;
    }
    const now = Date.now();
    if (!this.lost && this.nonce && now - this.lastTick > this.opts.lostAfter * this.interval) {
      this.lost = true;
      this.emit('lost');
    }
    if (!this.opts.manualPing && this.nonce && this.connected && now - this.lastPing >= this.interval) {
      this.autoPing();
    }
  }

  autoPing() {
    this.lastPing = Date.now();
    this.ping().catch(() => {}); // a stale nonce is reported as 'stale'; the rest shows as missed ticks
  }

  // pace adopts the broker's timings: ping at the tick interval, and at
  // least three times within the liveness so the sweep never detaches a
  // live page.
  pace(tickMs, livenessMs) {
    let every = tickMs > 0 ? tickMs : this.interval;
    if (livenessMs > 0 && livenessMs / 3 < every) {
      every = livenessMs / 3;
    }
    this.interval = every;
  }

  /**
   * request publishes one request and resolves with the reply's ok value.
   * resend: safe to send again after a reconnect (everything but begin).
   * onOK, if given, runs with the ok value as the reply arrives, before any
   * later message is looked at (a promise's continuation runs later).
   */
  request(op, fields, resend, onOK) {
    if (this.closed) {
      return Promise.reject(new TetherError(Codes.Closed, 'the client is closed'));
    }
    const id = `${this.connId}.${++this.counter}`;
    const payload = JSON.stringify({ id, op, ...fields });
    return new Promise((resolve, reject) => {
      const p = { payload, nonce: fields.nonce, gen: this.gen, sent: false, resend, onOK, resolve, reject };
      p.timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(new TetherError(Codes.Timeout, `${op}: no reply within ${this.opts.requestTimeoutMs} ms`));
        }
      }, this.opts.requestTimeoutMs);
      this.pending.set(id, p);
      if (this.connected) {
        // A request made while disconnected is sent by resend() on the next connection.
        p.sent = true;
        this.publish(payload);
      }
    });
  }

  /**
   * begin starts a new instance of the session and resolves with
   * {nonce, memento, crashed, state, phase, remaining_ms?, next_seq,
   * tick_interval_ms, liveness_ms, acked, queued}; the queued notifications
   * follow the reply. A begin that was sent when the
   * connection dropped is not sent again (that could start a second
   * instance): it fails with Codes.ConnectionLost; begin again.
   *
   * It presents the newest snapshot held (snapshot()) as restore: a broker
   * that lost the session restores it from that. A snapshot the broker
   * refuses (it has no snapshot keys, or not this blob's, or the blob
   * expired) fails the begin with that reason and is forgotten, so the
   * next begin goes without it.
   */
  async begin() {
    this.inbox.beginning();
    const snap = this.snapshots.load();
    let b;
    try {
      // The queued notifications follow the reply, maybe in the same read:
      // the inbox must know the new instance's acked seq before them.
      b = await this.request('begin', snap ? { restore: snap.blob } : {}, false, (ok) => {
        this.nonce = ok.nonce;
        this.stale = false;
        this.inbox.begun(typeof ok.acked === 'number' ? ok.acked : 0);
        if (this.replaced.includes(ok.nonce)) {
          // Another device began between this begin and its reply: dead at birth.
          this.takenOver(new StaleNonceError('another instance began before this begin was answered; begin again'));
        }
      });
    } catch (err) {
      if (snap && (err.code === Codes.BadRequest || err.code === Codes.TooLarge)) {
        this.snapshots.forget(snap.blob);
      }
      throw err;
    }
    this.nextSeq = b.next_seq;
    this.pace(b.tick_interval_ms, b.liveness_ms);
    this.lastTick = Date.now(); // a reply is a sign of life too
    this.expired = false;
    if (this.lost) {
      this.lost = false;
      this.emit('recovered');
    }
    return b;
  }

  /**
   * call makes an exactly-once call of method with args; memento, when not
   * undefined, is committed with it. The call is numbered (seq) and sent
   * again with the same seq after a reconnect, so a network blip never runs
   * it twice: a retry gets the stored reply. It resolves with the handler's
   * reply. A StaleNonceError means another instance took over.
   *
   * options.seq resends an earlier call (seq < this instance's next seq, for
   * example the last one a crashed page made: begin's next_seq - 1): the
   * broker answers with its stored reply and runs nothing.
   */
  call(method, args, memento, options = {}) {
    const run = async () => {
      if (!this.nonce) {
        throw this.noInstance();
      }
      const nonce = this.nonce;
      const earlier = options.seq !== undefined;
      const seq = earlier ? options.seq : this.nextSeq;
      if (earlier && !(Number.isSafeInteger(seq) && seq >= 1 && seq < this.nextSeq)) {
        throw new TetherError(Codes.BadRequest, `seq ${seq}: an earlier call's seq is between 1 and ${this.nextSeq - 1}`);
      }
      const fields = { nonce, seq, method };
      if (args !== undefined && args !== null) {
        fields.args = args;
      }
      if (memento !== undefined && memento !== null) {
        fields.memento = memento;
      }
      try {
        const out = await this.request('call', fields, true);
        this.advance(earlier, nonce, seq);
        return out;
      } catch (err) {
        // The broker decided this seq (ran it, or refused it for good): the
        // next call takes the next seq. A timeout or a lost connection
        // decided nothing: the next call reuses the seq and gets the stored
        // reply if this one did commit.
        if (err instanceof TetherError && !isClientCode(err.code) && err.code !== Codes.StaleNonce) {
          this.advance(earlier, nonce, seq);
        }
        throw err;
      }
    };
    const result = this.callQueue.then(run, run);
    this.callQueue = result.catch(() => {});
    return result;
  }

  advance(earlier, nonce, seq) {
    if (!earlier && this.nonce === nonce && this.nextSeq === seq) {
      this.nextSeq++;
    }
  }

  /** remember commits memento (and phase, when given) under the current instance. */
  async remember(memento, phase) {
    if (!this.nonce) {
      throw this.noInstance();
    }
    const fields = { nonce: this.nonce, memento: memento === undefined ? null : memento };
    if (phase !== undefined && phase !== null) {
      fields.phase = phase;
    }
    await this.request('remember', fields, true);
  }

  /** setCursor sets what the user is looking at; the next ping reports it. */
  setCursor(cursor) {
    this.cursor = cursor;
  }

  /**
   * ping refreshes liveness (with cursor, or the one set by setCursor) and
   * resolves with a tick, which is also emitted as 'tick'.
   */
  async ping(cursor) {
    if (!this.nonce) {
      throw this.noInstance();
    }
    const fields = { nonce: this.nonce };
    const c = cursor !== undefined ? cursor : this.cursor;
    if (c !== undefined) {
      fields.cursor = c;
      this.cursor = undefined;
    }
    const t = await this.request('ping', fields, true);
    this.gotTick(t);
    return t;
  }

  sendAck(upto, resend = false) {
    if (!this.nonce) {
      return Promise.reject(this.noInstance());
    }
    return this.request('ack', resend ? { nonce: this.nonce, upto, resend } : { nonce: this.nonce, upto }, true);
  }

  /** end closes the instance cleanly; the session's memento is cleared. */
  async end() {
    if (!this.nonce) {
      return;
    }
    // What was handled is acknowledged first: the next instance would get it again.
    await this.inbox.ackNow();
    const nonce = this.nonce;
    // Over as the reply is read, before any later message: a background
    // ping's stale_nonce after it must not pass for a takeover.
    await this.request('end', { nonce }, true, () => {
      if (this.nonce === nonce) {
        this.nonce = '';
      }
    });
  }

  /**
   * close disconnects cleanly (no will) and stops the timers. It does not
   * end the session: a later begin, here or on another device, resumes it.
   */
  close() {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.shutdown();
    for (const [id] of this.pending) {
      this.settle(id, null, new TetherError(Codes.Closed, 'the client is closed'));
    }
  }

  shutdown() {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    if (this.watchdogTimer !== null) {
      timers.stop(this.watchdogTimer);
      this.watchdogTimer = null;
    }
    this.connected = false;
    this.mqtt?.end(false);
  }
}

function isClientCode(code) {
  return code === Codes.ConnectionLost || code === Codes.Timeout || code === Codes.NotBegun || code === Codes.Closed;
}
