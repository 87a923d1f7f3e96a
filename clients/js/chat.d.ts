/** The version of this client; its major is the protocol's (v1). */
export declare const VERSION = "1.1.0";
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
    rooms: {
        room: string;
        epoch: string;
        unread: number;
        read: number;
        last: number;
    }[];
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
    onmessage: ((ev: {
        data: any;
    }) => void) | null;
    onerror: ((ev: any) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
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
export declare class ChatError extends Error {
    readonly code: string;
    /** The room it concerns, when it concerns one. */
    room?: string;
    /** On a failed send: its client_id, to retry it with. */
    clientId?: string;
    constructor(code: string, message: string);
}
/** Listeners by event, with `on`, `off` and `once`. */
declare class Emitter<E> {
    private readonly listeners;
    private readonly onceWrappers;
    /** Subscribes; returns the function that unsubscribes. */
    on<K extends keyof E>(type: K, fn: Listener<E[K]>): () => void;
    /** Unsubscribes `fn` (added with `on` or `once`). */
    off<K extends keyof E>(type: K, fn: Listener<E[K]>): void;
    /** Subscribes for the next event only; returns the function that unsubscribes. */
    once<K extends keyof E>(type: K, fn: Listener<E[K]>): () => void;
    /** Whether anyone listens to `type`. */
    protected heard(type: keyof E): boolean;
    protected dispatch(type: keyof E, ev: unknown): void;
}
/** One room, as `chat.room(name)` returns it: its own events, and the
 * client's calls for it. */
export declare class Room extends Emitter<RoomEvents> {
    readonly name: string;
    private readonly client;
    /** Joins (or returns the join already made): see `ChatClient.join`. */
    join(opts?: JoinOptions): Promise<Joined>;
    send(text: string, opts?: SendOptions): Promise<Ack>;
    history(opts?: HistoryOptions): Promise<HistoryPage>;
    reply(offset: number, text: string, opts?: SendOptions): Promise<Ack>;
    edit(offset: number, text: string, opts?: ActOptions): Promise<Ack>;
    delete(offset: number, opts?: ActOptions): Promise<Ack>;
    react(offset: number, emoji: string, opts?: ActOptions): Promise<Ack>;
    unreact(offset: number, emoji: string, opts?: ActOptions): Promise<Ack>;
    moderate(user: string, action: 'mute' | 'unmute' | 'ban' | 'unban', durationSecs?: number): Promise<Ack>;
    /** The messages held for the room, as they are now, oldest first. */
    messages(): Message[];
    /** The users connected to the room now, on any node. */
    presence(): Promise<string[]>;
    typing(): void;
    read(offset: number): void;
    position(): Position | null;
    /** Leaves the room; its listeners stay, for a later `join`. */
    leave(): void;
}
export declare class ChatClient extends Emitter<ClientEvents> {
    /** The connection's state; `state` events say when it changes. */
    state: ConnectionState;
    /** The `ready` frame of the current connection. */
    session: Session | null;
    private readonly opt;
    private ws;
    private ready;
    private conn;
    private urlIndex;
    private attempt;
    private timer;
    private pinger;
    private lastFrame;
    private pinged;
    private refs;
    private readonly pending;
    private readonly rooms;
    private readonly roomObjects;
    private stopped;
    private deadline;
    private readyAt;
    private lastToken;
    private refusals;
    private authError;
    constructor(options: ClientOptions);
    /** The room `name`, with its own events (`on`, `off`, `once`) and calls.
     * The same object each time for the same name; it does not join. */
    room(name: string): Room;
    private emit;
    private setState;
    /** Open the connection (and keep it open until close()). */
    connect(): void;
    /** Close for good: pending requests reject with `closed`. */
    close(): void;
    /** Join a room (or return the join already made). Resolves with the
     * `joined` fields; a refusal rejects it (and is not also an `error`
     * event). Pass `since` (a position you saved, e.g. across a page reload)
     * to recover from there. */
    join(room: string, opts?: JoinOptions): Promise<Joined>;
    /** Leave a room. Messages to it not yet sent reject with `not_joined`
     * (with their `clientId`); those already sent settle on their ack. */
    leave(room: string): void;
    private forget;
    /** The last position delivered in a room, to save and pass as `since`
     * later; null before the room is joined. */
    position(room: string): Position | null;
    /** Send a message; resolves with the ack. Made idempotent by `client_id`
     * (made here unless given): resent after a reconnect, stored once. */
    send(room: string, text: string, opts?: SendOptions): Promise<Ack>;
    /** Reply to the message at `offset`: a message naming its parent. */
    reply(room: string, offset: number, text: string, opts?: SendOptions): Promise<Ack>;
    /** Edit your own message at `offset`; every member gets an `edit` event. */
    edit(room: string, offset: number, text: string, opts?: ActOptions): Promise<Ack>;
    /** Delete your own message at `offset`: its text is removed everywhere. */
    delete(room: string, offset: number, opts?: ActOptions): Promise<Ack>;
    /** React to the message at `offset` (once per emoji; repeats change
     * nothing and resolve with offset 0). */
    react(room: string, offset: number, emoji: string, opts?: ActOptions): Promise<Ack>;
    /** Take a reaction back. */
    unreact(room: string, offset: number, emoji: string, opts?: ActOptions): Promise<Ack>;
    /** As a room's owner or moderator: mute, ban, or lift either, for
     * `durationSecs` or until lifted. Resolves with the ack of the `system`
     * message recording it. */
    moderate(room: string, user: string, action: 'mute' | 'unmute' | 'ban' | 'unban', durationSecs?: number): Promise<Ack>;
    /** The messages held for the room, as they are now (edits, deletes,
     * reactions and reply counts folded in), oldest first: what was
     * delivered live and what history pages loaded, the newest `keep`. */
    messages(room: string): Message[];
    private act;
    /** A page of history, oldest first, with `next` for the page before it. */
    history(room: string, opts?: HistoryOptions): Promise<HistoryPage>;
    /** The users connected to `room` now, on any node: `GET
     * /v1/rooms/{room}/presence` on the current node, with the current token
     * (the user must be a member). */
    presence(room: string): Promise<string[]>;
    /** The user's unread counts in all their rooms (the rooms they joined or
     * were made a member of): `GET /v1/unread` with the current token. Each
     * count stops at 100 ("100 or more"); `total` is the app badge. */
    unread(): Promise<UnreadCounts>;
    private getJson;
    /** Tell the room you are typing; sent at most every 3 s per room, and
     * only while connected (it is not worth queueing). */
    typing(room: string): void;
    /** Store your read marker; the newest one is sent (again) once connected. */
    read(room: string, offset: number): void;
    /** Send a new token now (the `expiring` event does this by itself when
     * `token` is a function). */
    refresh(token: string): Promise<RefreshedEvent>;
    private currentUrl;
    private open;
    private refusedHandshake;
    private token;
    private detach;
    private fail;
    private drop;
    private retry;
    private raw;
    private heartbeat;
    private request;
    private transmit;
    private settle;
    private sendJoin;
    private rejectJoin;
    private flushRead;
    private frame;
    private onReady;
    private onJoined;
    private onMessage;
    private deliver;
    private fold;
    private remember;
    private later;
    private onError;
    private onExpiring;
}
export {};
