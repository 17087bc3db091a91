// The demo page in headless Chromium against a real broker. Run by
// web/browser_test.go (TestBrowserDemo), which starts the broker with the
// demo's calls (web.DemoHandlers), and passes in (environment):
//
//   TETHER_E2E_URL      the broker's HTTP root (redirects to /demo/)
//   TETHER_E2E_WS       the WebSocket URL the page should be told
//   TETHER_E2E_CONTROL  the test's control server: POST /stop, /start, /slow, /notify (a Go
//                       service client publishes on tether/notify/…), /revoke-carol; GET /state
//   TETHER_E2E_USER, TETHER_E2E_TOKEN (and _USER2, _TOKEN2, _USER3, _TOKEN3: other users)
//   TETHER_E2E_WS_ELSEWHERE, TETHER_E2E_TOKEN_ELSEWHERE, TETHER_E2E_TOKEN2_ELSEWHERE  another
//                       broker with the same snapshot keys, the demo's calls and no sessions,
//                       and the first and second users' tokens there
//   TETHER_E2E_TICK_MS  the broker's tick interval
//   TETHER_E2E_CHROMIUM the browser (Debian's /usr/bin/chromium; never downloaded)
//   TETHER_E2E_SHOTS    where screenshots go
//
// It prints one line per step, and at the end `RESULT {"count":n}`.
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run this through go test ./web/`);
  }
  return v;
};

const base = env('TETHER_E2E_URL');
const wsURL = env('TETHER_E2E_WS');
const control = env('TETHER_E2E_CONTROL');
const user = env('TETHER_E2E_USER');
const token = env('TETHER_E2E_TOKEN');
const user2 = env('TETHER_E2E_USER2');
const token2 = env('TETHER_E2E_TOKEN2');
const user3 = env('TETHER_E2E_USER3');
const token3 = env('TETHER_E2E_TOKEN3');
const wsElsewhere = env('TETHER_E2E_WS_ELSEWHERE');
const tokenElsewhere = env('TETHER_E2E_TOKEN_ELSEWHERE');
const token2Elsewhere = env('TETHER_E2E_TOKEN2_ELSEWHERE');
const tickMs = Number(env('TETHER_E2E_TICK_MS'));
const shots = env('TETHER_E2E_SHOTS');
const phone = { width: 390, height: 844 };
const desktop = { width: 1280, height: 900 };

const browser = await chromium.launch({
  executablePath: process.env.TETHER_E2E_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // playwright gives every launch a fresh, empty profile (--user-data-dir).
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const pageErrors = [];
const pages = [];

async function newPage(context, name) {
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${name}: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      console.log(`  [${name} console] ${msg.text()}`);
    }
  });
  pages.push({ name, page });
  return page;
}

let current = '';
async function step(name, fn) {
  current = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

async function ctl(method, path) {
  const res = await fetch(control + path, { method });
  const text = await res.text();
  if (!res.ok) {
    throw new Error(`control ${path}: ${res.status} ${text}`);
  }
  return text.trim() === 'ok' ? text : JSON.parse(text);
}

async function waitFor(what, fn, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) {
        return last;
      }
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const text = (page, sel) => page.locator(sel).textContent();
const visible = (page, sel) => page.locator(sel).isVisible();
const attr = (page, sel, name) => page.locator(sel).getAttribute(name);

async function waitText(page, sel, want, timeoutMs) {
  const match = (t) => (want instanceof RegExp ? want.test(t) : t === want);
  await waitFor(`${sel} to read ${want}`, async () => match((await text(page, sel)) ?? ''), timeoutMs);
}

async function submitForm(page, u, tok, session) {
  await page.locator('#connect').waitFor({ state: 'visible' });
  await page.fill('input[name=user]', u);
  await page.fill('input[name=token]', tok);
  await page.fill('input[name=session]', session);
  await page.click('button[type=submit]');
}

async function startSession(page, u, tok, session) {
  await submitForm(page, u, tok, session);
  await page.locator('#live').waitFor({ state: 'visible' });
}

// connectionSettings fills the form's folded connection settings: the
// WebSocket URL and the missed ticks that mean "connection lost".
async function connectionSettings(page, { ws, lostAfter }) {
  await page.locator('#connect').waitFor({ state: 'visible' });
  if (!(await page.locator('details.advanced').evaluate((d) => d.open))) {
    await page.click('details.advanced summary');
  }
  if (ws !== undefined) {
    await page.fill('input[name=ws]', ws);
  }
  if (lostAfter !== undefined) {
    await page.fill('input[name=lostAfter]', String(lostAfter));
  }
}

async function shop(page) {
  return { count: (await text(page, '#count')).trim(), memento: (await text(page, '#memento')).trim() };
}

async function expectCount(page, n, timeoutMs = 10_000) {
  await waitText(page, '#count', String(n), timeoutMs);
  await waitText(page, '#memento', String(n), timeoutMs);
  const s = await ctl('GET', '/state');
  assert.equal(s.count, n, `broker's committed count`);
  assert.equal(s.runs, n, `handler runs (a purchase ran twice?)`);
}

async function buyOnce(page, n) {
  await waitFor('the Buy button to be enabled', () => page.locator('#buy').isEnabled());
  await page.click('#buy');
  await expectCount(page, n);
  await waitText(page, '#buy-status', `Purchase #${n} committed.`);
}

async function noteSeqs(page) {
  return (await page.locator('#notes li').evaluateAll((els) => els.map((e) => e.dataset.seq))).map(Number);
}

// storedSnapshot is what the client keeps in the page's localStorage for
// u/session: {version, blob}, or null.
async function storedSnapshot(page, session, u = user) {
  const text = await page.evaluate((key) => localStorage.getItem(key), `tether:snapshot:${u}/${session}`);
  return text === null ? null : JSON.parse(text);
}

async function bannerKind(page) {
  return (await visible(page, '#banner')) ? await attr(page, '#banner', 'data-kind') : '';
}

try {
  const context = await browser.newContext({ viewport: phone, deviceScaleFactor: 2, hasTouch: true });
  const page = await newPage(context, 'tab1');

  await step('the root redirects to the demo, which explains itself and knows the WebSocket URL', async () => {
    await page.goto(base);
    assert.match(page.url(), /\/demo\/$/);
    await page.locator('#connect').waitFor({ state: 'visible' });
    assert.match(await text(page, '.intro'), /reload the page/);
    await waitFor('config.json to fill the WebSocket URL', async () => (await page.inputValue('input[name=ws]')) === wsURL);
    await page.screenshot({ path: join(shots, 'phone-form.png'), fullPage: true });
  });

  await step('a wrong token is refused with a clear message', async () => {
    await submitForm(page, user, 'tt1_0000000000000000_' + 'A'.repeat(43), 'e2e-1');
    await page.locator('#form-error').waitFor({ state: 'visible' });
    assert.match(await text(page, '#form-error'), /refused/);
  });

  await step('begin: a fresh session, ticks arrive and the countdown runs', async () => {
    // Not the default 3: the lost banner below must say 2, also after reloads.
    await connectionSettings(page, { lostAfter: 2 });
    await startSession(page, user, token, 'e2e-1');
    await waitText(page, '#begun', 'fresh');
    await waitText(page, '#state', 'active');
    await waitText(page, '#link', 'connected');
    await waitFor('3 ticks', async () => Number(await text(page, '#ticks')) >= 3);
    const first = Number(await attr(page, '#countdown', 'data-seconds'));
    assert.ok(first > 590 && first <= 600, `countdown starts near 10:00, got ${first} s`);
    assert.match(await text(page, '#countdown'), /^\d+:\d\d$/);
  });

  await step('the countdown moves one second at a time, without jumps', async () => {
    const samples = [];
    for (let i = 0; i < 20; i++) {
      samples.push({
        s: Number(await attr(page, '#countdown', 'data-seconds')),
        corrections: Number(await text(page, '#corrections')),
      });
      await new Promise((r) => setTimeout(r, 175));
    }
    for (let i = 1; i < samples.length; i++) {
      const [a, b] = [samples[i - 1], samples[i]];
      if (a.corrections === b.corrections) {
        assert.ok(b.s <= a.s && a.s - b.s <= 1, `countdown went ${a.s} → ${b.s}: ${JSON.stringify(samples)}`);
      }
    }
    const moved = samples[0].s - samples.at(-1).s;
    assert.ok(moved >= 2 && moved <= 4, `countdown moved ${moved} s in 3.5 s: ${JSON.stringify(samples)}`);
  });

  await step('notifications from a Go service client arrive in order, once each, and are acknowledged', async () => {
    assert.deepEqual(await ctl('POST', '/notify?n=3&text=hello'), { published: 3 });
    await waitFor('3 notifications', async () => (await noteSeqs(page)).length === 3);
    assert.deepEqual(await noteSeqs(page), [3, 2, 1], 'newest first, each once');
    assert.match(await text(page, '#notes li[data-seq="2"] .data'), /hello 2/);
    await waitText(page, '#acked', 'acknowledged up to #3');
    assert.equal(await page.locator('#notes li.acked').count(), 3);
    await page.screenshot({ path: join(shots, 'phone-notifications.png'), fullPage: true });
    await waitFor('the broker to drop acked entries', async () => (await ctl('GET', '/state')).queued === 0);
  });

  await step('notifications queued while the page was away arrive when it comes back, after the acked ones', async () => {
    await page.goto('about:blank');
    assert.deepEqual(await ctl('POST', '/notify?n=2&text=while+away'), { published: 2 });
    assert.equal((await ctl('GET', '/state')).queued, 2, 'acknowledged to the service means queued');
    await page.goto(base);
    await page.locator('#live').waitFor({ state: 'visible' });
    await waitFor('begin to report crashed', async () => (await attr(page, '#begun', 'data-crashed')) === 'true');
    await waitFor('2 notifications', async () => (await noteSeqs(page)).length === 2);
    assert.deepEqual(await noteSeqs(page), [5, 4]);
    await waitText(page, '#acked', 'acknowledged up to #5');
    await waitFor('the broker to drop acked entries', async () => (await ctl('GET', '/state')).queued === 0);
  });

  await step('buy three times: each purchase commits once and the counter follows; the newest snapshot is kept', async () => {
    await waitText(page, '#count', '0');
    let last = await waitFor('a snapshot in localStorage since begin', () => storedSnapshot(page, 'e2e-1'));
    for (let n = 1; n <= 3; n++) {
      await buyOnce(page, n);
      const before = last.version;
      last = await waitFor(`a newer snapshot after purchase #${n}`, async () => {
        const s = await storedSnapshot(page, 'e2e-1');
        return s && s.version > before ? s : null;
      });
      assert.match(last.blob, /^ts1\./, 'a sealed snapshot');
      assert.ok(Number.isSafeInteger(last.version), `version ${last.version}`);
      await waitText(page, '#snapshot', `snapshot v${last.version} kept`);
    }
  });

  await step('reload in the middle of a purchase: begin says crashed, the purchase counts once', async () => {
    await ctl('POST', '/slow');
    await page.click('#buy');
    await waitFor('the purchase to be inside the handler', async () => (await ctl('GET', '/state')).inflight);
    await page.reload();
    await page.locator('#live').waitFor({ state: 'visible' });
    await waitFor('begin to report crashed', async () => (await attr(page, '#begun', 'data-crashed')) === 'true');
    assert.equal(await text(page, '#begun'), 'after a crash');
    // The page came back with the snapshot it kept and presented it at begin.
    const sent = await page.locator('#log li').evaluateAll((els) => els.map((e) => e.textContent));
    assert.ok(
      sent.some((l) => /> req \{"id":"[^"]+","op":"begin","restore":"ts1\./.test(l)),
      `a begin with restore in the log:\n${sent.join('\n')}`,
    );
    await expectCount(page, 4);
    await waitText(page, '#buy-status', /had committed it, so it was not made again/);
    await page.screenshot({ path: join(shots, 'phone-after-reload.png'), fullPage: true });
  });

  await step('the broker goes away: the lost banner appears; a purchase waits; it comes back: the banner clears, the purchase is made once', async () => {
    await ctl('POST', '/stop');
    await waitFor('the lost banner', async () => (await bannerKind(page)) === 'lost', 3 * tickMs + 5000);
    assert.match(await text(page, '#banner-text'), /Connection lost: no tick from the broker for 2 tick intervals/);
    await page.screenshot({ path: join(shots, 'phone-lost.png'), fullPage: true });
    await page.click('#buy');
    await waitText(page, '#buy-status', /Waiting for the connection/);
    await ctl('POST', '/start');
    await waitFor('the banner to clear', async () => (await bannerKind(page)) !== 'lost', 15_000);
    await expectCount(page, 5, 15_000);
    await waitFor('the recovered note to go away', async () => (await bannerKind(page)) === '', 5000);
  });

  await step('the page closes with a purchase unsent while the broker is down: back later, it is made once', async () => {
    await ctl('POST', '/stop');
    await waitFor('the lost banner', async () => (await bannerKind(page)) === 'lost', 3 * tickMs + 5000);
    await page.click('#buy');
    await waitText(page, '#buy-status', /Waiting for the connection/);
    await page.goto('about:blank'); // the broker serves the page too: it cannot be reloaded while down
    await ctl('POST', '/start');
    await page.goto(base);
    await waitFor('begin to report crashed', async () => (await attr(page, '#begun', 'data-crashed')) === 'true', 15_000);
    await expectCount(page, 6, 15_000);
    await waitText(page, '#buy-status', 'Purchase #6 committed after the reload, once.');
    assert.equal(await bannerKind(page), '');
  });

  await step('a second tab takes the session over; the first says so and can take it back', async () => {
    const page2 = await newPage(context, 'tab2');
    await page2.goto(base);
    await startSession(page2, user, token, 'e2e-1');
    await waitFor('tab2 to begin', async () => (await attr(page2, '#begun', 'data-crashed')) === 'true');
    await waitText(page2, '#count', '6');
    await waitFor('tab1 to notice the takeover', async () => (await bannerKind(page)) === 'stale', 5000);
    assert.equal(await page.locator('#buy').isEnabled(), false, 'a taken-over tab cannot buy');
    await page.click('#banner-action');
    await waitText(page, '#state', 'active');
    await waitFor('tab2 to notice the takeover', async () => (await bannerKind(page2)) === 'stale', 5000);
    assert.deepEqual(await shop(page), { count: '6', memento: '6' });
    await page2.close();
  });

  await step('screenshots at phone and desktop widths', async () => {
    await page.screenshot({ path: join(shots, 'phone.png'), fullPage: true });
    await page.setViewportSize(desktop);
    await page.screenshot({ path: join(shots, 'desktop.png'), fullPage: true });
    await page.setViewportSize(phone);
  });

  await step('a session with a 3 s window: the countdown ends when the broker says expired', async () => {
    const other = await browser.newContext({ viewport: phone });
    const page3 = await newPage(other, 'bob');
    await page3.goto(base);
    await startSession(page3, user2, token2, 'short-1');
    await waitText(page3, '#begun', 'fresh');
    const s = Number(await attr(page3, '#countdown', 'data-seconds'));
    assert.ok(s >= 1 && s <= 3, `countdown starts at ≤ 3 s, got ${s}`);
    await waitFor('expiry', async () => (await attr(page3, '#countdown', 'data-expired')) === 'true', 8000);
    await waitText(page3, '#state', 'expired');
    assert.equal(await text(page3, '#countdown'), '0:00');
    assert.equal(await page3.locator('#buy').isEnabled(), false);
    // No ticks come after expiry, and that is not a lost connection.
    await new Promise((r) => setTimeout(r, 5 * tickMs));
    assert.equal(await bannerKind(page3), '');
    await page3.screenshot({ path: join(shots, 'phone-expired.png'), fullPage: true });
    await other.close();
  });

  await step('the client API from a page: remember, ping, begin again, stale nonce, call errors, end', async () => {
    const api = await newPage(context, 'api');
    await api.goto(base);
    const out = await api.evaluate(
      async ({ ws, user, token }) => {
        const t = await import('./tether.js');
        const log = {};
        const a = await t.connect(ws, user, token, 'api-1', { lostAfter: 3 });
        const stale = [];
        let staleErr = null;
        a.on('stale', (err) => {
          stale.push(err.name);
          staleErr = err;
        });
        const b1 = await a.begin();
        log.first = { crashed: b1.crashed, memento: b1.memento, next_seq: b1.next_seq };
        await a.remember({ step: 7 }, 'checkout');
        const tick = await a.ping({ looking_at: 'cart' });
        log.tick = { state: tick.state, phase: tick.phase };
        const b2 = await a.begin(); // the same client begins again: a new instance
        log.second = { crashed: b2.crashed, memento: b2.memento, phase: b2.phase };
        try {
          await a.call('no.such.method', {}, null);
        } catch (err) {
          log.unknown = err.code;
        }
        try {
          await a.call('demo.buy', {}, null, { seq: 5 });
        } catch (err) {
          log.badSeq = err.code;
        }
        const other = await t.connect(ws, user, token, 'api-1');
        await other.begin(); // takes over: the broker tells a's connection at once
        for (let i = 0; i < 40 && staleErr === null; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        log.staleIsDistinct = staleErr instanceof t.StaleNonceError && t.isStaleNonce(staleErr) && staleErr.code === t.Codes.StaleNonce;
        log.staleEvents = stale;
        try {
          await a.remember(1);
        } catch (err) {
          log.afterStale = err.code; // the dead instance does not try again: the same error the broker would give
        }
        await other.end();
        const b3 = await other.begin();
        log.afterEnd = { crashed: b3.crashed, memento: b3.memento };
        await other.end();
        a.close();
        other.close();
        return log;
      },
      { ws: wsURL, user, token },
    );
    assert.deepEqual(out, {
      first: { crashed: false, memento: null, next_seq: 1 },
      tick: { state: 'active', phase: 'checkout' },
      second: { crashed: true, memento: { step: 7 }, phase: 'checkout' },
      unknown: 'unknown_method',
      badSeq: 'bad_request',
      staleIsDistinct: true,
      staleEvents: ['StaleNonceError'],
      afterStale: 'stale_nonce',
      afterEnd: { crashed: false, memento: null },
    });
    await api.close();
  });

  await step('the kept snapshot restores the session on a broker that never had it; a refused one is dropped', async () => {
    const api = await newPage(context, 'snap');
    await api.goto(base);
    const out = await api.evaluate(
      async ({ ws, wsElsewhere, user, token, tokenElsewhere }) => {
        const t = await import('./tether.js');
        const log = {};
        const key = (s) => `tether:snapshot:${user}/${s}`;
        const until = async (what, fn) => {
          for (let i = 0; i < 200 && !fn(); i++) {
            await new Promise((r) => setTimeout(r, 25));
          }
          if (!fn()) {
            throw new Error(`timed out waiting for ${what}`);
          }
        };

        const a = await t.connect(ws, user, token, 'e2e-snap');
        const kept = [];
        a.on('snapshot', (s) => kept.push(s.version));
        await a.begin();
        await a.remember({ step: 9 }, 'paying');
        await until('the snapshot of remember', () => kept.length >= 2);
        const stored = JSON.parse(localStorage.getItem(key('e2e-snap')));
        log.kept = {
          grows: kept.every((v, i) => i === 0 || v > kept[i - 1]),
          stored: stored.version === kept.at(-1),
          same: stored.blob === a.snapshot().blob,
        };
        a.close();

        // Another broker with the same keys: begin presents the stored blob and the session carries on there.
        const b = await t.connect(wsElsewhere, user, tokenElsewhere, 'e2e-snap');
        const sent = [];
        b.opts.trace = (dir, topic, text) => dir === '>' && sent.push(JSON.parse(text));
        const begun = await b.begin();
        log.presented = sent[0].op === 'begin' && sent[0].restore === stored.blob;
        log.restored = { crashed: begun.crashed, memento: begun.memento, phase: begun.phase };
        await b.end();
        b.close();

        // A blob the broker cannot trust: begin fails with the reason, and the next begin goes without it.
        localStorage.setItem(key('e2e-bogus'), JSON.stringify({ version: 3, blob: 'ts1.bogus' }));
        const c = await t.connect(ws, user, token, 'e2e-bogus');
        try {
          await c.begin();
        } catch (err) {
          log.refused = { code: err.code, restore: /restore refused/.test(err.reason) };
        }
        log.dropped = c.snapshot() === null && localStorage.getItem(key('e2e-bogus')) === null;
        const fresh = await c.begin();
        log.fresh = fresh.crashed;
        await c.end();
        c.close();
        return log;
      },
      { ws: wsURL, wsElsewhere, user, token, tokenElsewhere },
    );
    assert.deepEqual(out, {
      kept: { grows: true, stored: true, same: true },
      presented: true,
      restored: { crashed: true, memento: { step: 9 }, phase: 'paying' },
      refused: { code: 'bad_request', restore: true },
      dropped: true,
      fresh: false,
    });
    await api.close();
  });

  await step('the page carries a session on to another broker from its kept snapshot; the counter is read afresh there', async () => {
    const other = await browser.newContext({ viewport: phone });
    const p = await newPage(other, 'bob-moves');
    await p.goto(base);
    await startSession(p, user2, token2, 'e2e-move');
    await waitText(p, '#begun', 'fresh');
    await waitText(p, '#count', '0');
    for (let n = 1; n <= 2; n++) {
      const before = (await storedSnapshot(p, 'e2e-move', user2))?.version ?? 0;
      await waitFor('the Buy button to be enabled', () => p.locator('#buy').isEnabled());
      await p.click('#buy');
      await waitText(p, '#buy-status', `Purchase #${n} committed.`);
      assert.deepEqual(await shop(p), { count: String(n), memento: String(n) });
      await waitFor(`the snapshot of purchase #${n}`, async () => (await storedSnapshot(p, 'e2e-move', user2))?.version > before);
    }

    // Switch session, to the other broker: it never saw e2e-move and has
    // no reply of its last purchase to send again.
    await p.click('#leave');
    await connectionSettings(p, { ws: wsElsewhere });
    await submitForm(p, user2, token2Elsewhere, 'e2e-move');
    await waitFor('begin to report crashed', async () => (await attr(p, '#begun', 'data-crashed')) === 'true');
    await waitText(p, '#buy-status', /read afresh/);
    assert.deepEqual(await shop(p), { count: '0', memento: '2' }, 'the memento came with the snapshot, the counter is this broker\'s');
    const sent = await p.locator('#log li').evaluateAll((els) => els.map((e) => e.textContent));
    assert.ok(sent.some((l) => /> req \{"id":"[^"]+","op":"begin","restore":"ts1\./.test(l)), `a begin with restore:\n${sent.join('\n')}`);
    await p.click('#buy');
    await waitText(p, '#buy-status', 'Purchase #3 committed.');
    assert.deepEqual(await shop(p), { count: '1', memento: '3' });

    // A reload there: the purchase's stored reply shows the counter again.
    await p.reload();
    await waitFor('begin to report crashed', async () => (await attr(p, '#begun', 'data-crashed')) === 'true');
    await waitText(p, '#count', '1');
    assert.deepEqual(await shop(p), { count: '1', memento: '3' });
    assert.equal(await text(p, '#buy-status'), '', 'no note: the reply was there');
    await p.screenshot({ path: join(shots, 'phone-moved.png'), fullPage: true });
    await other.close();
  });

  await step('a token revoked under an open page: the page says so and asks for a valid one', async () => {
    const other = await browser.newContext({ viewport: phone });
    const page4 = await newPage(other, 'carol');
    await page4.goto(base);
    await startSession(page4, user3, token3, 'e2e-carol');
    await waitText(page4, '#begun', 'fresh');
    await ctl('POST', '/revoke-carol');
    await page4.locator('#form-error').waitFor({ state: 'visible', timeout: 10_000 });
    assert.match(await text(page4, '#form-error'), /no longer accepts this token/);
    await other.close();
  });

  await step('end the session: the page returns to its form', async () => {
    await page.click('#end');
    await page.locator('#connect').waitFor({ state: 'visible' });
  });

  assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
  console.log('RESULT ' + JSON.stringify({ count: 6 }));
} catch (err) {
  console.log(`FAIL ${current}: ${err.stack || err}`);
  for (const { name, page } of pages) {
    if (page.isClosed()) {
      continue;
    }
    try {
      const path = join(shots, `failure-${name}.png`);
      await page.screenshot({ path, fullPage: true });
      console.log(`screenshot: ${path}`);
      console.log(`[${name}] banner: ${await text(page, '#banner-text')} | status: ${await text(page, '#buy-status')}`);
      const log = await page.locator('#log li').evaluateAll((els) => els.map((e) => e.textContent).reverse().join('\n'));
      console.log(`[${name}] log (oldest first):\n${log}`);
    } catch (e) {
      console.log(`(no screenshot of ${name}: ${e.message})`);
    }
  }
  if (pageErrors.length) {
    console.log(`page errors: ${pageErrors.join('\n')}`);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
