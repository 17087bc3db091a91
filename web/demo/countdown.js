// Countdown keeps a session's time window on the local clock, so the
// display moves once a second without waiting for the broker, and corrects
// it from the broker's ticks only when the two disagree by more than
// driftMs: a tick's remaining_ms is late by the network's delay, and
// following every tick would make the clock jump back and forth.
export class Countdown {
  /**
   * @param {object} [o]
   * @param {() => number} [o.now] a monotonic clock in ms (performance.now)
   * @param {number} [o.driftMs] the disagreement that triggers a correction
   */
  constructor({ now = () => performance.now(), driftMs = 1500 } = {}) {
    this.now = now;
    this.driftMs = driftMs;
    this.deadline = null; // on the local clock; null without a window
    this.corrections = 0;
    this.expired = false;
  }

  /** start sets the window from begin's remaining_ms (undefined: no window). */
  start(remainingMs) {
    this.expired = false;
    this.deadline = typeof remainingMs === 'number' ? this.now() + remainingMs : null;
  }

  /**
   * tick takes a tick's remaining_ms and state; it reports whether the
   * local clock was corrected.
   */
  tick(remainingMs, state) {
    if (state === 'expired') {
      this.expire();
      return false;
    }
    if (typeof remainingMs !== 'number') {
      return false;
    }
    const server = this.now() + remainingMs;
    if (this.deadline === null) {
      this.deadline = server;
      return false;
    }
    if (Math.abs(server - this.deadline) <= this.driftMs) {
      return false;
    }
    this.deadline = server;
    this.corrections++;
    return true;
  }

  /** expire ends the window: the broker's word, whatever the local clock says. */
  expire() {
    this.expired = true;
    if (this.deadline !== null && this.deadline > this.now()) {
      this.deadline = this.now();
    }
  }

  /** remaining is the time left in ms (0 when past), or null without a window. */
  remaining() {
    if (this.deadline === null) {
      return null;
    }
    return Math.max(0, this.deadline - this.now());
  }

  /** seconds is the whole seconds to show: 59.2 s left shows as 60 until 59 s are left. */
  seconds() {
    const r = this.remaining();
    return r === null ? null : Math.ceil(r / 1000);
  }

  /** untilChange is how long (ms) until seconds() changes. */
  untilChange() {
    const r = this.remaining();
    if (r === null || r === 0) {
      return 1000;
    }
    return (r % 1000 || 1000) + 5;
  }
}

/** formatSeconds writes s as m:ss, or h:mm:ss from an hour. */
export function formatSeconds(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}
