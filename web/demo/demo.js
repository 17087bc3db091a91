// The demo page: one device's session, shown as it lives. See index.html
// for what it demonstrates; the client is ./tether.js (web/src).
import { Codes, connect, isStaleNonce } from './tether.js';
import { Countdown, formatSeconds } from './countdown.js';

const SETTINGS_KEY = 'tether-demo:settings'; // localStorage: ws, user, session, lostAfter
const TOKEN_KEY = 'tether-demo:token'; // sessionStorage: the token stays in this tab
const BUY = 'demo.buy';
const COUNT = 'demo.count';
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

const $ = (id) => document.getElementById(id);

// Everything the page knows about the one session it shows.
const page = {
  settings: null,
  client: null,
  begun: null,
  run: 0, // bumped on every start and leave: stale async work checks it
  stale: false,
  clock: new Countdown(),
  clockTimer: 0,
  ticks: 0,
  lastTickAt: 0,
  buying: false,
  // pending: {memento} of a purchase not confirmed yet; countSeq: the seq of
  // the session's last call when it was a demo.count (0: it was a purchase).
  shop: { memento: 0, count: null, pending: null, countSeq: 0 },
};

// ---- storage ----------------------------------------------------------------

function loadJSON(storage, key, fallback) {
  try {
    return JSON.parse(storage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

const shopKey = (s) => `tether-demo:shop:${s.user}/${s.session}`;

// saveShop keeps this browser's copy of the purchases: the memento and, while
// a purchase is unconfirmed, its intent. The broker's copy (begin's memento)
// is the one that counts.
function saveShop() {
  localStorage.setItem(shopKey(page.settings), JSON.stringify(page.shop));
}

// ---- start ------------------------------------------------------------------

async function init() {
  const params = new URLSearchParams(location.search);
  const saved = loadJSON(localStorage, SETTINGS_KEY, {});
  page.configuredWS = await configuredWS();
  const ws = params.get('ws') || saved.ws || page.configuredWS;
  const settings = {
    ws,
    user: params.get('user') || saved.user || '',
    session: params.get('session') || saved.session || 'demo',
    lostAfter: Number(saved.lostAfter) || 3,
    token: sessionStorage.getItem(TOKEN_KEY) || '',
  };
  fillForm(settings);
  $('form').addEventListener('submit', onSubmit);
  $('buy').addEventListener('click', () => buy());
  $('end').addEventListener('click', endSession);
  $('leave').addEventListener('click', () => leave());
  $('banner-action').addEventListener('click', () => page.bannerAction?.());
  setInterval(renderLastTick, 1000);
  if (settings.user && settings.session && settings.token && settings.ws) {
    start(settings); // a reload: carry on with the session this tab had
  } else {
    showForm();
  }
}

// configuredWS asks the broker that served the page where its WebSocket
// listener is; the default is the broker's default port on this host.
async function configuredWS() {
  try {
    const res = await fetch('config.json', { cache: 'no-store' });
    if (res.ok) {
      const cfg = await res.json();
      if (typeof cfg.ws_url === 'string' && cfg.ws_url) {
        return cfg.ws_url;
      }
    }
  } catch {
    // served from elsewhere: fall back to the default below
  }
  return `ws://${location.hostname || 'localhost'}:8083/mqtt`;
}

function fillForm(s) {
  const f = $('form').elements;
  f.user.value = s.user;
  f.session.value = s.session;
  f.token.value = s.token;
  f.ws.value = s.ws;
  f.lostAfter.value = s.lostAfter;
}

function onSubmit(ev) {
  ev.preventDefault();
  const f = $('form').elements;
  const s = {
    ws: f.ws.value.trim(),
    user: f.user.value.trim(),
    session: f.session.value.trim(),
    token: f.token.value.trim(),
    lostAfter: Math.max(1, Math.min(20, Number(f.lostAfter.value) || 3)),
  };
  const problem = !NAME.test(s.user)
    ? 'User: letters, digits, dot, dash and underscore, at most 64.'
    : !NAME.test(s.session)
      ? 'Session: letters, digits, dot, dash and underscore, at most 64.'
      : !s.token
        ? 'Token: paste the token issued for this user.'
        : !/^wss?:\/\/./.test(s.ws)
          ? 'WebSocket URL: ws://host:port/mqtt or wss://…'
          : '';
  if (problem) {
    showFormError(problem);
    return;
  }
  start(s);
}

function showForm(error) {
  $('live').hidden = true;
  $('connect').hidden = false;
  setLink('off', 'not connected');
  showFormError(error);
}

function showFormError(text) {
  $('form-error').hidden = !text;
  $('form-error').textContent = text || '';
}

async function start(s) {
  const run = ++page.run;
  page.settings = s;
  // The WebSocket URL is saved only when it is not the one the broker announced.
  const ws = s.ws === page.configuredWS ? undefined : s.ws;
  localStorage.setItem(SETTINGS_KEY, JSON.stringify({ ws, user: s.user, session: s.session, lostAfter: s.lostAfter }));
  sessionStorage.setItem(TOKEN_KEY, s.token);
  page.shop = { memento: 0, count: null, pending: null, countSeq: 0, ...loadJSON(localStorage, shopKey(s), {}) };
  resetLive(s);

  // The first connection: keep trying while the broker is unreachable (it
  // may be restarting); give up at once when it refuses the credentials.
  let client;
  for (let wait = 1000; ; wait = Math.min(wait * 2, 5000)) {
    setLink('off', 'connecting…');
    try {
      client = await connect(s.ws, s.user, s.token, s.session, { lostAfter: s.lostAfter, trace: logWire });
      break;
    } catch (err) {
      if (run !== page.run) {
        return;
      }
      if (err.code === Codes.Unauthorized || err.code === Codes.Forbidden) {
        sessionStorage.removeItem(TOKEN_KEY);
        showForm(`The broker refused user ${s.user} with this token: it is unknown, expired or revoked.`);
        return;
      }
      banner('lost', `Cannot reach the broker at ${s.ws}. Trying again…`);
      await sleep(wait);
      if (run !== page.run) {
        return;
      }
    }
  }
  if (run !== page.run) {
    client.close();
    return;
  }
  page.client = client;
  client.on('link', (state) => setLink(state === 'up' ? 'on' : 'off', state === 'up' ? 'connected' : 'reconnecting…'));
  client.on('tick', onTick);
  client.on('lost', () => {
    setState('unreachable');
    banner('lost', `Connection lost: no tick from the broker for ${s.lostAfter} tick intervals. Reconnecting…`);
  });
  client.on('recovered', () => banner('ok', 'Connection back: ticks are arriving again.', 3000));
  client.on('stale', () => onStale());
  client.on('acked', (upto) => onAcked(upto));
  client.on('snapshot', (snap) => showSnapshot(snap));
  showSnapshot(client.snapshot()); // the one this browser kept last time, if any
  client.on('error', (err) => onClientError(err));
  client.onNotify((n) => showNotification(n));
  setLink('on', 'connected');
  banner(null);
  await begin(run);
}

// begin starts this page's instance and resumes after the broker's memento.
async function begin(run) {
  const client = page.client;
  let b;
  for (let attempt = 1; ; attempt++) {
    try {
      b = await client.begin();
      break;
    } catch (err) {
      if (run !== page.run) {
        return;
      }
      if (err.code === Codes.SessionExpired) {
        showExpired();
        return;
      }
      if ((err.code === Codes.ConnectionLost || err.code === Codes.Timeout) && attempt < 5) {
        await sleep(1000);
        continue;
      }
      setBuyStatus(`Could not begin: ${err.reason || err.message}`, 'error');
      return;
    }
  }
  page.begun = b;
  page.stale = false;
  banner(null);
  // crashed: the previous instance never sent end (a reload, a closed tab, a crash).
  $('begun').textContent = b.crashed ? 'after a crash' : b.next_seq > 1 ? 'after an end' : 'fresh';
  $('begun').title = b.crashed ? 'The previous visit never ended the session: the page resumed after its memento.' : '';
  $('begun').dataset.crashed = String(b.crashed);
  if (b.acked > 0) {
    $('acked').textContent = `acknowledged up to #${b.acked}`;
  }
  setState(b.state);
  page.clock.start(b.remaining_ms);
  renderClock();
  await resume(run, b);
}

// resume brings the shop up to date with the broker, the crash discipline:
// the memento says how many purchases committed; a purchase this browser
// started but the broker never committed is made now, once; the counter is
// the stored reply of the session's last call, fetched without running it
// again (see lastCount).
async function resume(run, b) {
  const client = page.client;
  const server = typeof b.memento === 'number' ? b.memento : 0;
  const pending = page.shop.pending;
  page.shop.memento = server;
  renderShop();
  try {
    if (pending && pending.memento > server) {
      setBuyStatus('A purchase was under way when the page went away and never reached the broker: making it now, once.');
      await buy(pending.memento, 'resumed');
      return;
    }
    if (pending) {
      page.resumeNote = 'A purchase was under way when the page went away: the broker had committed it, so it was not made again.';
    }
    page.shop.pending = null;
    saveShop();
    if (b.next_seq > 1) {
      const count = await lastCount(b.next_seq - 1);
      if (run !== page.run) {
        return;
      }
      page.shop.count = count;
    } else {
      page.shop.count = 0;
    }
    saveShop();
    renderShop();
    setBuyStatus(page.resumeNote || '');
    page.resumeNote = '';
  } catch (err) {
    if (run === page.run) {
      callFailed(err);
    }
  } finally {
    enableBuy();
  }
}

// lastCount returns the counter as the session's last call (seq) left it.
// That call, sent again unchanged (same seq, method and args), gets the
// broker's stored reply and runs nothing: usually the purchase that made
// the memento what it is. A broker that has no reply for seq (it restored
// the session from the snapshot this browser kept, so its calls were made
// elsewhere; or it no longer keeps that reply) refuses it with bad_request:
// then the counter is read afresh with demo.count, which buys nothing.
async function lastCount(seq) {
  const client = page.client;
  const method = page.shop.countSeq === seq ? COUNT : BUY;
  try {
    return countOf(await client.call(method, {}, null, { seq }));
  } catch (err) {
    if (err.code !== Codes.BadRequest) {
      throw err;
    }
  }
  const count = countOf(await client.call(COUNT, {}, null));
  page.shop.countSeq = client.nextSeq - 1;
  const note =
    "This broker has no stored reply of the session's last purchase (it restored the session from the copy this browser kept, " +
    'or no longer keeps that reply), so the counter was read afresh: it counts the purchases made on this broker.';
  page.resumeNote = page.resumeNote ? `${page.resumeNote} ${note}` : note;
  return count;
}

const countOf = (reply) => (typeof reply?.count === 'number' ? reply.count : null);

// ---- the exactly-once call ----------------------------------------------------

// buy makes one purchase: its memento is the number of purchases once it
// commits. The intent is saved first, so a reload mid-call can tell (from
// begin's memento) whether it committed.
async function buy(memento, how) {
  const client = page.client;
  if (!client || page.buying) {
    return;
  }
  const m = memento ?? page.shop.pending?.memento ?? page.shop.memento + 1;
  page.shop.pending = { memento: m };
  saveShop();
  page.buying = true;
  enableBuy();
  setBuyStatus(client.connected ? `Buying (purchase #${m})…` : `Waiting for the connection: purchase #${m} will be sent once it is back.`);
  const run = page.run;
  try {
    const reply = await client.call(BUY, {}, m);
    if (run !== page.run) {
      return;
    }
    page.shop = { memento: m, count: countOf(reply), pending: null, countSeq: 0 };
    saveShop();
    renderShop();
    setBuyStatus(how === 'resumed' ? `Purchase #${m} committed after the reload, once.` : `Purchase #${m} committed.`, 'ok');
  } catch (err) {
    if (run === page.run) {
      callFailed(err);
    }
  } finally {
    page.buying = false;
    enableBuy();
  }
}

function callFailed(err) {
  if (isStaleNonce(err)) {
    return; // shown by onStale
  }
  switch (err.code) {
    case Codes.SessionExpired:
      showExpired();
      break;
    case Codes.Timeout:
    case Codes.ConnectionLost:
      setBuyStatus('Not confirmed yet. Press Buy again to retry the same purchase: it will not be made twice.', 'warn');
      break;
    case Codes.UnknownMethod:
      setBuyStatus(`This broker has no ${BUY} handler: it runs without the demo's calls (broker serve --demo-calls=false).`, 'error');
      break;
    default:
      setBuyStatus(`The purchase failed: ${err.reason || err.message}`, 'error');
  }
}

function enableBuy() {
  const ok = page.client && page.begun && !page.stale && !page.clock.expired && !page.buying;
  $('buy').disabled = !ok;
  $('buy').textContent = page.shop.pending && !page.buying ? 'Retry purchase' : 'Buy';
}

function renderShop() {
  $('count').textContent = page.shop.count === null ? '—' : String(page.shop.count);
  $('memento').textContent = String(page.shop.memento);
}

function setBuyStatus(text, kind = '') {
  $('buy-status').textContent = text;
  $('buy-status').dataset.kind = kind;
}

// ---- ticks, the clock and liveness ------------------------------------------------

function onTick(t) {
  page.ticks++;
  page.lastTickAt = Date.now();
  $('ticks').textContent = String(page.ticks);
  renderLastTick();
  if (t.state) {
    setState(t.state);
  }
  if (page.clock.tick(t.remaining_ms, t.state)) {
    $('corrections').textContent = String(page.clock.corrections);
  }
  if (t.state === 'expired') {
    showExpired();
    return;
  }
  renderClock();
}

// renderClock shows the local countdown and schedules itself for the next
// whole second: the display moves by one second at a time.
function renderClock() {
  clearTimeout(page.clockTimer);
  const c = page.clock;
  const s = c.seconds();
  const el = $('countdown');
  if (s === null) {
    el.textContent = '∞';
    el.dataset.seconds = '';
    $('clock-note').textContent = 'no time window: this session never expires (the broker sets windows by policy)';
    return;
  }
  el.textContent = formatSeconds(s);
  el.dataset.seconds = String(s);
  if (c.expired) {
    $('clock-note').textContent = 'time is up: the broker has closed this session';
    return;
  }
  $('clock-note').textContent = s > 0 ? 'time left' : 'time is up: waiting for the broker to close the session…';
  page.clockTimer = setTimeout(renderClock, c.untilChange());
}

function showExpired() {
  page.clock.expire();
  setState('expired');
  renderClock();
  $('countdown').dataset.expired = 'true';
  banner(null);
  setBuyStatus('The session expired: no more purchases in it. Start another session to go on.', 'warn');
  enableBuy();
}

function renderLastTick() {
  if (!page.lastTickAt) {
    return;
  }
  const ago = Math.round((Date.now() - page.lastTickAt) / 1000);
  $('last-tick').textContent = ago < 1 ? 'just now' : `${ago} s ago`;
}

// showSnapshot says, discreetly, which sealed snapshot of the session this
// browser keeps (the client stores it and presents it at begin).
function showSnapshot(snap) {
  const el = $('snapshot');
  el.hidden = !snap?.version;
  el.textContent = snap?.version ? `snapshot v${snap.version} kept` : '';
  el.dataset.version = snap?.version ? String(snap.version) : '';
}

function setState(state) {
  $('state').textContent = state;
  $('state').dataset.state = state;
}

function setLink(state, text) {
  $('link').dataset.state = state;
  $('link').textContent = text;
}

function onStale() {
  page.stale = true;
  enableBuy();
  setState('taken over');
  banner('stale', 'Another tab or device took over this session: this page stopped.', 0, 'Take it back', () => begin(page.run));
}

// ---- notifications -------------------------------------------------------------

function showNotification(n) {
  $('notes-empty').hidden = true;
  const li = document.createElement('li');
  li.dataset.seq = String(n.seq);
  const seq = document.createElement('span');
  seq.className = 'seq';
  seq.textContent = `#${n.seq}`;
  const data = document.createElement('code');
  data.className = 'data';
  data.textContent = typeof n.data === 'string' ? n.data : JSON.stringify(n.data);
  const when = document.createElement('time');
  when.className = 'muted small';
  const at = typeof n.ts === 'number' ? new Date(n.ts) : new Date();
  when.dateTime = at.toISOString();
  when.textContent = at.toLocaleTimeString();
  li.append(seq, data, when);
  $('notes').prepend(li);
  while ($('notes').children.length > 100) {
    $('notes').lastElementChild.remove();
  }
}

function onAcked(upto) {
  $('acked').textContent = `acknowledged up to #${upto}`;
  for (const li of $('notes').children) {
    if (Number(li.dataset.seq) <= upto) {
      li.classList.add('acked');
    }
  }
  $('notes-error').hidden = true;
}

function onClientError(err) {
  logLine('!', err.message);
  if (err.code === Codes.Unauthorized) {
    // The token expired or was revoked while the page was open: reconnecting cannot help.
    leave();
    showForm('The broker no longer accepts this token (expired or revoked): paste a valid one.');
    return;
  }
  if (err.op === 'ack') {
    $('notes-error').hidden = false;
    $('notes-error').textContent = `Acknowledging up to #${err.upto} failed: ${err.reason || err.message}`;
  }
}

// ---- leaving -------------------------------------------------------------------

async function endSession() {
  const client = page.client;
  if (client && page.begun && !page.stale) {
    try {
      await client.end();
    } catch (err) {
      if (!isStaleNonce(err) && err.code !== Codes.SessionExpired) {
        setBuyStatus(`Could not end the session: ${err.reason || err.message}`, 'error');
        return;
      }
    }
  }
  localStorage.removeItem(shopKey(page.settings));
  leave();
}

// leave closes the connection without ending the session: begin resumes it later.
function leave() {
  page.run++;
  page.client?.close();
  page.client = null;
  page.begun = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(page.clockTimer);
  banner(null);
  fillForm({ ...page.settings, token: '' });
  showForm();
}

function resetLive(s) {
  page.client?.close();
  page.client = null;
  page.begun = null;
  page.stale = false;
  page.ticks = 0;
  page.lastTickAt = 0;
  page.clock = new Countdown();
  $('connect').hidden = true;
  $('live').hidden = false;
  $('who').textContent = `${s.user} / ${s.session}`;
  $('ticks').textContent = '0';
  $('last-tick').textContent = '—';
  $('corrections').textContent = '0';
  $('begun').textContent = '—';
  $('countdown').textContent = '–:––';
  delete $('countdown').dataset.expired;
  $('notes').replaceChildren();
  $('notes-empty').hidden = false;
  $('acked').textContent = 'none acknowledged';
  showSnapshot(null);
  setState('connecting');
  setBuyStatus('');
  renderShop();
  enableBuy();
}

// ---- banner and log --------------------------------------------------------------

// banner shows one line above the session (kind: lost, ok, stale), or hides it
// (kind null); with hideAfter it hides itself unless replaced meanwhile.
function banner(kind, text = '', hideAfter = 0, action = '', onAction = null) {
  const el = $('banner');
  clearTimeout(page.bannerTimer);
  el.hidden = !kind;
  el.dataset.kind = kind || '';
  $('banner-text').textContent = text;
  $('banner-action').hidden = !action;
  $('banner-action').textContent = action;
  page.bannerAction = onAction;
  if (kind && hideAfter > 0) {
    page.bannerTimer = setTimeout(() => banner(null), hideAfter);
  }
}

function logWire(dir, topic, text) {
  logLine(dir, `${topic.split('/').pop()} ${text}`);
}

function logLine(dir, text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${dir} ${text}`;
  const log = $('log');
  log.prepend(li);
  while (log.children.length > 200) {
    log.lastElementChild.remove();
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

init();
