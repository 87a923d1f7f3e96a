// The JavaScript client of the chat contract v1 (docs/protocol.md).
// One dependency-free ES module for browsers and Node >= 20 (pass the `ws`
// package as `WebSocket` where there is no global one). Served by the
// ingress at /client.js.
//
// What it does for the application, so a reconnect loses and repeats
// nothing: auth by the first frame; reconnects with exponential backoff and
// jitter across a list of URLs; re-joins every room with `since`; drops any
// frame at or below the last offset it delivered; on `recovered: false`
// reloads the newest page with `history` and says so (`reload` event); on
// `expiring` asks the token function for a new token and sends `refresh`;
// `send()` makes the `client_id` and resends with the same one after a
// reconnect, so a retry is never stored twice.

const ROOM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const EPOCH_RE = /^[A-Za-z0-9_-]{1,64}$/;
const TYPING_EVERY_MS = 3000;
// A connection counts as healthy (and resets the backoff) after this long.
const HEALTHY_MS = 5000;
// Refusals worth repeating on the same connection: the backend or the rate
// limit, for a moment.
const TRANSIENT = new Set(['unavailable', 'rate_limited']);
const RELOAD_TRIES = 3;

/**
 * @typedef {'idle'|'connecting'|'connected'|'reconnecting'|'closed'} ConnectionState
 *
 * @typedef {object} Message
 * @property {string} room
 * @property {number} offset   gap-free, 1 for a room's first message
 * @property {string} epoch    changes when the room's stream starts afresh
 * @property {string} id       Redis stream entry id (opaque)
 * @property {string} user
 * @property {string} text
 * @property {number} ts       ms since the Unix epoch
 * @property {string} client_id
 * @property {'user'|'system'|'summary'} kind
 *
 * @typedef {object} Ack
 * @property {string} room
 * @property {string} client_id
 * @property {number} offset
 * @property {string} epoch
 * @property {string} id
 * @property {number} ts
 * @property {boolean} duplicate  true when this client_id was stored before
 *
 * @typedef {object} HistoryPage
 * @property {string} room
 * @property {string} epoch
 * @property {Message[]} messages  oldest first
 * @property {{epoch: string, before: number}|null} next  the next older page
 *
 * @typedef {object} Position
 * @property {string} epoch
 * @property {number} offset
 *
 * @typedef {object} ClientOptions
 * @property {string} [url]       one WebSocket URL (ws:// or wss://, path /v1/ws)
 * @property {string[]} [urls]    several; the client moves to the next on each reconnect
 * @property {string|(() => string|Promise<string>)} token
 *           a JWT, or a function returning one (called on every connect and on `expiring`)
 * @property {any} [WebSocket]    constructor; default globalThis.WebSocket
 * @property {{initial?: number, max?: number, factor?: number}} [backoff]
 *           reconnect delays in ms (default 500, 15000, 2); each delay is
 *           drawn between half and all of min(max, initial * factor^attempt)
 * @property {number} [sendTimeout]    ms a send() may take, reconnects included (default 30000)
 * @property {number} [connectTimeout] ms from opening a socket to `ready` (default 10000)
 * @property {number} [pingInterval]   ms of silence before the client pings (default 20000)
 * @property {number} [pongTimeout]    ms to wait for any frame after that ping (default 10000)
 * @property {number} [maxTextBytes]   largest text in UTF-8 bytes (default 4096, as the server)
 * @property {number} [reloadLimit]    messages loaded after `recovered: false` (default 50)
 */

/** An error with one of the contract's codes (`bad_request`, `unauthorized`,
 * `forbidden`, `not_joined`, `not_found`, `rate_limited`, `too_large`,
 * `unavailable`, `internal`) or the client's own `timeout` and `closed`. */
export class ChatError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = 'ChatError';
    this.code = code;
  }
}

const bad = (message) => new ChatError('bad_request', message);

function checkRoom(room) {
  if (typeof room !== 'string' || !ROOM_RE.test(room)) {
    throw bad(`room must match ${ROOM_RE}: got ${JSON.stringify(room)}`);
  }
}

function checkPosition(p, what) {
  if (p === undefined || p === null) return null;
  if (typeof p !== 'object' || typeof p.epoch !== 'string' || !EPOCH_RE.test(p.epoch) ||
      !Number.isSafeInteger(p.offset) || p.offset < 0) {
    throw bad(`${what} must be {epoch: string, offset: integer >= 0}`);
  }
  return { epoch: p.epoch, offset: p.offset };
}

function randomId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return 'c' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const utf8Length = (s) => new TextEncoder().encode(s).length;

export class ChatClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || typeof options !== 'object') throw bad('options are required');
    const urls = options.urls ?? (options.url ? [options.url] : []);
    if (!Array.isArray(urls) || urls.length === 0 ||
        !urls.every((u) => typeof u === 'string' && /^wss?:\/\/[^\s]+$/.test(u))) {
      throw bad('url or urls must give ws:// or wss:// URLs');
    }
    if (typeof options.token !== 'string' && typeof options.token !== 'function') {
      throw bad('token must be a JWT string or a function returning one');
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw bad('no WebSocket here: pass options.WebSocket (e.g. the ws package on Node 20)');
    }
    const num = (v, d, min) => {
      if (v === undefined) return d;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw bad(`bad number option: ${v}`);
      return v;
    };
    const b = options.backoff ?? {};
    this._opt = {
      urls: [...urls],
      token: options.token,
      WebSocket: WS,
      initial: num(b.initial, 500, 1),
      max: num(b.max, 15000, 1),
      factor: num(b.factor, 2, 1),
      sendTimeout: num(options.sendTimeout, 30000, 1),
      connectTimeout: num(options.connectTimeout, 10000, 1),
      pingInterval: num(options.pingInterval, 20000, 1),
      pongTimeout: num(options.pongTimeout, 10000, 1),
      maxTextBytes: num(options.maxTextBytes, 4096, 1),
      reloadLimit: num(options.reloadLimit, 50, 1),
    };
    this._listeners = new Map();
    /** @type {ConnectionState} */
    this.state = 'idle';
    /** The `ready` frame of the current connection: {user, session, exp}. */
    this.session = null;
    this._ws = null;
    this._ready = false;
    this._conn = 0; // bumps per socket, so a late event of an old one is ignored
    this._urlIndex = 0;
    this._attempt = 0;
    this._timer = null;
    this._pinger = null;
    this._lastFrame = 0;
    this._pinged = false;
    this._refs = 0;
    this._pending = new Map(); // ref -> request
    this._rooms = new Map(); // room -> per-room state
    this._stopped = false;
    this._deadline = null;
    this._readyAt = 0;
  }

  /** Subscribe to an event; returns the function that unsubscribes.
   * Events: `state` {state, url?, attempt?, delay?, code?, reason?},
   * `ready` {user, session, exp}, `joined` {room, epoch, offset, recovered},
   * `reload` {room, epoch, offset, messages, next, failed?} (after
   * `recovered: false`: replace what you show with these; `failed` when the
   * page could not be loaded, `next` then pages back from `offset`),
   * `message` Message, `presence` {room, user, state}, `typing` {room, user},
   * `left` {room, byServer, error?} (deleted, or refused on a rejoin),
   * `refreshed` {exp}, `error` ChatError (with `room` when it concerns one).
   * @param {string} type @param {(ev: any) => void} fn */
  on(type, fn) {
    if (typeof fn !== 'function') throw bad('listener must be a function');
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type)?.delete(fn);
  }

  _emit(type, ev) {
    for (const fn of this._listeners.get(type) ?? []) {
      try { fn(ev); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, ...extra });
  }

  /** Open the connection (and keep it open until close()). */
  connect() {
    if (this._stopped) throw new ChatError('closed', 'this client was closed');
    if (this._ws || this._timer) return;
    this._open();
  }

  /** Close for good: pending requests reject with `closed`. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._detach();
    if (ws) { try { ws.close(1000, 'bye'); } catch { /* already closed */ } }
    for (const [ref, p] of this._pending) { this._settle(ref, p, new ChatError('closed', 'client closed')); }
    for (const r of this._rooms.values()) this._rejectJoin(r, new ChatError('closed', 'client closed'));
    this._rooms.clear();
    this._setState('closed');
  }

  /** Join a room (or return the join already made). Resolves with the
   * `joined` fields. Pass `since` (a position you saved, e.g. across a page
   * reload) to recover from there.
   * @param {string} room @param {{since?: Position}} [opts]
   * @returns {Promise<{room: string, epoch: string, offset: number, recovered?: boolean}>} */
  join(room, opts = {}) {
    if (this._stopped) return Promise.reject(new ChatError('closed', 'this client was closed'));
    checkRoom(room);
    const since = checkPosition(opts.since, 'since');
    let r = this._rooms.get(room);
    if (r) return r.joined ? Promise.resolve(r.joined) : new Promise((res, rej) => r.waiters.push({ res, rej }));
    r = { room, pos: since, joined: null, waiters: [], typingAt: 0, read: null, readSent: true, readRef: null, ref: null, held: null, needReload: false, retry: null };
    this._rooms.set(room, r);
    const p = new Promise((res, rej) => r.waiters.push({ res, rej }));
    if (this._ready) this._sendJoin(r);
    return p;
  }

  /** Leave a room. Messages to it not yet sent reject with `not_joined`
   * (with their `clientId`); those already sent settle on their ack. */
  leave(room) {
    checkRoom(room);
    const r = this._rooms.get(room);
    if (!r) return;
    this._forget(r, new ChatError('not_joined', `left ${room}`), (p) => p.sentOn === 0);
    // The ref marks the answering `left` as ours, not a deletion.
    if (this._ready) this._raw({ type: 'leave', room, ref: 'l' + (++this._refs) });
  }

  // Drops a room: its join waiters and the sends `which` picks reject.
  _forget(r, err, which = () => true) {
    if (this._rooms.get(r.room) !== r) return;
    this._rooms.delete(r.room);
    clearTimeout(r.retry);
    this._rejectJoin(r, err);
    for (const [ref, p] of this._pending) {
      if (p.frame.type === 'send' && p.frame.room === r.room && which(p)) this._settle(ref, p, err);
    }
  }

  /** The last position delivered in a room ({epoch, offset}), to save and
   * pass as `since` later; null before the room is joined. */
  position(room) {
    const r = this._rooms.get(room);
    return r?.pos ? { ...r.pos } : null;
  }

  /** Send a message; resolves with the ack. Made idempotent by `client_id`
   * (made here unless given): resent after a reconnect, stored once.
   * @param {string} room @param {string} text @param {{clientId?: string}} [opts]
   * @returns {Promise<Ack>} */
  send(room, text, opts = {}) {
    try {
      checkRoom(room);
      if (!this._rooms.has(room)) throw new ChatError('not_joined', `join ${room} before sending to it`);
      if (typeof text !== 'string' || text.length === 0) throw bad('text must be a non-empty string');
      if (utf8Length(text) > this._opt.maxTextBytes) {
        throw new ChatError('too_large', `text is over ${this._opt.maxTextBytes} bytes`);
      }
      const clientId = opts.clientId ?? randomId();
      if (typeof clientId !== 'string' || clientId.length < 1 || clientId.length > 64) {
        throw bad('clientId must be 1-64 characters');
      }
      return this._request({ type: 'send', room, text, client_id: clientId }, this._opt.sendTimeout);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A page of history, oldest first, with `next` for the page before it.
   * @param {string} room @param {{before?: number, epoch?: string, limit?: number}} [opts]
   * @returns {Promise<HistoryPage>} */
  history(room, opts = {}) {
    try {
      checkRoom(room);
      const frame = { type: 'history', room };
      if (opts.before !== undefined) {
        if (!Number.isSafeInteger(opts.before) || opts.before < 1) throw bad('before must be an integer >= 1');
        frame.before = opts.before;
      }
      if (opts.epoch !== undefined) {
        if (typeof opts.epoch !== 'string' || !EPOCH_RE.test(opts.epoch)) throw bad('epoch is not an epoch');
        frame.epoch = opts.epoch;
      }
      if (opts.limit !== undefined) {
        if (!Number.isSafeInteger(opts.limit) || opts.limit < 1 || opts.limit > 100) throw bad('limit must be 1-100');
        frame.limit = opts.limit;
      }
      return this._request(frame, this._opt.sendTimeout);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Tell the room you are typing; sent at most every 3 s per room, and
   * only while connected (it is not worth queueing). */
  typing(room) {
    checkRoom(room);
    const r = this._rooms.get(room);
    if (!r) throw new ChatError('not_joined', `join ${room} first`);
    const now = Date.now();
    if (!this._ready || !r.joined || now - r.typingAt < TYPING_EVERY_MS) return;
    r.typingAt = now;
    this._raw({ type: 'typing', room });
  }

  /** Store your read marker; the newest one is sent (again) once connected. */
  read(room, offset) {
    checkRoom(room);
    if (!Number.isSafeInteger(offset) || offset < 0) throw bad('offset must be an integer >= 0');
    const r = this._rooms.get(room);
    if (!r) throw new ChatError('not_joined', `join ${room} first`);
    r.read = offset;
    r.readSent = false;
    this._flushRead(r);
  }

  /** Send a new token now (the `expiring` event does this by itself when
   * `token` is a function). */
  refresh(token) {
    if (typeof token !== 'string' || token.length === 0) return Promise.reject(bad('token must be a JWT'));
    return this._request({ type: 'refresh', token }, this._opt.sendTimeout).then((r) => {
      // A fixed token: the refreshed one is what the next connection uses.
      if (typeof this._opt.token === 'string') this._opt.token = token;
      return r;
    });
  }

  // ---- connection ----

  async _open() {
    const conn = ++this._conn;
    const url = this._opt.urls[this._urlIndex % this._opt.urls.length];
    // A retry already said `reconnecting` (with its delay).
    if (this.state === 'idle') this._setState('connecting', { url, attempt: 0 });
    let token;
    try {
      token = await this._token();
    } catch (e) {
      if (conn !== this._conn || this._stopped) return;
      this._emit('error', new ChatError('unauthorized', `token function failed: ${e?.message ?? e}`));
      this._retry();
      return;
    }
    if (conn !== this._conn || this._stopped) return;
    let ws;
    try {
      ws = new this._opt.WebSocket(url);
    } catch (e) {
      this._emit('error', bad(`cannot open ${url}: ${e?.message ?? e}`));
      this._retry();
      return;
    }
    this._ws = ws;
    this._ready = false;
    this._lastFrame = Date.now();
    this._pinged = false;
    clearTimeout(this._deadline);
    this._deadline = setTimeout(() => { if (conn === this._conn && !this._ready) this._drop(conn, 4000, 'connect timeout'); }, this._opt.connectTimeout);
    ws.onopen = () => { if (conn === this._conn) this._raw({ type: 'auth', token }); };
    ws.onmessage = (ev) => { if (conn === this._conn) this._frame(ev.data); };
    ws.onerror = () => { /* onclose follows and says more */ };
    ws.onclose = (ev) => { if (conn === this._conn) this._drop(conn, ev.code, ev.reason); };
  }

  async _token() {
    const t = typeof this._opt.token === 'function' ? await this._opt.token() : this._opt.token;
    if (typeof t !== 'string' || t.length === 0) throw new Error('the token function returned no token');
    return t;
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._ready = false;
    this._conn++;
    clearInterval(this._pinger);
    this._pinger = null;
    clearTimeout(this._deadline);
    for (const r of this._rooms.values()) { clearTimeout(r.retry); r.retry = null; }
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Not null: the ws package throws an `error` nobody listens to (closing
      // a socket that is still connecting raises one).
      ws.onerror = () => {};
    }
    return ws;
  }

  // The socket is gone (closed, timed out): reconnect unless told to stop.
  _drop(conn, code, reason) {
    if (conn !== this._conn) return;
    const healthy = this._ready && Date.now() - this._readyAt >= HEALTHY_MS;
    const ws = this._detach();
    if (ws) { try { ws.close(4000, 'dropped'); } catch { /* already closing */ } }
    for (const r of this._rooms.values()) r.joined = null;
    if (this._stopped) return;
    // An expired, refused or revoked fixed token will not get better by
    // retrying; a token function may get a new one.
    if ((code === 4001 || code === 4003) && typeof this._opt.token === 'string') {
      const err = new ChatError('unauthorized', `the server closed 4001: ${reason || 'token refused'}`);
      this._emit('error', err);
      this._stopped = true;
      for (const [ref, p] of this._pending) this._settle(ref, p, err);
      for (const r of this._rooms.values()) this._rejectJoin(r, err);
      this._setState('closed', { code, reason });
      return;
    }
    // A server that accepts and drops at once keeps backing off.
    if (healthy) this._attempt = 0;
    this._retry({ code, reason });
  }

  _retry(extra = {}) {
    if (this._stopped) return;
    const o = this._opt;
    const ceiling = Math.min(o.max, o.initial * Math.pow(o.factor, this._attempt));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this._attempt++;
    // Each reconnect tries the next URL: a node that went away is skipped
    // on the first retry.
    this._urlIndex = (this._urlIndex + 1) % o.urls.length;
    this._setState('reconnecting', { attempt: this._attempt, delay, ...extra });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => { this._timer = null; this._open(); }, delay);
  }

  _raw(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(frame)); return true; } catch { return false; }
  }

  _heartbeat() {
    clearInterval(this._pinger);
    const conn = this._conn;
    const tick = Math.max(50, Math.min(this._opt.pingInterval, this._opt.pongTimeout) / 2);
    this._pinger = setInterval(() => {
      const idle = Date.now() - this._lastFrame;
      if (this._pinged && idle > this._opt.pingInterval + this._opt.pongTimeout) {
        this._drop(conn, 4000, 'no answer to ping');
      } else if (!this._pinged && idle > this._opt.pingInterval) {
        this._pinged = true;
        this._raw({ type: 'ping' });
      }
    }, tick);
  }

  // ---- requests ----

  _request(frame, timeout) {
    if (this._stopped) return Promise.reject(new ChatError('closed', 'this client was closed'));
    return new Promise((resolve, reject) => {
      const ref = 'r' + (++this._refs);
      const p = { frame: { ...frame, ref }, resolve, reject, sentOn: 0, timer: null, retryTimer: null };
      p.timer = setTimeout(() => this._settle(ref, p, new ChatError('timeout', `${frame.type} not answered in ${timeout} ms`)), timeout);
      // An app that retries a failed send passes this back as `clientId`.
      if (frame.type === 'send') p.clientId = frame.client_id;
      this._pending.set(ref, p);
      this._transmit(p);
    });
  }

  // Sends a request if this connection can carry it: a send waits for its
  // room's `joined`, so the server never answers `not_joined` to a retry.
  _transmit(p) {
    if (!this._ready || p.sentOn === this._conn) return;
    if (p.frame.type === 'send' && !this._rooms.get(p.frame.room)?.joined) return;
    if (this._raw(p.frame)) p.sentOn = this._conn;
  }

  _settle(ref, p, err, value) {
    if (this._pending.get(ref) !== p) return;
    this._pending.delete(ref);
    clearTimeout(p.timer);
    clearTimeout(p.retryTimer);
    if (err && p.clientId) err.clientId = p.clientId;
    if (err) p.reject(err); else p.resolve(value);
  }

  _sendJoin(r) {
    // The ref ties a refusal (an `error` has no room) to this room.
    r.ref = 'j' + (++this._refs);
    const frame = { type: 'join', room: r.room, ref: r.ref };
    if (r.pos) frame.since = { epoch: r.pos.epoch, offset: r.pos.offset };
    this._raw(frame);
  }

  _rejectJoin(r, err) {
    const waiters = r.waiters;
    r.waiters = [];
    for (const w of waiters) w.rej(err);
  }

  _flushRead(r) {
    if (r.readSent || !this._ready || !r.joined) return;
    r.readRef = 'd' + (++this._refs);
    if (this._raw({ type: 'read', room: r.room, offset: r.read, ref: r.readRef })) r.readSent = true;
  }

  // ---- frames ----

  _frame(data) {
    this._lastFrame = Date.now();
    this._pinged = false;
    let f;
    try {
      f = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      this._emit('error', bad('the server sent a frame that is not JSON'));
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') return;
    const ref = f.ref === undefined || f.ref === null ? undefined : String(f.ref);
    const p = ref !== undefined ? this._pending.get(ref) : undefined;
    switch (f.type) {
      case 'ready': return this._onReady(f);
      case 'joined': return this._onJoined(f, ref);
      case 'message': return this._onMessage(f);
      case 'ack':
      case 'history':
      case 'refreshed':
        if (p) this._settle(ref, p, null, strip(f));
        if (f.type === 'refreshed') {
          if (this.session) this.session.exp = f.exp;
          this._emit('refreshed', { exp: f.exp });
        }
        return;
      case 'error': return this._onError(f, ref, p);
      case 'left': {
        // With a ref it answers our own `leave`; without, the room was deleted.
        const r = this._rooms.get(f.room);
        if (ref === undefined && r && r.joined) {
          this._forget(r, new ChatError('not_joined', `${f.room} was deleted`));
          this._emit('left', { room: f.room, byServer: true });
        }
        return;
      }
      case 'presence':
      case 'typing':
        if (this._rooms.has(f.room)) this._emit(f.type, strip(f));
        return;
      case 'expiring': return this._onExpiring();
      default: return; // pong, and frames a newer server may add
    }
  }

  _onReady(f) {
    this._ready = true;
    this._readyAt = Date.now();
    clearTimeout(this._deadline);
    this.session = { user: f.user, session: f.session ?? null, exp: f.exp };
    this._heartbeat();
    this._setState('connected', { url: this._opt.urls[this._urlIndex % this._opt.urls.length] });
    this._emit('ready', { ...this.session });
    // Sends still in flight to a room left while disconnected cannot be
    // answered any more.
    for (const [ref, p] of this._pending) {
      if (p.frame.type === 'send' && !this._rooms.has(p.frame.room)) {
        this._settle(ref, p, new ChatError('not_joined', `left ${p.frame.room}`));
      }
    }
    for (const r of this._rooms.values()) this._sendJoin(r);
    // Reads (history, refresh) go now; sends follow their room's `joined`.
    for (const p of this._pending.values()) this._transmit(p);
  }

  async _onJoined(f, ref) {
    const r = this._rooms.get(f.room);
    // Only the answer to this room's latest join counts: an earlier one
    // (before a leave and a new join) says nothing about it.
    if (!r || ref !== r.ref) return;
    const info = { room: f.room, epoch: f.epoch, offset: f.offset };
    if (f.recovered !== undefined) info.recovered = f.recovered;
    // A reload cut short by this reconnect is done again on this join.
    if (r.held) { r.held = null; r.needReload = true; }
    const reload = r.needReload || (r.pos !== null && f.recovered !== true);
    // Recovered: keep the position, the missed messages follow. Otherwise
    // live messages start after `joined.offset` (and a reload shows the rest).
    if (!r.pos || reload) r.pos = { epoch: f.epoch, offset: f.offset };
    r.joined = info;
    r.everJoined = true;
    const waiters = r.waiters;
    r.waiters = [];
    for (const w of waiters) w.res(info);
    this._emit('joined', info);
    this._flushRead(r);
    for (const p of this._pending.values()) if (p.frame.room === f.room) this._transmit(p);
    if (!reload) return;
    // Live messages wait until the app has the reloaded page, so it can
    // replace its list without losing them.
    const held = [];
    r.held = held;
    r.needReload = true;
    // Exactly what precedes the live messages: at or below joined.offset
    // (`next` leads on into older epochs and the archive).
    const want = { before: f.offset + 1, epoch: f.epoch, limit: this._opt.reloadLimit };
    let page = null;
    for (let i = 0; i < RELOAD_TRIES && !page; i++) {
      try {
        page = await this.history(f.room, want);
      } catch (e) {
        if (e.code === 'closed') return;
        if (i === RELOAD_TRIES - 1) this._emit('error', Object.assign(e, { room: f.room }));
        else await new Promise((res) => setTimeout(res, 500 * (i + 1)));
      }
      // A later join (another reconnect) supersedes this reload.
      if (this._rooms.get(f.room) !== r || r.held !== held) return;
    }
    r.held = null;
    r.needReload = false;
    // Failed: nothing to show yet, but `next` lets the app page back itself.
    const ev = page
      ? { room: f.room, epoch: f.epoch, offset: f.offset, messages: page.messages, next: page.next }
      : { room: f.room, epoch: f.epoch, offset: f.offset, messages: [], next: { epoch: f.epoch, before: f.offset + 1 }, failed: true };
    this._emit('reload', ev);
    for (const m of held) this._emit('message', m);
  }

  _onMessage(f) {
    const r = this._rooms.get(f.room);
    if (!r || !r.pos || !r.joined || !Number.isSafeInteger(f.offset)) return;
    if (f.epoch === r.pos.epoch) {
      if (f.offset <= r.pos.offset) return; // already delivered
    }
    // A new epoch while joined: the room started afresh (it expired), and
    // its offsets start again.
    r.pos = { epoch: f.epoch, offset: f.offset };
    if (r.held) r.held.push(strip(f)); else this._emit('message', strip(f));
  }

  // A pause before repeating a refused frame on this connection.
  _later(fn, code) {
    const base = code === 'rate_limited' ? 1000 : 250;
    return setTimeout(fn, base + Math.random() * base * 3);
  }

  _onError(f, ref, p) {
    const code = String(f.code ?? 'internal');
    const err = new ChatError(code, String(f.message ?? 'error'));
    if (p) {
      // Backend busy or down for a moment: the same client_id goes again
      // shortly. (A later send may be stored before it meanwhile.)
      if (TRANSIENT.has(code) && p.frame.type === 'send') {
        clearTimeout(p.retryTimer);
        p.sentOn = 0;
        p.retryTimer = this._later(() => this._transmit(p), code);
        return;
      }
      this._settle(ref, p, err);
      return;
    }
    const conn = this._conn;
    for (const r of this._rooms.values()) {
      if (ref !== undefined && ref === r.ref) {
        err.room = r.room;
        if (TRANSIENT.has(code)) {
          clearTimeout(r.retry);
          r.retry = this._later(() => { if (conn === this._conn && this._rooms.get(r.room) === r) this._sendJoin(r); }, code);
        } else {
          // Refused for good (forbidden, ...): its sends cannot go either.
          const wasJoined = r.everJoined;
          this._forget(r, err);
          if (wasJoined) this._emit('left', { room: r.room, byServer: true, error: err });
        }
        break;
      }
      if (ref !== undefined && ref === r.readRef) {
        err.room = r.room;
        if (TRANSIENT.has(code)) {
          r.readSent = false;
          clearTimeout(r.retry);
          r.retry = this._later(() => { if (conn === this._conn) this._flushRead(r); }, code);
        }
        break;
      }
    }
    this._emit('error', err);
  }

  async _onExpiring() {
    if (typeof this._opt.token !== 'function') {
      this._emit('error', new ChatError('unauthorized', 'the token is expiring: call refresh(token)'));
      return;
    }
    try {
      await this.refresh(await this._token());
    } catch (e) {
      this._emit('error', e instanceof ChatError ? e : new ChatError('unauthorized', `refresh failed: ${e?.message ?? e}`));
    }
  }
}

function strip(f) {
  const { type, ref, ...rest } = f;
  return rest;
}
