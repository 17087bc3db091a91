// Unit tests of the demo's countdown: local seconds, corrections only past
// the drift threshold, and the broker's word on expiry.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Countdown, formatSeconds } from '../../demo/countdown.js';

function clock(start = 1000) {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

test('counts down on the local clock, one whole second at a time', () => {
  const c = clock();
  const cd = new Countdown({ now: c.now });
  cd.start(10_000);
  assert.equal(cd.seconds(), 10);
  c.advance(1);
  assert.equal(cd.seconds(), 10, '9.999 s left still shows 10');
  assert.equal(cd.untilChange(), 1004);
  c.advance(999);
  assert.equal(cd.seconds(), 9);
  c.advance(20_000);
  assert.equal(cd.seconds(), 0);
  assert.equal(cd.remaining(), 0);
});

test('ticks within the drift threshold change nothing; beyond it they correct', () => {
  const c = clock();
  const cd = new Countdown({ now: c.now, driftMs: 1500 });
  cd.start(60_000);
  c.advance(5000);
  assert.equal(cd.tick(55_000 - 1400), false, 'a late tick (1.4 s) is not followed');
  assert.equal(cd.tick(55_000 + 1400), false);
  assert.equal(cd.remaining(), 55_000);
  assert.equal(cd.tick(55_000 - 2000), true, '2 s of drift is corrected');
  assert.equal(cd.remaining(), 53_000);
  assert.equal(cd.corrections, 1);
});

test('a tick sets the window when begin had none', () => {
  const c = clock();
  const cd = new Countdown({ now: c.now });
  cd.start(undefined);
  assert.equal(cd.seconds(), null);
  assert.equal(cd.tick(undefined, 'active'), false);
  assert.equal(cd.seconds(), null);
  cd.tick(30_000, 'active');
  assert.equal(cd.seconds(), 30);
  assert.equal(cd.corrections, 0);
});

test("the window ends when the broker says expired, whatever the local clock says", () => {
  const c = clock();
  const cd = new Countdown({ now: c.now });
  cd.start(3000);
  c.advance(2500);
  assert.equal(cd.seconds(), 1);
  cd.tick(0, 'expired');
  assert.equal(cd.expired, true);
  assert.equal(cd.seconds(), 0);
});

test('formatSeconds', () => {
  assert.equal(formatSeconds(0), '0:00');
  assert.equal(formatSeconds(59), '0:59');
  assert.equal(formatSeconds(600), '10:00');
  assert.equal(formatSeconds(3600), '1:00:00');
  assert.equal(formatSeconds(3725), '1:02:05');
});
