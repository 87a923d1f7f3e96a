// The client's application API in Node, against the real stack: per-room
// subscriptions (`room()`, `on`, `off`, `once`), one report per failure, and
// failures that retrying cannot mend (a token function that says no, a
// refused origin, tokens refused again and again) stopping the client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ChatClient, ChatError } from '../chat.js';
import { Stack, until } from './stack.mjs';

const fast = { backoff: { initial: 50, max: 200 } };

/** A client that records what the application would see. */
function client(opts) {
  const c = new ChatClient({ WebSocket, ...fast, ...opts });
  c.states = [];
  c.errors = [];
  c.on('state', (s) => c.states.push(s));
  c.on('error', (e) => c.errors.push(e));
  return c;
}

test('a room object has its own events, with on, off and once beside the global ones', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const a = client({ url: stack.nodes[0].ws, token: () => stack.token('alice') });
  const b = client({ url: stack.nodes[0].ws, token: () => stack.token('bob') });
  t.after(() => { a.close(); b.close(); });
  a.connect(); b.connect();
  const eng = a.room('team:eng');
  assert.equal(a.room('team:eng'), eng, 'one object per room');
  assert.throws(() => a.room('bad room!'), (e) => e instanceof ChatError && e.code === 'bad_request');
  const ops = a.room('team:ops');
  const inEng = [];
  const inOps = [];
  const global = [];
  const firstOnly = [];
  const offed = [];
  eng.on('message', (m) => inEng.push(m.text));
  ops.on('message', (m) => inOps.push(m.text));
  a.on('message', (m) => global.push(`${m.room} ${m.text}`));
  eng.once('message', (m) => firstOnly.push(m.text));
  const offedFn = (m) => offed.push(m.text);
  eng.on('message', offedFn);
  const joined = [];
  eng.once('joined', (j) => joined.push(j.room));
  const presence = [];
  eng.on('presence', (p) => presence.push(`${p.user} ${p.state}`));

  await eng.join();
  await ops.join();
  assert.deepEqual(joined, ['team:eng']);
  await b.join('team:eng');
  await b.join('team:ops');
  await until('bob is present in eng', () => presence.includes('bob join'));
  assert.deepEqual((await eng.presence()).sort(), ['alice', 'bob']);

  await b.send('team:eng', 'e1');
  await until('e1', () => inEng.length === 1);
  eng.off('message', offedFn);
  await b.send('team:ops', 'o1');
  await b.send('team:eng', 'e2');
  await until('e2 and o1', () => inEng.length === 2 && inOps.length === 1);
  assert.deepEqual(inEng, ['e1', 'e2']);
  assert.deepEqual(inOps, ['o1']);
  assert.deepEqual(firstOnly, ['e1'], 'once: the first message only');
  assert.deepEqual(offed, ['e1'], 'off: nothing after it');
  assert.deepEqual(global, ['team:eng e1', 'team:ops o1', 'team:eng e2'], 'the global events stay');

  // The room's calls: send, history, position, leave.
  const ack = await eng.send('from the room object');
  assert.equal(ack.offset, 3);
  const page = await eng.history({ limit: 10 });
  assert.deepEqual(page.messages.map((m) => m.text), ['e1', 'e2', 'from the room object']);
  await until('own message delivered', () => eng.position()?.offset === 3);
  eng.leave();
  assert.equal(eng.position(), null);
  await assert.rejects(eng.send('after leaving'), (e) => e.code === 'not_joined');
  assert.deepEqual(a.errors, []);
});

test('a refused join is reported once: by the rejected promise, not also as an error event', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const a = client({ url: stack.nodes[0].ws, token: () => stack.token('alice', 3600, { rooms: ['mine:*'] }) });
  t.after(() => a.close());
  const roomErrors = [];
  a.room('theirs:x').on('error', (e) => roomErrors.push(e));
  a.connect();
  await assert.rejects(a.join('theirs:x'), (e) => e instanceof ChatError && e.code === 'forbidden');
  await a.join('mine:1');
  assert.deepEqual(a.errors, [], 'no error event beside the rejection');
  assert.deepEqual(roomErrors, []);
  // And a failed send is reported by its promise alone.
  await assert.rejects(a.send('mine:1', 'x'.repeat(5000)), (e) => e.code === 'too_large');
  assert.deepEqual(a.errors, []);
});

test('a token function that says no stops the client, reported once', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const permanent = [
    ['a ChatError unauthorized', () => { throw new ChatError('unauthorized', 'logged out'); }],
    ['an HTTP 401 from the auth server', () => { throw Object.assign(new Error('HTTP 401'), { status: 401 }); }],
    ['an error marked permanent', async () => { throw Object.assign(new Error('no session'), { permanent: true }); }],
  ];
  for (const [what, token] of permanent) {
    let calls = 0;
    const a = client({ url: stack.nodes[0].ws, token: () => { calls++; return token(); } });
    const joining = a.join('lobby').catch((e) => e);
    a.connect();
    await until(`${what}: closed`, () => a.state === 'closed');
    assert.equal((await joining).code, 'unauthorized', what);
    assert.equal(calls, 1, `${what}: asked once`);
    assert.deepEqual(a.states.map((s) => s.state), ['connecting', 'closed'], what);
    assert.equal(a.errors.length, 1, `${what}: one error event`);
    assert.equal(a.states.at(-1).error, a.errors[0], `${what}: the closed state carries it`);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(calls, 1, `${what}: never asked again`);
    assert.throws(() => a.connect(), (e) => e.code === 'closed');
  }
  // A network failure is transient: retried with backoff until it works.
  let calls = 0;
  const b = client({
    url: stack.nodes[0].ws,
    token: () => {
      if (++calls < 3) throw new TypeError('fetch failed');
      return stack.token('bob');
    },
  });
  t.after(() => b.close());
  b.connect();
  await b.join('lobby');
  assert.equal(calls, 3);
  assert.equal(b.state, 'connected');
  assert.ok(b.states.some((s) => s.state === 'reconnecting'));
});

test('a refused origin (HTTP 403) stops the client instead of retrying forever', async (t) => {
  const stack = await Stack.start({ nodes: 1, env: { CHAT_ALLOWED_ORIGINS: 'https://app.example' } });
  t.after(() => stack.stop());
  // The ws package sends the Origin a browser on another site would.
  class FromElsewhere extends WebSocket {
    constructor(url) { super(url, { origin: 'https://elsewhere.example' }); }
  }
  const a = client({ url: stack.nodes[0].ws, token: () => stack.token('alice'), WebSocket: FromElsewhere });
  const joining = a.join('lobby').catch((e) => e);
  a.connect();
  await until('closed', () => a.state === 'closed');
  assert.equal((await joining).code, 'forbidden');
  assert.deepEqual(a.states.map((s) => s.state), ['connecting', 'closed']);
  assert.equal(a.errors.length, 1);
  assert.equal(a.errors[0].code, 'forbidden');
  assert.match(a.errors[0].message, /CHAT_ALLOWED_ORIGINS/);
  // The allowed origin connects.
  class FromApp extends WebSocket {
    constructor(url) { super(url, { origin: 'https://app.example' }); }
  }
  const b = client({ url: stack.nodes[0].ws, token: () => stack.token('bob'), WebSocket: FromApp });
  t.after(() => b.close());
  b.connect();
  await b.join('lobby');
});

test('a token function whose tokens are refused again and again stops after the second refusal', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  let calls = 0;
  // Signed with another secret: every one is refused (4001).
  const token = () => { calls++; return stack.token('alice', 3600, {}, 'not-the-secret-0123456789'); };
  const a = client({ url: stack.nodes[0].ws, token });
  a.connect();
  await until('closed', () => a.state === 'closed');
  assert.equal(calls, 2, 'one new token after the first refusal, none after the second');
  assert.equal(a.errors.length, 1);
  assert.equal(a.errors[0].code, 'unauthorized');
  assert.equal(a.states.at(-1).code, 4001);
});

test('edits, deletes, reactions and replies: events for each, folded into the messages the client holds', async (t) => {
  const stack = await Stack.start({ nodes: 2 });
  t.after(() => stack.stop());
  const a = client({ url: stack.nodes[0].ws, token: () => stack.token('alice') });
  const b = client({ url: stack.nodes[1].ws, token: () => stack.token('bob') });
  t.after(() => { a.close(); b.close(); });
  a.connect(); b.connect();
  const room = b.room('conv');
  const seen = [];
  for (const ev of ['message', 'edit', 'delete', 'reaction']) room.on(ev, (m) => seen.push(`${ev} ${m.offset}`));
  const updates = [];
  room.on('update', (u) => updates.push(`${u.cause.kind} ${u.message.offset}`));
  await a.join('conv');
  await room.join();

  const first = await a.send('conv', 'helo');
  await room.reply(first.offset, 'hi alice');
  await a.edit('conv', first.offset, 'hello');
  await room.react(first.offset, '🎉');
  const again = await room.react(first.offset, '🎉');
  assert.deepEqual([again.offset, again.duplicate], [0, true], 'a repeat changes nothing');
  await a.react('conv', first.offset, '🎉');
  const secret = await a.send('conv', 'my pin is 1234');
  await a.delete('conv', secret.offset);
  await assert.rejects(room.edit(first.offset, 'not mine'), (e) => e.code === 'forbidden');
  await assert.rejects(room.delete(first.offset), (e) => e.code === 'forbidden');

  await until('every event delivered', () => seen.length === 7);
  assert.deepEqual(seen, ['message 1', 'message 2', 'edit 3', 'reaction 4', 'reaction 5', 'message 6', 'delete 7']);
  assert.deepEqual(updates, ['user 1', 'edit 1', 'reaction 1', 'reaction 1', 'delete 6']);
  const held = room.messages();
  assert.deepEqual(held.map((m) => m.offset), [1, 2, 6], 'messages only, no events');
  assert.equal(held[0].text, 'hello');
  assert.ok(held[0].edited_at > 0);
  assert.deepEqual(held[0].reactions, [{ emoji: '🎉', count: 2, me: true }]);
  assert.equal(held[0].reply_count, 1);
  assert.deepEqual([held[2].deleted, held[2].text], [true, '']);

  // A fresh client loads the same state from history, and a thread on its own.
  const c = client({ url: stack.nodes[0].ws, token: () => stack.token('carol') });
  t.after(() => c.close());
  c.connect();
  await c.join('conv');
  const page = await c.history('conv');
  assert.deepEqual(page.messages.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7]);
  const now = c.messages('conv');
  assert.deepEqual(now.map((m) => [m.offset, m.text, m.deleted ?? false]), [[1, 'hello', false], [2, 'hi alice', false], [6, '', true]]);
  assert.deepEqual(now[0].reactions, [{ emoji: '🎉', count: 2, me: false }]);
  const thread = await c.history('conv', { thread: 1 });
  assert.deepEqual(thread.messages.map((m) => [m.offset, m.reply_to, m.text]), [[2, 1, 'hi alice']]);
  assert.deepEqual([...a.errors, ...b.errors, ...c.errors], []);
});

test('unread counts: on joined and for all of the user\'s rooms', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const a = client({ url: stack.nodes[0].ws, token: () => stack.token('alice') });
  t.after(() => a.close());
  a.connect();
  await a.join('un:1');
  await a.join('un:2');
  const b = client({ url: stack.nodes[0].ws, token: () => stack.token('bob') });
  t.after(() => b.close());
  b.connect();
  await b.join('un:1');
  await b.join('un:2');
  b.leave('un:1');
  b.leave('un:2');
  for (const text of ['one', 'two', 'three']) await a.send('un:1', text);
  await a.send('un:2', 'four');
  const j = await b.join('un:1');
  assert.equal(j.unread, 3);
  b.read('un:1', 2);
  await until('the read marker counted', async () => (await b.unread()).rooms.find((r) => r.room === 'un:1')?.unread === 1);
  const counts = await b.unread();
  assert.deepEqual(counts.rooms.map((r) => [r.room, r.unread]), [['un:1', 1], ['un:2', 1]]);
  assert.equal(counts.total, 2);
  assert.deepEqual([...a.errors, ...b.errors], []);
});

test('moderation: a moderator mutes and bans; the banned client is told it left', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  await stack.api('PUT', '/v1/rooms/mod/members/mo', { role: 'moderator' });
  const mo = client({ url: stack.nodes[0].ws, token: () => stack.token('mo') });
  const pat = client({ url: stack.nodes[0].ws, token: () => stack.token('pat') });
  t.after(() => { mo.close(); pat.close(); });
  mo.connect(); pat.connect();
  const room = pat.room('mod');
  const notices = [];
  room.on('message', (m) => { if (m.notice) notices.push(`${m.notice.action} ${m.notice.user} by ${m.notice.by}`); });
  const left = [];
  room.on('left', (l) => left.push(l.byServer));
  await mo.join('mod');
  await room.join();
  await mo.moderate('mod', 'pat', 'mute', 60);
  await assert.rejects(room.send('hi'), (e) => e.code === 'forbidden');
  await assert.rejects(pat.moderate('mod', 'mo', 'mute'), (e) => e.code === 'forbidden');
  await mo.moderate('mod', 'pat', 'ban');
  await until('pat was taken out', () => left.length === 1);
  assert.deepEqual(left, [true]);
  assert.deepEqual(notices, ['mute pat by mo', 'ban pat by mo']);
  await assert.rejects(room.join(), (e) => e.code === 'forbidden');
  assert.deepEqual(mo.errors, []);
});
