// The JavaScript client of the chat contract v1 (docs/protocol.md), written
// in TypeScript and built with `tsc` into chat.js (one dependency-free ES
// module for browsers and Node >= 20, served by the ingress at /client.js)
// and chat.d.ts. Edit this file, then `npm run build`.
//
// What it does for the application, so a reconnect loses and repeats
// nothing: auth by the first frame; reconnects with exponential backoff and
// jitter across a list of URLs; re-joins every room with `since`; drops any
// frame at or below the last offset it delivered; on `recovered: false`
// reloads the newest page with `history` and says so (`reload` event); on
// `expiring` asks the token function for a new token and sends `refresh`;
// `send()` makes the `client_id` and resends with the same one after a
// reconnect, so a retry is never stored twice. Failures that retrying cannot
// mend (a refused origin, a token function that says no, a token refused
// twice in a row) stop it, reported once.

/** The version of this client; its major is the protocol's (v1). */
export const VERSION = '1.1.0';

const ROOM_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const EPOCH_RE = /^[A-Za-z0-9_-]{1,64}$/;
const TYPING_EVERY_MS = 3000;
// A connection counts as healthy (and resets the backoff) after this long.
const HEALTHY_MS = 5000;
// Refusals worth repeating on the same connection: the backend or the rate
// limit, for a moment.
const TRANSIENT = new Set(['unavailable', 'rate_limited']);
const RELOAD_TRIES = 3;
// Codes a token function may throw (as a ChatError) to say that asking again
// will not help: the user is logged out, or not allowed.
const PERMANENT_TOKEN_CODES = new Set(['unauthorized', 'forbidden', 'bad_request']);

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A stored chat message, as in `message` frames and `history` pages. */
export interface Message {
  room: string;
  /** Gap-free, 1 for a room's first message. */
  offset: number;
  /** Changes when the room's stream starts afresh. */
  epoch: string;
  /** Redis stream entry id (opaque). */
  id: string;
  user: string;
  text: string;
  /** Milliseconds since the Unix epoch. */
  ts: number;
  client_id: string;
  /** Messages are `user`, `system` and `summary`; the other kinds are
   * events acting on the message at `target` (docs/protocol.md,
   * "Conversation events"). */
  kind: MessageKind | EventKind;
  /** A reply: the offset of the message it answers. */
  reply_to?: number;
  /** An event: the offset of the message it acts on. */
  target?: number;
  /** A `reaction`: its emoji. */
  emoji?: string;
  /** A `reaction` taken back. */
  removed?: boolean;
  /** When the text was last edited (ms); `text` is the edited text. */
  edited_at?: number;
  /** Deleted: the text is gone. */
  deleted?: boolean;
  /** Reactions, in the order each emoji was first used. */
  reactions?: Reaction[];
  /** How many replies name this message. */
  reply_count?: number;
  /** A `system` message recording a moderation action or a join. */
  notice?: {
    action: 'mute' | 'unmute' | 'ban' | 'unban' | 'role' | 'join';
    user: string;
    by: string;
    /** When a mute or ban ends (ms). */
    until?: number;
    role?: 'owner' | 'moderator' | 'member';
  };
}

export type MessageKind = 'user' | 'system' | 'summary';
export type EventKind = 'edit' | 'delete' | 'reaction';

export interface Reaction {
  emoji: string;
  count: number;
  /** Whether this client's user reacted with it. */
  me: boolean;
}

/** A message the client holds changed (an edit, a delete, a reaction, a
 * new reply): render `message` in its place. */
export interface UpdateEvent {
  room: string;
  message: Message;
  /** The event that changed it. */
  cause: Message;
}

export interface Ack {
  room: string;
  client_id: string;
  offset: number;
  epoch: string;
  id: string;
  ts: number;
  /** True when this client_id was stored before. */
  duplicate: boolean;
}

export interface Cursor {
  epoch: string;
  before: number;
}

export interface HistoryPage {
  room: string;
  epoch: string;
  /** Oldest first. */
  messages: Message[];
  /** The next older page, or null at the start of the room's history. */
  next: Cursor | null;
}

/** Where a room's delivery stands: pass it back as `since`. */
export interface Position {
  epoch: string;
  offset: number;
}

export interface Joined {
  room: string;
  epoch: string;
  offset: number;
  /** Present when the join named `since`: whether every missed message follows. */
  recovered?: boolean;
  /** Your unread messages in the room (others' messages after your read
   * marker), up to 100 ("100 or more"). */
  unread?: number;
}

export interface UnreadCounts {
  rooms: { room: string; epoch: string; unread: number; read: number; last: number }[];
  /** The sum: the app badge. */
  total: number;
}

/** A member read up to `offset` (rooms with read receipts on). */
export interface ReceiptEvent {
  room: string;
  user: string;
  epoch: string;
  offset: number;
}

export interface Session {
  user: string;
  session: string | null;
  /** Seconds since the Unix epoch. */
  exp: number;
}

export interface StateEvent {
  state: ConnectionState;
  url?: string;
  attempt?: number;
  delay?: number;
  code?: number;
  reason?: string;
  /** Why the client stopped, when it stopped on a failure. */
  error?: ChatError;
}

export interface ReloadEvent {
  room: string;
  epoch: string;
  offset: number;
  /** Replace what you show with these (oldest first). */
  messages: Message[];
  next: Cursor | null;
  /** The page could not be loaded: page back from `next` yourself. */
  failed?: boolean;
}

export interface PresenceEvent {
  room: string;
  user: string;
  state: 'join' | 'leave';
}

export interface TypingEvent {
  room: string;
  user: string;
}

export interface LeftEvent {
  room: string;
  /** Always true: the room was deleted, or a rejoin was refused. */
  byServer: boolean;
  error?: ChatError;
}

export interface RefreshedEvent {
  exp: number;
}

/** The client's events and what each listener receives. */
export interface ClientEvents {
  state: StateEvent;
  ready: Session;
  joined: Joined;
  reload: ReloadEvent;
  message: Message;
  presence: PresenceEvent;
  typing: TypingEvent;
  left: LeftEvent;
  refreshed: RefreshedEvent;
  error: ChatError;
  /** An `edit` event, as delivered. */
  edit: Message;
  /** A `delete` event, as delivered. */
  delete: Message;
  /** A `reaction` event, as delivered. */
  reaction: Message;
  /** A held message, changed by an event. */
  update: UpdateEvent;
  /** Another member's read marker (rooms with read receipts on). */
  receipt: ReceiptEvent;
}

/** A room's events: those of the client that concern that room. */
export type RoomEvents = Pick<ClientEvents, 'joined' | 'reload' | 'message' | 'presence' | 'typing' | 'left' | 'error' | 'edit' | 'delete' | 'reaction' | 'update' | 'receipt'>;

export type Listener<T> = (ev: T) => void;

export interface BackoffOptions {
  /** First reconnect delay ceiling in ms (default 500). */
  initial?: number;
  /** Largest delay ceiling in ms (default 15000). */
  max?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
}

/** What the client needs of a WebSocket: the browser's, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** One WebSocket URL (ws:// or wss://, path /v1/ws). */
  url?: string;
  /** Several; the client moves to the next on each reconnect. */
  urls?: string[];
  /** A JWT, or a function returning one (called on every connect and on
   * `expiring`). A function that throws a ChatError with code
   * `unauthorized`, `forbidden` or `bad_request`, or an error whose
   * `permanent` is true or whose `status` is an HTTP 4xx other than 408 and
   * 429, stops the client: the user has to log in again. Anything else it
   * throws (a network failure) is retried with backoff. */
  token: TokenSource;
  /** Constructor; default globalThis.WebSocket (pass the `ws` package on Node 20). */
  WebSocket?: WebSocketConstructor | (new (url: string) => unknown);
  /** Reconnect delays: each is drawn between half and all of
   * min(max, initial * factor^attempt). */
  backoff?: BackoffOptions;
  /** Ms a send() may take, reconnects included (default 30000). */
  sendTimeout?: number;
  /** Ms from opening a socket to `ready` (default 10000). */
  connectTimeout?: number;
  /** Ms of silence before the client pings (default 20000). */
  pingInterval?: number;
  /** Ms to wait for any frame after that ping (default 10000). */
  pongTimeout?: number;
  /** Largest text in UTF-8 bytes (default 4096, as the server). */
  maxTextBytes?: number;
  /** Messages loaded after `recovered: false` (default 50). */
  reloadLimit?: number;
  /** Messages held per room for `messages()`, newest kept (default 1000). */
  keep?: number;
}

export interface JoinOptions {
  /** A position you saved (e.g. across a page reload) to recover from. */
  since?: Position | null;
}

export interface SendOptions {
  /** The idempotency key; made here unless given. Pass a failed send's
   * `clientId` back to retry it: it is still stored once. */
  clientId?: string;
  /** Send as a reply to the message at this offset. */
  replyTo?: number;
}

export interface ActOptions {
  /** The idempotency key; made here unless given. */
  clientId?: string;
  /** The epoch of the message (default: the room's current one). */
  epoch?: string;
}

export interface HistoryOptions {
  /** Messages with an offset below this one (exclusive). */
  before?: number;
  /** The epoch `before` is in (from a page's `next`). */
  epoch?: string;
  /** 1-100 (default 50). */
  limit?: number;
  /** The replies to the message at this offset instead of the room. */
  thread?: number;
}

/** An error with one of the contract's codes (`bad_request`,
 * `unauthorized`, `forbidden`, `not_joined`, `not_found`, `rate_limited`,
 * `too_large`, `unavailable`, `internal`) or the client's own `timeout` and
 * `closed`. */
export class ChatError extends Error {
  readonly code: string;
  /** The room it concerns, when it concerns one. */
  room?: string;
  /** On a failed send: its client_id, to retry it with. */
  clientId?: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ChatError';
    this.code = code;
  }
}

const bad = (message: string) => new ChatError('bad_request', message);

function checkRoom(room: unknown): asserts room is string {
  if (typeof room !== 'string' || !ROOM_RE.test(room)) {
    throw bad(`room must match ${ROOM_RE}: got ${JSON.stringify(room)}`);
  }
}

function checkPosition(p: unknown, what: string): Position | null {
  if (p === undefined || p === null) return null;
  const q = p as Partial<Position>;
  if (typeof p !== 'object' || typeof q.epoch !== 'string' || !EPOCH_RE.test(q.epoch) ||
      !Number.isSafeInteger(q.offset) || (q.offset as number) < 0) {
    throw bad(`${what} must be {epoch: string, offset: integer >= 0}`);
  }
  return { epoch: q.epoch, offset: q.offset as number };
}

function randomId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return 'c' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const utf8Length = (s: string) => new TextEncoder().encode(s).length;

/** Whether a token function's failure means asking again will not help. */
function permanentTokenFailure(e: unknown): boolean {
  if (e instanceof ChatError) return PERMANENT_TOKEN_CODES.has(e.code);
  const o = e as { permanent?: unknown; status?: unknown } | null;
  if (o && typeof o === 'object') {
    if (o.permanent === true) return true;
    if (typeof o.status === 'number') return o.status >= 400 && o.status < 500 && o.status !== 408 && o.status !== 429;
  }
  return false;
}

/** The HTTP base (`http(s)://host`) of a WebSocket URL. */
function httpBase(wsUrl: string): string {
  const u = new URL(wsUrl);
  return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`;
}

type Waiter = { res: (j: Joined) => void; rej: (e: ChatError) => void };

interface RoomState {
  room: string;
  pos: Position | null;
  joined: Joined | null;
  everJoined: boolean;
  waiters: Waiter[];
  typingAt: number;
  read: number | null;
  readSent: boolean;
  readRef: string | null;
  ref: string | null;
  held: Message[] | null;
  /** The messages held for `messages()`, by offset (current epoch). */
  store: Map<number, Message>;
  needReload: boolean;
  retry: ReturnType<typeof setTimeout> | null;
}

interface Request {
  frame: Record<string, unknown> & { type: string; ref: string; room?: string };
  resolve: (v: any) => void;
  reject: (e: ChatError) => void;
  sentOn: number;
  timer: ReturnType<typeof setTimeout> | null;
  retryTimer: ReturnType<typeof setTimeout> | null;
  clientId?: string;
}

type AnyListener = (ev: any) => void;

/** Listeners by event, with `on`, `off` and `once`. */
class Emitter<E> {
  private readonly listeners = new Map<keyof E, Set<AnyListener>>();
  // once() wrappers, so that off(type, fn) removes a once-listener too.
  private readonly onceWrappers = new Map<AnyListener, AnyListener>();

  /** Subscribes; returns the function that unsubscribes. */
  on<K extends keyof E>(type: K, fn: Listener<E[K]>): () => void {
    if (typeof fn !== 'function') throw bad('listener must be a function');
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** Unsubscribes `fn` (added with `on` or `once`). */
  off<K extends keyof E>(type: K, fn: Listener<E[K]>): void {
    const set = this.listeners.get(type);
    if (!set) return;
    const wrapper = this.onceWrappers.get(fn);
    if (wrapper && set.delete(wrapper)) this.onceWrappers.delete(fn);
    set.delete(fn);
  }

  /** Subscribes for the next event only; returns the function that unsubscribes. */
  once<K extends keyof E>(type: K, fn: Listener<E[K]>): () => void {
    if (typeof fn !== 'function') throw bad('listener must be a function');
    const wrapper: AnyListener = (ev) => {
      this.off(type, fn);
      fn(ev);
    };
    this.onceWrappers.set(fn, wrapper);
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(wrapper);
    return () => this.off(type, fn);
  }

  /** Whether anyone listens to `type`. */
  protected heard(type: keyof E): boolean {
    return (this.listeners.get(type)?.size ?? 0) > 0;
  }

  protected dispatch(type: keyof E, ev: unknown): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      // A throwing listener must not stop the others, nor the client.
      try { fn(ev); } catch (e) { queueMicrotask(() => { throw e; }); }
    }
  }
}

/** One room, as `chat.room(name)` returns it: its own events, and the
 * client's calls for it. */
export class Room extends Emitter<RoomEvents> {
  readonly name: string;
  private readonly client: ChatClient;

  /** @internal use `chat.room(name)` */
  constructor(client: ChatClient, name: string) {
    super();
    this.client = client;
    this.name = name;
  }

  /** Joins (or returns the join already made): see `ChatClient.join`. */
  join(opts: JoinOptions = {}): Promise<Joined> {
    return this.client.join(this.name, opts);
  }

  send(text: string, opts: SendOptions = {}): Promise<Ack> {
    return this.client.send(this.name, text, opts);
  }

  history(opts: HistoryOptions = {}): Promise<HistoryPage> {
    return this.client.history(this.name, opts);
  }

  reply(offset: number, text: string, opts: SendOptions = {}): Promise<Ack> {
    return this.client.reply(this.name, offset, text, opts);
  }

  edit(offset: number, text: string, opts: ActOptions = {}): Promise<Ack> {
    return this.client.edit(this.name, offset, text, opts);
  }

  delete(offset: number, opts: ActOptions = {}): Promise<Ack> {
    return this.client.delete(this.name, offset, opts);
  }

  react(offset: number, emoji: string, opts: ActOptions = {}): Promise<Ack> {
    return this.client.react(this.name, offset, emoji, opts);
  }

  unreact(offset: number, emoji: string, opts: ActOptions = {}): Promise<Ack> {
    return this.client.unreact(this.name, offset, emoji, opts);
  }

  moderate(user: string, action: 'mute' | 'unmute' | 'ban' | 'unban', durationSecs?: number): Promise<Ack> {
    return this.client.moderate(this.name, user, action, durationSecs);
  }

  /** The messages held for the room, as they are now, oldest first. */
  messages(): Message[] {
    return this.client.messages(this.name);
  }

  /** The users connected to the room now, on any node. */
  presence(): Promise<string[]> {
    return this.client.presence(this.name);
  }

  typing(): void {
    this.client.typing(this.name);
  }

  read(offset: number): void {
    this.client.read(this.name, offset);
  }

  position(): Position | null {
    return this.client.position(this.name);
  }

  /** Leaves the room; its listeners stay, for a later `join`. */
  leave(): void {
    this.client.leave(this.name);
  }

  /** @internal */
  _dispatch(type: keyof RoomEvents, ev: unknown): void {
    this.dispatch(type, ev);
  }

  /** @internal */
  _heard(type: keyof RoomEvents): boolean {
    return this.heard(type);
  }
}

const ROOM_EVENTS = new Set<string>(['joined', 'reload', 'message', 'presence', 'typing', 'left', 'error', 'edit', 'delete', 'reaction', 'update', 'receipt']);
const MESSAGE_KINDS = new Set<string>(['user', 'system', 'summary']);

interface Opts {
  urls: string[];
  token: TokenSource;
  WebSocket: WebSocketConstructor;
  initial: number;
  max: number;
  factor: number;
  sendTimeout: number;
  connectTimeout: number;
  pingInterval: number;
  pongTimeout: number;
  maxTextBytes: number;
  reloadLimit: number;
  keep: number;
}

export class ChatClient extends Emitter<ClientEvents> {
  /** The connection's state; `state` events say when it changes. */
  state: ConnectionState = 'idle';
  /** The `ready` frame of the current connection. */
  session: Session | null = null;
  private readonly opt: Opts;
  private ws: WebSocketLike | null = null;
  private ready = false;
  private conn = 0; // bumps per socket, so a late event of an old one is ignored
  private urlIndex = 0;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pinger: ReturnType<typeof setInterval> | null = null;
  private lastFrame = 0;
  private pinged = false;
  private refs = 0;
  private readonly pending = new Map<string, Request>();
  private readonly rooms = new Map<string, RoomState>();
  private readonly roomObjects = new Map<string, Room>();
  private stopped = false;
  private deadline: ReturnType<typeof setTimeout> | null = null;
  private readyAt = 0;
  private lastToken: string | null = null;
  // Auth refusals (4001) in a row, each before `ready`.
  private refusals = 0;
  // The server's `error` frame that preceded a 4001, for its reason.
  private authError: string | null = null;

  constructor(options: ClientOptions) {
    super();
    if (!options || typeof options !== 'object') throw bad('options are required');
    const urls = options.urls ?? (options.url ? [options.url] : []);
    if (!Array.isArray(urls) || urls.length === 0 ||
        !urls.every((u) => typeof u === 'string' && /^wss?:\/\/[^\s]+$/.test(u))) {
      throw bad('url or urls must give ws:// or wss:// URLs');
    }
    if (typeof options.token !== 'string' && typeof options.token !== 'function') {
      throw bad('token must be a JWT string or a function returning one');
    }
    const WS = (options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket) as WebSocketConstructor | undefined;
    if (typeof WS !== 'function') {
      throw bad('no WebSocket here: pass options.WebSocket (e.g. the ws package on Node 20)');
    }
    const num = (v: unknown, d: number, min: number): number => {
      if (v === undefined) return d;
      if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw bad(`bad number option: ${v}`);
      return v;
    };
    const b = options.backoff ?? {};
    this.opt = {
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
      keep: num(options.keep, 1000, 1),
    };
  }

  /** The room `name`, with its own events (`on`, `off`, `once`) and calls.
   * The same object each time for the same name; it does not join. */
  room(name: string): Room {
    checkRoom(name);
    let r = this.roomObjects.get(name);
    if (!r) this.roomObjects.set(name, (r = new Room(this, name)));
    return r;
  }

  private emit<K extends keyof ClientEvents>(type: K, ev: ClientEvents[K]): void {
    this.dispatch(type, ev);
    const room = (ev as { room?: unknown } | null)?.room;
    if (typeof room === 'string' && ROOM_EVENTS.has(type)) {
      this.roomObjects.get(room)?._dispatch(type as keyof RoomEvents, ev);
    }
  }

  private setState(state: ConnectionState, extra: Omit<StateEvent, 'state'> = {}): void {
    this.state = state;
    this.emit('state', { state, ...extra });
  }

  /** Open the connection (and keep it open until close()). */
  connect(): void {
    if (this.stopped) throw new ChatError('closed', 'this client was closed');
    if (this.ws || this.timer) return;
    void this.open();
  }

  /** Close for good: pending requests reject with `closed`. */
  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.detach();
    if (ws) { try { ws.close(1000, 'bye'); } catch { /* already closed */ } }
    for (const [ref, p] of this.pending) this.settle(ref, p, new ChatError('closed', 'client closed'));
    for (const r of this.rooms.values()) this.rejectJoin(r, new ChatError('closed', 'client closed'));
    this.rooms.clear();
    this.setState('closed');
  }

  /** Join a room (or return the join already made). Resolves with the
   * `joined` fields; a refusal rejects it (and is not also an `error`
   * event). Pass `since` (a position you saved, e.g. across a page reload)
   * to recover from there. */
  join(room: string, opts: JoinOptions = {}): Promise<Joined> {
    if (this.stopped) return Promise.reject(new ChatError('closed', 'this client was closed'));
    // Bad arguments throw at once (a bug in the caller, not a refusal).
    checkRoom(room);
    const since = checkPosition(opts.since, 'since');
    const known = this.rooms.get(room);
    if (known) {
      return known.joined ? Promise.resolve(known.joined) : new Promise((res, rej) => known.waiters.push({ res, rej }));
    }
    const r: RoomState = {
      room, pos: since, joined: null, everJoined: false, waiters: [], typingAt: 0, read: null,
      readSent: true, readRef: null, ref: null, held: null, store: new Map(), needReload: false, retry: null,
    };
    this.rooms.set(room, r);
    const p = new Promise<Joined>((res, rej) => r.waiters.push({ res, rej }));
    if (this.ready) this.sendJoin(r);
    return p;
  }

  /** Leave a room. Messages to it not yet sent reject with `not_joined`
   * (with their `clientId`); those already sent settle on their ack. */
  leave(room: string): void {
    checkRoom(room);
    const r = this.rooms.get(room);
    if (!r) return;
    this.forget(r, new ChatError('not_joined', `left ${room}`), (p) => p.sentOn === 0);
    // The ref marks the answering `left` as ours, not a deletion.
    if (this.ready) this.raw({ type: 'leave', room, ref: 'l' + (++this.refs) });
  }

  // Drops a room: its join waiters and the sends `which` picks reject.
  private forget(r: RoomState, err: ChatError, which: (p: Request) => boolean = () => true): void {
    if (this.rooms.get(r.room) !== r) return;
    this.rooms.delete(r.room);
    if (r.retry) clearTimeout(r.retry);
    this.rejectJoin(r, err);
    for (const [ref, p] of this.pending) {
      if (p.frame.type === 'send' && p.frame.room === r.room && which(p)) this.settle(ref, p, err);
    }
  }

  /** The last position delivered in a room, to save and pass as `since`
   * later; null before the room is joined. */
  position(room: string): Position | null {
    const r = this.rooms.get(room);
    return r?.pos ? { ...r.pos } : null;
  }

  /** Send a message; resolves with the ack. Made idempotent by `client_id`
   * (made here unless given): resent after a reconnect, stored once. */
  send(room: string, text: string, opts: SendOptions = {}): Promise<Ack> {
    try {
      checkRoom(room);
      if (!this.rooms.has(room)) throw new ChatError('not_joined', `join ${room} before sending to it`);
      if (typeof text !== 'string' || text.length === 0) throw bad('text must be a non-empty string');
      if (utf8Length(text) > this.opt.maxTextBytes) {
        throw new ChatError('too_large', `text is over ${this.opt.maxTextBytes} bytes`);
      }
      const clientId = opts.clientId ?? randomId();
      if (typeof clientId !== 'string' || clientId.length < 1 || clientId.length > 64) {
        throw bad('clientId must be 1-64 characters');
      }
      const frame: Record<string, unknown> & { type: string } = { type: 'send', room, text, client_id: clientId };
      if (opts.replyTo !== undefined) frame.reply_to = offsetOf(opts.replyTo, 'replyTo');
      return this.request<Ack>(frame, this.opt.sendTimeout);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Reply to the message at `offset`: a message naming its parent. */
  reply(room: string, offset: number, text: string, opts: SendOptions = {}): Promise<Ack> {
    return this.send(room, text, { ...opts, replyTo: offset });
  }

  /** Edit your own message at `offset`; every member gets an `edit` event. */
  edit(room: string, offset: number, text: string, opts: ActOptions = {}): Promise<Ack> {
    try {
      if (typeof text !== 'string' || text.length === 0) throw bad('text must be a non-empty string');
      if (utf8Length(text) > this.opt.maxTextBytes) {
        throw new ChatError('too_large', `text is over ${this.opt.maxTextBytes} bytes`);
      }
      return this.act('edit', room, offset, { text }, opts);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Delete your own message at `offset`: its text is removed everywhere. */
  delete(room: string, offset: number, opts: ActOptions = {}): Promise<Ack> {
    return this.act('delete', room, offset, {}, opts);
  }

  /** React to the message at `offset` (once per emoji; repeats change
   * nothing and resolve with offset 0). */
  react(room: string, offset: number, emoji: string, opts: ActOptions = {}): Promise<Ack> {
    return this.act('react', room, offset, { emoji }, opts);
  }

  /** Take a reaction back. */
  unreact(room: string, offset: number, emoji: string, opts: ActOptions = {}): Promise<Ack> {
    return this.act('react', room, offset, { emoji, remove: true }, opts);
  }

  /** As a room's owner or moderator: mute, ban, or lift either, for
   * `durationSecs` or until lifted. Resolves with the ack of the `system`
   * message recording it. */
  moderate(room: string, user: string, action: 'mute' | 'unmute' | 'ban' | 'unban', durationSecs?: number): Promise<Ack> {
    try {
      checkRoom(room);
      if (!this.rooms.has(room)) throw new ChatError('not_joined', `join ${room} first`);
      if (typeof user !== 'string' || user.length === 0) throw bad('user must be a user id');
      if (!['mute', 'unmute', 'ban', 'unban'].includes(action)) throw bad('action must be mute, unmute, ban or unban');
      const frame: Record<string, unknown> & { type: string } = { type: 'moderate', room, user, action };
      if (durationSecs !== undefined) frame.duration_secs = offsetOf(durationSecs, 'durationSecs');
      return this.request<Ack>(frame, this.opt.sendTimeout);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The messages held for the room, as they are now (edits, deletes,
   * reactions and reply counts folded in), oldest first: what was
   * delivered live and what history pages loaded, the newest `keep`. */
  messages(room: string): Message[] {
    const r = this.rooms.get(room);
    if (!r) return [];
    return [...r.store.values()]
      .sort((a, b) => a.offset - b.offset)
      .map((m) => ({ ...m, reactions: m.reactions?.map((x) => ({ ...x })) }));
  }

  private act(type: string, room: string, offset: number, extra: Record<string, unknown>, opts: ActOptions): Promise<Ack> {
    try {
      checkRoom(room);
      if (!this.rooms.has(room)) throw new ChatError('not_joined', `join ${room} first`);
      const clientId = opts.clientId ?? randomId();
      if (typeof clientId !== 'string' || clientId.length < 1 || clientId.length > 64) {
        throw bad('clientId must be 1-64 characters');
      }
      const frame: Record<string, unknown> & { type: string } = { type, room, offset: offsetOf(offset, 'offset'), client_id: clientId, ...extra };
      if (opts.epoch !== undefined) {
        if (typeof opts.epoch !== 'string' || !EPOCH_RE.test(opts.epoch)) throw bad('epoch is not an epoch');
        frame.epoch = opts.epoch;
      }
      return this.request<Ack>(frame, this.opt.sendTimeout);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A page of history, oldest first, with `next` for the page before it. */
  history(room: string, opts: HistoryOptions = {}): Promise<HistoryPage> {
    try {
      checkRoom(room);
      const frame: Record<string, unknown> & { type: string } = { type: 'history', room };
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
      if (opts.thread !== undefined) frame.thread = offsetOf(opts.thread, 'thread');
      const page = this.request<HistoryPage>(frame, this.opt.sendTimeout);
      if (opts.thread !== undefined) return page;
      return page.then((p) => {
        const r = this.rooms.get(room);
        if (r) this.remember(r, p.messages);
        return p;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The users connected to `room` now, on any node: `GET
   * /v1/rooms/{room}/presence` on the current node, with the current token
   * (the user must be a member). */
  async presence(room: string): Promise<string[]> {
    checkRoom(room);
    const body = await this.getJson(`/v1/rooms/${encodeURIComponent(room)}/presence`, 'presence');
    if (!Array.isArray(body?.users)) throw new ChatError('internal', 'presence: no users in the answer');
    return body.users.map(String);
  }

  /** The user's unread counts in all their rooms (the rooms they joined or
   * were made a member of): `GET /v1/unread` with the current token. Each
   * count stops at 100 ("100 or more"); `total` is the app badge. */
  async unread(): Promise<UnreadCounts> {
    const body = await this.getJson('/v1/unread', 'unread');
    if (!Array.isArray(body?.rooms)) throw new ChatError('internal', 'unread: no rooms in the answer');
    return body as UnreadCounts;
  }

  // GET `path` on the current node with the user's token; the JSON body.
  private async getJson(path: string, what: string): Promise<any> {
    const token = this.lastToken ?? (await this.token());
    let res: Response;
    try {
      res = await fetch(`${httpBase(this.currentUrl())}${path}`, { headers: { authorization: `Bearer ${token}` } });
    } catch (e) {
      throw new ChatError('unavailable', `${what}: ${(e as Error)?.message ?? e}`);
    }
    const body = (await res.json().catch(() => null)) as any;
    if (!res.ok) {
      const err = body?.error ?? body;
      throw new ChatError(String(err?.code ?? 'internal'), String(err?.message ?? `${what}: HTTP ${res.status}`));
    }
    return body;
  }

  /** Tell the room you are typing; sent at most every 3 s per room, and
   * only while connected (it is not worth queueing). */
  typing(room: string): void {
    checkRoom(room);
    const r = this.rooms.get(room);
    if (!r) throw new ChatError('not_joined', `join ${room} first`);
    const now = Date.now();
    if (!this.ready || !r.joined || now - r.typingAt < TYPING_EVERY_MS) return;
    r.typingAt = now;
    this.raw({ type: 'typing', room });
  }

  /** Store your read marker; the newest one is sent (again) once connected. */
  read(room: string, offset: number): void {
    checkRoom(room);
    if (!Number.isSafeInteger(offset) || offset < 0) throw bad('offset must be an integer >= 0');
    const r = this.rooms.get(room);
    if (!r) throw new ChatError('not_joined', `join ${room} first`);
    r.read = offset;
    r.readSent = false;
    this.flushRead(r);
  }

  /** Send a new token now (the `expiring` event does this by itself when
   * `token` is a function). */
  refresh(token: string): Promise<RefreshedEvent> {
    if (typeof token !== 'string' || token.length === 0) return Promise.reject(bad('token must be a JWT'));
    return this.request<RefreshedEvent>({ type: 'refresh', token }, this.opt.sendTimeout).then((r) => {
      // A fixed token: the refreshed one is what the next connection uses.
      if (typeof this.opt.token === 'string') this.opt.token = token;
      this.lastToken = token;
      return r;
    });
  }

  // ---- connection ----

  private currentUrl(): string {
    return this.opt.urls[this.urlIndex % this.opt.urls.length];
  }

  private async open(): Promise<void> {
    const conn = ++this.conn;
    const url = this.currentUrl();
    // A retry already said `reconnecting` (with its delay).
    if (this.state === 'idle') this.setState('connecting', { url, attempt: 0 });
    let token: string;
    try {
      token = await this.token();
    } catch (e) {
      if (conn !== this.conn || this.stopped) return;
      const err = e instanceof ChatError && PERMANENT_TOKEN_CODES.has(e.code)
        ? e
        : new ChatError('unauthorized', `token function failed: ${(e as Error)?.message ?? e}`);
      if (permanentTokenFailure(e)) return this.fail(err);
      this.emit('error', err);
      this.retry();
      return;
    }
    if (conn !== this.conn || this.stopped) return;
    let ws: WebSocketLike;
    try {
      ws = new this.opt.WebSocket(url);
    } catch (e) {
      return this.fail(bad(`cannot open ${url}: ${(e as Error)?.message ?? e}`));
    }
    this.ws = ws;
    this.ready = false;
    this.lastFrame = Date.now();
    this.pinged = false;
    let opened = false;
    // The `ws` package says why a handshake failed (a browser does not).
    let status = 0;
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      if (conn === this.conn && !this.ready) this.drop(conn, 4000, 'connect timeout');
    }, this.opt.connectTimeout);
    ws.onopen = () => {
      opened = true;
      if (conn === this.conn) this.raw({ type: 'auth', token });
    };
    ws.onmessage = (ev) => { if (conn === this.conn) this.frame(ev.data); };
    ws.onerror = (ev) => {
      const m = /Unexpected server response: (\d+)/.exec(String(ev?.message ?? ''));
      if (m) status = Number(m[1]);
    };
    ws.onclose = (ev) => {
      if (conn !== this.conn) return;
      if (opened) return this.drop(conn, ev.code, ev.reason);
      void this.refusedHandshake(url, status).then((err) => {
        if (conn !== this.conn) return;
        if (err) this.fail(err);
        else this.drop(conn, ev.code, ev.reason);
      });
    };
  }

  // A handshake that failed: an origin the server refuses (403) will be
  // refused again. A browser hides the status, so it is asked for over HTTP
  // (the server lets any origin read that refusal).
  private async refusedHandshake(url: string, status: number): Promise<ChatError | null> {
    if (status === 0 && typeof fetch === 'function' && typeof document !== 'undefined') {
      try {
        const res = await fetch(httpBase(url) + new URL(url).pathname, { cache: 'no-store' });
        status = res.status;
      } catch { /* unreachable: a transient failure */ }
    }
    if (status === 403) {
      return new ChatError('forbidden', `the server refused this page's origin (${url}): add it to CHAT_ALLOWED_ORIGINS`);
    }
    return null;
  }

  private async token(): Promise<string> {
    const src = this.opt.token;
    const t = typeof src === 'function' ? await src() : src;
    if (typeof t !== 'string' || t.length === 0) throw new Error('the token function returned no token');
    this.lastToken = t;
    return t;
  }

  private detach(): WebSocketLike | null {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.conn++;
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = null;
    if (this.deadline) clearTimeout(this.deadline);
    for (const r of this.rooms.values()) {
      if (r.retry) clearTimeout(r.retry);
      r.retry = null;
    }
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Not null: the ws package throws an `error` nobody listens to (closing
      // a socket that is still connecting raises one).
      ws.onerror = () => {};
    }
    return ws;
  }

  // Stops for good on a failure retrying cannot mend, reported once: one
  // `error` event, and `closed` with it; what is pending rejects with it.
  private fail(err: ChatError, extra: Omit<StateEvent, 'state' | 'error'> = {}): void {
    if (this.stopped) return;
    this.stopped = true;
    const ws = this.detach();
    if (ws) { try { ws.close(1000, 'failed'); } catch { /* already closed */ } }
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.emit('error', err);
    for (const [ref, p] of this.pending) this.settle(ref, p, err);
    for (const r of this.rooms.values()) this.rejectJoin(r, err);
    this.setState('closed', { ...extra, error: err });
  }

  // The socket is gone (closed, timed out): reconnect unless told to stop.
  private drop(conn: number, code: number, reason: string): void {
    if (conn !== this.conn) return;
    const wasReady = this.ready;
    const healthy = this.ready && Date.now() - this.readyAt >= HEALTHY_MS;
    const ws = this.detach();
    if (ws) { try { ws.close(4000, 'dropped'); } catch { /* already closing */ } }
    for (const r of this.rooms.values()) r.joined = null;
    if (this.stopped) return;
    if (code === 4001 || code === 4003) {
      // An expired, refused or revoked fixed token will not get better by
      // retrying; a token function may get a new one, but one that is
      // refused again at once will not.
      this.refusals = wasReady ? 1 : this.refusals + 1;
      if (typeof this.opt.token === 'string' || this.refusals >= 2) {
        const why = this.authError ?? reason ?? '';
        const whose = typeof this.opt.token === 'string' ? 'the token' : 'the token function\'s tokens, twice in a row,';
        const err = new ChatError('unauthorized', `the server refused ${whose} (close ${code}${why ? `: ${why}` : ''})`);
        this.fail(err, { code, reason });
        return;
      }
    } else {
      this.refusals = 0;
    }
    // A server that accepts and drops at once keeps backing off.
    if (healthy) this.attempt = 0;
    this.retry({ code, reason });
  }

  private retry(extra: Omit<StateEvent, 'state'> = {}): void {
    if (this.stopped) return;
    const o = this.opt;
    const ceiling = Math.min(o.max, o.initial * Math.pow(o.factor, this.attempt));
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    this.attempt++;
    // Each reconnect tries the next URL: a node that went away is skipped
    // on the first retry.
    this.urlIndex = (this.urlIndex + 1) % o.urls.length;
    this.setState('reconnecting', { attempt: this.attempt, delay, ...extra });
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.timer = null; void this.open(); }, delay);
  }

  private raw(frame: Record<string, unknown>): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(frame)); return true; } catch { return false; }
  }

  private heartbeat(): void {
    if (this.pinger) clearInterval(this.pinger);
    const conn = this.conn;
    const tick = Math.max(50, Math.min(this.opt.pingInterval, this.opt.pongTimeout) / 2);
    this.pinger = setInterval(() => {
      const idle = Date.now() - this.lastFrame;
      if (this.pinged && idle > this.opt.pingInterval + this.opt.pongTimeout) {
        this.drop(conn, 4000, 'no answer to ping');
      } else if (!this.pinged && idle > this.opt.pingInterval) {
        this.pinged = true;
        this.raw({ type: 'ping' });
      }
    }, tick);
  }

  // ---- requests ----

  private request<T>(frame: Record<string, unknown> & { type: string }, timeout: number): Promise<T> {
    if (this.stopped) return Promise.reject(new ChatError('closed', 'this client was closed'));
    return new Promise<T>((resolve, reject) => {
      const ref = 'r' + (++this.refs);
      const p: Request = { frame: { ...frame, ref }, resolve, reject, sentOn: 0, timer: null, retryTimer: null };
      p.timer = setTimeout(() => this.settle(ref, p, new ChatError('timeout', `${frame.type} not answered in ${timeout} ms`)), timeout);
      // An app that retries a failed send passes this back as `clientId`.
      if (frame.type === 'send') p.clientId = frame.client_id as string;
      this.pending.set(ref, p);
      this.transmit(p);
    });
  }

  // Sends a request if this connection can carry it: a send waits for its
  // room's `joined`, so the server never answers `not_joined` to a retry.
  private transmit(p: Request): void {
    if (!this.ready || p.sentOn === this.conn) return;
    if (p.frame.type === 'send' && !this.rooms.get(p.frame.room as string)?.joined) return;
    if (this.raw(p.frame)) p.sentOn = this.conn;
  }

  private settle(ref: string, p: Request, err: ChatError | null, value?: unknown): void {
    if (this.pending.get(ref) !== p) return;
    this.pending.delete(ref);
    if (p.timer) clearTimeout(p.timer);
    if (p.retryTimer) clearTimeout(p.retryTimer);
    if (err && p.clientId) err.clientId = p.clientId;
    if (err) p.reject(err); else p.resolve(value);
  }

  private sendJoin(r: RoomState): void {
    // The ref ties a refusal (an `error` has no room) to this room.
    r.ref = 'j' + (++this.refs);
    const frame: Record<string, unknown> = { type: 'join', room: r.room, ref: r.ref };
    if (r.pos) frame.since = { epoch: r.pos.epoch, offset: r.pos.offset };
    this.raw(frame);
  }

  private rejectJoin(r: RoomState, err: ChatError): void {
    const waiters = r.waiters;
    r.waiters = [];
    for (const w of waiters) w.rej(err);
  }

  private flushRead(r: RoomState): void {
    if (r.readSent || !this.ready || !r.joined) return;
    r.readRef = 'd' + (++this.refs);
    if (this.raw({ type: 'read', room: r.room, offset: r.read, ref: r.readRef })) r.readSent = true;
  }

  // ---- frames ----

  private frame(data: unknown): void {
    this.lastFrame = Date.now();
    this.pinged = false;
    let f: any;
    try {
      f = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      this.emit('error', bad('the server sent a frame that is not JSON'));
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') return;
    const ref = f.ref === undefined || f.ref === null ? undefined : String(f.ref);
    const p = ref !== undefined ? this.pending.get(ref) : undefined;
    switch (f.type) {
      case 'ready': return this.onReady(f);
      case 'joined': return void this.onJoined(f, ref);
      case 'message': return this.onMessage(f);
      case 'ack':
      case 'history':
      case 'refreshed':
        if (p && ref !== undefined) this.settle(ref, p, null, strip(f));
        if (f.type === 'refreshed') {
          if (this.session) this.session.exp = f.exp;
          this.emit('refreshed', { exp: f.exp });
        }
        return;
      case 'error': return this.onError(f, ref, p);
      case 'left': {
        // With a ref it answers our own `leave`; without, the room was deleted.
        const r = this.rooms.get(f.room);
        if (ref === undefined && r && r.joined) {
          this.forget(r, new ChatError('not_joined', `${f.room} was deleted`));
          this.emit('left', { room: f.room, byServer: true });
        }
        return;
      }
      case 'presence':
      case 'typing':
      case 'receipt':
        if (this.rooms.has(f.room)) this.emit(f.type as 'presence' | 'typing' | 'receipt', strip(f));
        return;
      case 'expiring': return void this.onExpiring();
      default: return; // pong, and frames a newer server may add
    }
  }

  private onReady(f: any): void {
    this.ready = true;
    this.readyAt = Date.now();
    this.refusals = 0;
    this.authError = null;
    if (this.deadline) clearTimeout(this.deadline);
    this.session = { user: f.user, session: f.session ?? null, exp: f.exp };
    this.heartbeat();
    this.setState('connected', { url: this.currentUrl() });
    this.emit('ready', { ...this.session });
    // Sends still in flight to a room left while disconnected cannot be
    // answered any more.
    for (const [ref, p] of this.pending) {
      if (p.frame.type === 'send' && !this.rooms.has(p.frame.room as string)) {
        this.settle(ref, p, new ChatError('not_joined', `left ${p.frame.room}`));
      }
    }
    for (const r of this.rooms.values()) this.sendJoin(r);
    // Reads (history, refresh) go now; sends follow their room's `joined`.
    for (const p of this.pending.values()) this.transmit(p);
  }

  private async onJoined(f: any, ref: string | undefined): Promise<void> {
    const r = this.rooms.get(f.room);
    // Only the answer to this room's latest join counts: an earlier one
    // (before a leave and a new join) says nothing about it.
    if (!r || ref !== r.ref) return;
    const info: Joined = { room: f.room, epoch: f.epoch, offset: f.offset };
    if (f.recovered !== undefined) info.recovered = f.recovered;
    if (typeof f.unread === 'number') info.unread = f.unread;
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
    this.emit('joined', info);
    this.flushRead(r);
    for (const p of this.pending.values()) if (p.frame.room === f.room) this.transmit(p);
    if (!reload) return;
    // Live messages wait until the app has the reloaded page, so it can
    // replace its list without losing them.
    const held: Message[] = [];
    r.held = held;
    r.needReload = true;
    // Exactly what precedes the live messages: at or below joined.offset
    // (`next` leads on into older epochs and the archive).
    const want = { before: f.offset + 1, epoch: f.epoch, limit: this.opt.reloadLimit };
    let page: HistoryPage | null = null;
    for (let i = 0; i < RELOAD_TRIES && !page; i++) {
      try {
        page = await this.history(f.room, want);
      } catch (e) {
        const err = e as ChatError;
        if (err.code === 'closed') return;
        if (i === RELOAD_TRIES - 1) {
          err.room = f.room;
          this.emit('error', err);
        } else {
          await new Promise((res) => setTimeout(res, 500 * (i + 1)));
        }
      }
      // A later join (another reconnect) supersedes this reload.
      if (this.rooms.get(f.room) !== r || r.held !== held) return;
    }
    r.held = null;
    r.needReload = false;
    // Failed: nothing to show yet, but `next` lets the app page back itself.
    const ev: ReloadEvent = page
      ? { room: f.room, epoch: f.epoch, offset: f.offset, messages: page.messages, next: page.next }
      : { room: f.room, epoch: f.epoch, offset: f.offset, messages: [], next: { epoch: f.epoch, before: f.offset + 1 }, failed: true };
    r.store.clear();
    this.remember(r, ev.messages);
    this.emit('reload', ev);
    for (const m of held) this.deliver(r, m);
  }

  private onMessage(f: any): void {
    const r = this.rooms.get(f.room);
    if (!r || !r.pos || !r.joined || !Number.isSafeInteger(f.offset)) return;
    if (f.epoch === r.pos.epoch) {
      if (f.offset <= r.pos.offset) return; // already delivered
    }
    // A new epoch while joined: the room started afresh (it expired), and
    // its offsets start again.
    if (f.epoch !== r.pos.epoch) r.store.clear();
    r.pos = { epoch: f.epoch, offset: f.offset };
    const m = strip(f) as Message;
    if (r.held) r.held.push(m); else this.deliver(r, m);
  }

  // A message is held and emitted; an event is emitted and folded into the
  // message it acts on, if held (`update`).
  private deliver(r: RoomState, m: Message): void {
    if (MESSAGE_KINDS.has(m.kind)) {
      this.remember(r, [m]);
      this.emit('message', m);
      const parent = m.reply_to !== undefined ? r.store.get(m.reply_to) : undefined;
      if (parent && !m.deleted) {
        parent.reply_count = (parent.reply_count ?? 0) + 1;
        this.emit('update', { room: r.room, message: { ...parent }, cause: m });
      }
      return;
    }
    this.emit(m.kind as EventKind, m);
    const t = m.target !== undefined ? r.store.get(m.target) : undefined;
    if (!t || !this.fold(t, m)) return;
    this.emit('update', { room: r.room, message: { ...t }, cause: m });
  }

  // Applies event `e` to message `m`; whether it changed.
  private fold(m: Message, e: Message): boolean {
    if (e.deleted) return false;
    switch (e.kind) {
      case 'edit':
        if (m.deleted) return false;
        m.text = e.text;
        m.edited_at = e.ts;
        return true;
      case 'delete':
        m.deleted = true;
        m.text = '';
        delete m.edited_at;
        delete m.reactions;
        return true;
      case 'reaction': {
        if (typeof e.emoji !== 'string') return false;
        const list = m.reactions ?? [];
        const me = e.user === this.session?.user;
        const at = list.findIndex((x) => x.emoji === e.emoji);
        if (e.removed) {
          if (at < 0) return false;
          const x = list[at];
          x.count -= 1;
          if (me) x.me = false;
          if (x.count <= 0) list.splice(at, 1);
        } else if (at < 0) {
          list.push({ emoji: e.emoji, count: 1, me });
        } else {
          list[at].count += 1;
          if (me) list[at].me = true;
        }
        m.reactions = list;
        return true;
      }
      default:
        return false;
    }
  }

  // Holds `ms` (as they are now) for `messages()`, the newest `keep`.
  private remember(r: RoomState, ms: Message[]): void {
    for (const m of ms) {
      if (!MESSAGE_KINDS.has(m.kind) || m.epoch !== r.pos?.epoch) continue;
      r.store.set(m.offset, { ...m, reactions: m.reactions?.map((x) => ({ ...x })) });
    }
    if (r.store.size > this.opt.keep) {
      const offsets = [...r.store.keys()].sort((a, b) => a - b);
      for (const o of offsets.slice(0, offsets.length - this.opt.keep)) r.store.delete(o);
    }
  }

  // A pause before repeating a refused frame on this connection.
  private later(fn: () => void, code: string): ReturnType<typeof setTimeout> {
    const base = code === 'rate_limited' ? 1000 : 250;
    return setTimeout(fn, base + Math.random() * base * 3);
  }

  private onError(f: any, ref: string | undefined, p: Request | undefined): void {
    const code = String(f.code ?? 'internal');
    const err = new ChatError(code, String(f.message ?? 'error'));
    if (p && ref !== undefined) {
      // Backend busy or down for a moment: the same client_id goes again
      // shortly. (A later send may be stored before it meanwhile.)
      if (TRANSIENT.has(code) && p.frame.type === 'send') {
        if (p.retryTimer) clearTimeout(p.retryTimer);
        p.sentOn = 0;
        p.retryTimer = this.later(() => this.transmit(p), code);
        return;
      }
      // The rejected promise is the report.
      this.settle(ref, p, err);
      return;
    }
    if (!this.ready && code === 'unauthorized') {
      // The auth refusal before the close 4001: reported (once) by the close.
      this.authError = err.message;
      return;
    }
    const conn = this.conn;
    for (const r of this.rooms.values()) {
      if (ref !== undefined && ref === r.ref) {
        err.room = r.room;
        if (TRANSIENT.has(code)) {
          if (r.retry) clearTimeout(r.retry);
          r.retry = this.later(() => { if (conn === this.conn && this.rooms.get(r.room) === r) this.sendJoin(r); }, code);
          return;
        }
        // Refused for good (forbidden, ...): its sends cannot go either.
        // Reported once: by the join's rejected promise, or, for a rejoin
        // nobody awaits, by `left`.
        const awaited = r.waiters.length > 0;
        const wasJoined = r.everJoined;
        this.forget(r, err);
        if (wasJoined) this.emit('left', { room: r.room, byServer: true, error: err });
        else if (!awaited) this.emit('error', err);
        return;
      }
      if (ref !== undefined && ref === r.readRef) {
        err.room = r.room;
        if (TRANSIENT.has(code)) {
          r.readSent = false;
          if (r.retry) clearTimeout(r.retry);
          r.retry = this.later(() => { if (conn === this.conn) this.flushRead(r); }, code);
          return;
        }
        break;
      }
    }
    this.emit('error', err);
  }

  private async onExpiring(): Promise<void> {
    if (typeof this.opt.token !== 'function') {
      this.emit('error', new ChatError('unauthorized', 'the token is expiring: call refresh(token)'));
      return;
    }
    try {
      await this.refresh(await this.token());
    } catch (e) {
      this.emit('error', e instanceof ChatError ? e : new ChatError('unauthorized', `refresh failed: ${(e as Error)?.message ?? e}`));
    }
  }
}

function offsetOf(n: unknown, what: string): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw bad(`${what} must be an offset (an integer >= 1)`);
  return n;
}

function strip(f: Record<string, unknown>): any {
  const { type: _type, ref: _ref, ...rest } = f;
  return rest;
}
