// The session's sealed snapshot as the client keeps it: the newest one the
// broker sent (by version), in memory and, when there is a storage, in it
// (localStorage in a browser), so that a page that comes back presents it
// at begin. No MQTT here: the client (tether.js) feeds it, and node's unit
// tests (test/unit/snapshot.test.mjs) drive it with a fake storage.
//
// The broker sends {"version": n, "blob": "ts1.…"} on sessions/U/S/snapshot
// after every request that changed the session; the blob is sealed (the
// client cannot read it, only keep it). Begin presents it as "restore": a
// broker that lost the session (another node, a lost data directory)
// restores it, one that holds the session at that version or newer ignores
// it. The Go client does the same (client/client.go).

/** snapshotKey is the storage key of user/session's snapshot. */
export const snapshotKey = (user, session) => `tether:snapshot:${user}/${session}`;

/**
 * defaultStorage is the browser's localStorage, or null where there is none
 * (node) or it may not be used (a sandboxed frame, storage disabled).
 */
export function defaultStorage() {
  try {
    const s = globalThis.localStorage;
    return s && typeof s.getItem === 'function' && typeof s.setItem === 'function' ? s : null;
  } catch {
    return null; // reading localStorage itself throws where storage is denied
  }
}

// valid: a version is a positive integer, a blob a non-empty string.
const valid = (version, blob) => Number.isSafeInteger(version) && version > 0 && typeof blob === 'string' && blob !== '';

/**
 * SnapshotKeeper holds the newest snapshot of one session.
 *
 *   key      the storage key (snapshotKey(user, session))
 *   storage  {getItem, setItem, removeItem} (a Storage), or null: memory only
 *   initial  a blob the application kept itself (version unknown: any the
 *            broker sends, or one in storage, replaces it), or {version, blob}
 *   onError  (err) => void: a storage that failed (full, denied); the
 *            snapshot is still kept in memory
 */
export class SnapshotKeeper {
  constructor({ key, storage = null, initial, onError } = {}) {
    this.key = key;
    this.storage = storage;
    this.onError = onError ?? (() => {});
    this.version = 0;
    this.blob = '';
    if (typeof initial === 'string' && initial !== '') {
      this.blob = initial;
    } else if (initial && valid(initial.version, initial.blob)) {
      this.version = initial.version;
      this.blob = initial.blob;
    }
    this.load();
  }

  /** current is the snapshot held now, {version, blob}, or null. */
  current() {
    return this.blob ? { version: this.version, blob: this.blob } : null;
  }

  /**
   * load adopts the stored snapshot if it is newer than the one held (another
   * tab of the same origin may have kept a newer one) and returns current().
   */
  load() {
    const s = this.read();
    if (s && s.version > this.version) {
      this.version = s.version;
      this.blob = s.blob;
    }
    return this.current();
  }

  /**
   * keep takes a snapshot the broker sent: it is kept (and stored) only if
   * its version is newer than the one held. It reports whether it was.
   */
  keep(version, blob) {
    if (!valid(version, blob) || version <= this.version) {
      return false;
    }
    this.version = version;
    this.blob = blob;
    const s = this.read();
    if (!s || s.version < version) {
      // Never over a newer one another tab stored meanwhile.
      this.write(JSON.stringify({ version, blob }));
    }
    return true;
  }

  /**
   * forget drops blob (a snapshot the broker refused to restore from) from
   * memory and storage; a different, newer one kept meanwhile stays.
   */
  forget(blob) {
    if (this.blob === blob) {
      this.version = 0;
      this.blob = '';
    }
    const s = this.read();
    if (s && s.blob === blob) {
      this.write(null);
    }
  }

  // read returns the stored {version, blob}, or null (none, unreadable, or no storage).
  read() {
    if (!this.storage) {
      return null;
    }
    let text;
    try {
      text = this.storage.getItem(this.key);
    } catch (err) {
      this.onError(err);
      return null;
    }
    if (typeof text !== 'string') {
      return null;
    }
    try {
      const s = JSON.parse(text);
      return s && valid(s.version, s.blob) ? { version: s.version, blob: s.blob } : null;
    } catch {
      return null; // not ours, or damaged: the next snapshot overwrites it
    }
  }

  // write stores text, or removes the entry (null).
  write(text) {
    if (!this.storage) {
      return;
    }
    try {
      if (text === null) {
        this.storage.removeItem?.(this.key);
      } else {
        this.storage.setItem(this.key, text);
      }
    } catch (err) {
      this.onError(err);
    }
  }
}
