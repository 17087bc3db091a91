// Inbox delivers a session's notifications to the application in seq order,
// once each, and acknowledges them after the application handled them.
//
// The broker delivers at least once: after a reconnect or a new begin it
// sends again everything after the last acknowledged seq. So a notification
// whose seq is not above the highest seen is a duplicate and is dropped.
// Seqs may skip (an overflow policy dropped some): each notification's prev
// is the seq the broker sent before it, so such holes are not waited for.
// A prev above the highest seen means one was lost in transit: acks being
// cumulative, nothing after the gap is accepted, and an ack with resend
// asks the broker for everything after the acked seq again.
//
// Acks are cumulative ({"op":"ack","upto":seq} covers every seq up to it) and
// coalesced: at most one ack is in flight; when it completes, one more is
// sent for the highest seq handled meanwhile, if any.
//
// Inbox knows nothing of MQTT: the client gives it the function that sends
// an ack and resolves when the broker confirmed it.
export class Inbox {
  /**
   * @param {object} hooks
   * @param {(upto: number, resend?: boolean) => Promise<unknown>} hooks.sendAck
   * @param {(n: {seq: number, prev?: number, data: unknown, ts?: number}) => (void|Promise<void>)} [hooks.handle]
   * @param {(upto: number) => void} [hooks.onAcked]
   * @param {(err: Error) => void} [hooks.onError] a handler's error, or an ack's (with op 'ack' and upto)
   * @param {() => boolean} [hooks.canAck] whether an ack can be sent now (an instance is current)
   * @param {boolean} [hooks.autoAck] ack each notification once handle resolved (default true)
   */
  constructor({ sendAck, handle, onAcked, onError, canAck, autoAck = true }) {
    this.sendAck = sendAck;
    this.canAck = canAck ?? (() => true);
    this.handle = handle ?? (() => {});
    this.onAcked = onAcked ?? (() => {});
    this.onError = onError ?? (() => {});
    this.autoAck = autoAck;
    this.lastSeen = 0; // highest seq accepted for delivery
    this.handled = 0; // highest seq the application handled (what the next ack covers)
    this.acked = 0; // highest seq the broker confirmed
    this.inFlight = 0; // upto of the ack in flight; 0 when none
    this.blocked = false; // a handler failed: deliver and ack nothing more until the next begin
    this.queue = [];
    this.generation = 0; // bumped when the numbering changes (another broker's queue): what was taken before is not acked
    this.epoch = 0; // bumped at every begin: a handler failing from before it blocks nothing
    this.retryMs = 0; // the pause before a failed ack is sent again (0: none failed)
    this.retryTimer = null;
    this.draining = false;
    this.again = false; // a flush was asked for while an ack was in flight
    this.resending = false; // an ack with resend is in flight
  }

  /**
   * receive takes one notification as it arrived; it reports whether it was
   * accepted (false for duplicates and malformed payloads).
   */
  receive(n) {
    if (n === null || typeof n !== 'object' || !Number.isSafeInteger(n.seq) || n.seq < 1) {
      this.onError(new Error('tether: notification without a positive integer seq'));
      return false;
    }
    if (n.seq <= this.lastSeen || this.blocked) {
      return false; // a duplicate, or after a failed handler: the next begin sends it again
    }
    if (Number.isSafeInteger(n.prev) && n.prev > this.lastSeen) {
      this.resend();
      return false;
    }
    this.lastSeen = n.seq;
    this.queue.push(n);
    void this.drain();
    return true;
  }

  async drain() {
    if (this.draining) {
      return;
    }
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const n = this.queue.shift();
        const { generation, epoch } = this;
        try {
          await this.handle(n);
        } catch (err) {
          this.onError(err instanceof Error ? err : new Error(String(err)));
          if (epoch !== this.epoch) {
            continue; // a begin came meanwhile: the new instance gets it again anyway
          }
          // Not handled, so not acknowledged: the broker sends it again to
          // the next instance, and what follows it with it (acks are
          // cumulative). Nothing after it is handed over meanwhile, so the
          // application still sees each seq once, in order.
          this.blocked = true;
          this.queue.length = 0;
          break;
        }
        if (this.autoAck && generation === this.generation) {
          this.ack(n.seq); // not across a renumbering: that seq means another notification now
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** ack marks everything up to seq handled and acknowledges it (coalesced). */
  ack(seq) {
    if (seq > this.handled) {
      this.handled = seq;
    }
    this.flush();
  }

  /**
   * ackNow acknowledges what was handled and not yet confirmed, and
   * resolves once the broker confirmed it (end sends it first, so that the
   * next instance does not get it again).
   */
  async ackNow() {
    const upto = this.handled;
    if (upto <= this.acked || !this.canAck()) {
      return;
    }
    const generation = this.generation;
    await this.sendAck(upto);
    if (generation === this.generation && upto > this.acked) {
      this.acked = upto;
      this.onAcked(upto);
    }
  }

  /** flush sends an ack if something handled is not acknowledged yet and none is in flight. */
  flush() {
    if (this.inFlight !== 0) {
      this.again = true; // once the ack in flight completes
      return;
    }
    this.again = false;
    if (this.handled <= this.acked || !this.canAck()) {
      return; // nothing to ack, or not yet: begun() flushes
    }
    const upto = this.handled;
    const generation = this.generation;
    this.inFlight = upto;
    let sent;
    try {
      sent = Promise.resolve(this.sendAck(upto));
    } catch (err) {
      sent = Promise.reject(err);
    }
    let retry = false;
    sent
      .then(
        () => {
          this.retryMs = 0;
          if (generation === this.generation && upto > this.acked) {
            this.acked = upto;
            this.onAcked(upto);
          }
        },
        (err) => {
          const e = err instanceof Error ? err : new Error(String(err));
          this.onError(Object.assign(e, { op: 'ack', upto }));
          // The broker keeps its window full until this ack arrives: send it
          // again while the link is at fault (or the broker's store), not
          // when the broker refused it (stale, expired, bad).
          retry = ['timeout', 'connection_lost', 'internal'].includes(e.code);
        },
      )
      .finally(() => {
        this.inFlight = 0;
        // A newer handled seq, or a flush asked for meanwhile (a begin), is
        // worth another ack now; a failed one alone is sent again later.
        if (this.handled > upto || this.again) {
          this.flush();
        } else if (retry && this.retryTimer === null) {
          this.retryMs = Math.min(Math.max(2 * this.retryMs, 100), 5000);
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.flush();
          }, this.retryMs);
        }
      });
  }

  /**
   * resend asks the broker for everything after the acked seq again, once
   * at a time: what was in transit when it was asked arrives before the
   * reply and shows the same gap.
   */
  resend() {
    if (this.resending || !this.canAck()) {
      return; // not begun: the next begin sends everything unacked anyway
    }
    this.resending = true;
    let sent;
    try {
      sent = Promise.resolve(this.sendAck(this.acked, true));
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent
      .catch((err) => {
        const e = err instanceof Error ? err : new Error(String(err));
        this.onError(Object.assign(e, { op: 'ack', upto: this.acked, resend: true }));
      })
      .finally(() => {
        this.resending = false;
      });
  }

  /**
   * beginning is called as a begin is sent. The broker sends the new
   * instance everything after its acked seq, possibly before the begin's
   * reply. After a handler failed, what followed the last handled seq is
   * accepted again; otherwise nothing changes: what arrives again is a
   * duplicate.
   */
  beginning() {
    this.epoch++;
    if (this.blocked) {
      this.queue.length = 0;
      this.lastSeen = this.handled;
      this.blocked = false;
    }
  }

  /**
   * begun is called with the begin reply's acked seq: what the broker (or
   * another device) acknowledged is not delivered nor acked again, and what
   * was handled here but not acknowledged is acknowledged now. An acked seq
   * below the one this broker confirmed before means another broker's
   * queue (a session restored from a snapshot): its seqs are counted from
   * its acked seq, as they come.
   */
  begun(brokerAcked = 0) {
    if (brokerAcked < this.acked) {
      this.acked = this.handled = this.lastSeen = brokerAcked;
      this.queue.length = 0; // the other numbering's: not delivered, never acked
      this.generation++;
    }
    this.acked = Math.max(this.acked, brokerAcked);
    this.handled = Math.max(this.handled, brokerAcked);
    this.lastSeen = Math.max(this.lastSeen, brokerAcked);
    this.flush();
  }
}
