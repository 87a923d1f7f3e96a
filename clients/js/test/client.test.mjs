// The client module under node --test, against the real stack (two ingress
// nodes, a fanout worker, redis-server) started as separate processes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { ChatClient, ChatError } from '../chat.js';
import { Stack, until, sleep, freePort } from './stack.mjs';

/** Until the clock is past `exp` (seconds) and the server's whole-second
 * rounding: a token with that exp has expired. */
const pastExp = (exp) => until('the token\'s exp to pass', () => Date.now() > exp * 1000 + 1100, 30000);

const fast = { backoff: { initial: 100, max: 1000 } };

/** A client that records what the application would see. */
function client(opts) {
  const c = new ChatClient({ WebSocket, ...fast, ...opts });
  c.seen = [];
  c.states = [];
  c.joins = [];
  c.errors = [];
  c.on('message', (m) => c.seen.push(m));
  c.on('state', (s) => c.states.push(s));
  c.on('joined', (j) => c.joins.push(j));
  c.on('error', (e) => c.errors.push(e));
  return c;
}

/** Offsets 1..n, each once, in order, with the texts stored in the room. */
function assertExact(seen, stored, who) {
  assert.deepEqual(seen.map((m) => m.offset), stored.map((m) => m.offset), `${who}: offsets`);
  assert.deepEqual(seen.map((m) => m.text), stored.map((m) => m.text), `${who}: texts`);
  stored.forEach((m, i) => assert.equal(m.offset, i + 1, 'stored offsets are gap-free'));
}

test('recovery across a node kill: every message exactly once, in order, sends stored once', async (t) => {
  const stack = await Stack.start({ nodes: 2 });
  t.after(() => stack.stop());
  const [n0, n1] = stack.nodes;
  const a = client({ urls: [n0.ws, n1.ws], token: () => stack.token('alice') });
  const b = client({ urls: [n1.ws, n0.ws], token: () => stack.token('bob') });
  t.after(() => { a.close(); b.close(); });
  a.connect(); b.connect();
  await Promise.all([a.join('room-kill'), b.join('room-kill')]);

  const sends = [];
  for (let i = 0; i < 60; i++) {
    const from = i % 2 ? b : a;
    sends.push(from.send('room-kill', `m${i}`));
    if (i === 20) await n0.proc.stop('SIGKILL'); // alice's node dies mid-conversation
    await sleep(15); // pacing, so that sends straddle the kill
  }
  const acks = await Promise.all(sends);
  const stored = await stack.stored('room-kill');
  assert.equal(stored.length, 60, 'each send stored once');
  assert.deepEqual(new Set(acks.map((k) => k.offset)).size, 60);
  await until('both clients have every message', () => a.seen.length >= 60 && b.seen.length >= 60);
  // Nothing more may arrive: a last message is delivered after anything
  // else in the room, so once both have it, a late copy would be there.
  const last = await b.send('room-kill', 'end');
  await until('both have the last message', () => [a, b].every((c) => c.seen.some((m) => m.offset === last.offset)));
  const all = await stack.stored('room-kill');
  assertExact(a.seen, all, 'alice');
  assertExact(b.seen, all, 'bob');
  // Alice moved to node 1 and recovered there.
  assert.ok(a.states.some((s) => s.state === 'reconnecting'));
  assert.equal(a.joins.at(-1).recovered, true);
  assert.equal(a.state, 'connected');
});

/** A TCP proxy that can swallow the server's answers, then cut every connection. */
async function proxyTo(port) {
  const conns = new Set();
  const px = { swallow: false };
  const server = net.createServer((down) => {
    if (px.down) return;
    const up = net.connect(port, '127.0.0.1');
    conns.add(down); conns.add(up);
    down.on('data', (d) => up.write(d));
    up.on('data', (d) => { if (!px.swallow) down.write(d); });
    const end = () => { down.destroy(); up.destroy(); conns.delete(down); conns.delete(up); };
    down.on('close', end); up.on('close', end); down.on('error', end); up.on('error', end);
  });
  const listen = await freePort();
  await new Promise((r) => server.listen(listen, '127.0.0.1', r));
  // While `down`, new connections are refused at once.
  server.on('connection', (c) => { if (px.down) c.destroy(); });
  px.url = `ws://127.0.0.1:${listen}/v1/ws`;
  px.cut = () => { for (const c of conns) c.destroy(); };
  px.close = () => { px.cut(); server.close(); };
  return px;
}

/** A one-node stack (with `env`), a proxy in front of it, a client through it. */
async function behindProxy(t, clientOpts, env) {
  const stack = await Stack.start({ nodes: 1, env });
  t.after(() => stack.stop());
  const px = await proxyTo(stack.nodes[0].port);
  t.after(() => px.close());
  const a = client({ url: px.url, ...clientOpts(stack) });
  t.after(() => a.close());
  return { stack, px, a };
}

test('a send whose ack was lost is resent with the same client_id and stored once', async (t) => {
  const { stack, px, a } = await behindProxy(t, (stack) => ({ token: () => stack.token('alice') }));
  a.connect();
  await a.join('room-retry');
  await a.send('room-retry', 'before');

  px.swallow = true; // the server stores the next send, its ack never arrives
  const sent = a.send('room-retry', 'once only');
  await until('the server stored it', async () => (await stack.stored('room-retry')).length === 2);
  px.cut();
  px.swallow = false;
  const ack = await sent;

  assert.equal(ack.duplicate, true, 'the retry was recognised');
  assert.equal(ack.offset, 2);
  const stored = await stack.stored('room-retry');
  assert.deepEqual(stored.map((m) => m.text), ['before', 'once only']);
  await until('the message itself arrives', () => a.seen.length === 2);
  // A second copy would come before anything sent after it.
  const last = await a.send('room-retry', 'after');
  await until('the next message arrives', () => a.seen.some((m) => m.offset === last.offset));
  assert.deepEqual(a.seen.map((m) => m.text), ['before', 'once only', 'after']);
  assert.equal(a.joins.at(-1).recovered, true);
});

test('a token is refreshed on `expiring`, before exp, without a reconnect', async (t) => {
  const stack = await Stack.start({ nodes: 1, env: { CHAT_EXPIRING_NOTICE: '3s' } });
  t.after(() => stack.stop());
  let calls = 0;
  // The first token lives 4 s; `expiring` comes 3 s before that.
  const token = () => stack.token('alice', ++calls === 1 ? 4 : 3600);
  const a = client({ url: stack.nodes[0].ws, token });
  t.after(() => a.close());
  const refreshed = new Promise((r) => a.on('refreshed', r));
  a.connect();
  await a.join('room-refresh');
  const firstExp = a.session.exp;
  const r = await refreshed;
  assert.ok(r.exp > firstExp + 3000, 'the new exp is the new token\'s');
  assert.equal(calls, 2);
  await pastExp(firstExp);
  const ack = await a.send('room-refresh', 'still here');
  assert.equal(ack.offset, 1);
  assert.deepEqual(a.states.map((s) => s.state), ['connecting', 'connected'], 'never reconnected');
  assert.deepEqual(a.errors, []);
});

test('backoff: a server that is down is retried with growing, jittered delays', async (t) => {
  const attempts = [];
  const server = http.createServer((_, res) => { res.statusCode = 503; res.end(); });
  server.on('upgrade', (_, socket) => { attempts.push(Date.now()); socket.end('HTTP/1.1 503 Service Unavailable\r\n\r\n'); });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  t.after(() => server.close());
  const a = client({ urls: [`ws://127.0.0.1:${port}/v1/ws`], token: 'x.y.z', backoff: { initial: 100, max: 800 } });
  a.connect();
  await until('eight attempts', () => attempts.length >= 8, 15000);
  a.close();
  const delays = a.states.filter((s) => s.state === 'reconnecting').map((s) => s.delay);
  // Each delay is drawn between half and all of min(800, 100 * 2^k).
  delays.forEach((d, k) => {
    const ceil = Math.min(800, 100 * 2 ** k);
    assert.ok(d >= ceil / 2 && d <= ceil, `delay ${k} = ${d} within [${ceil / 2}, ${ceil}]`);
  });
  // Eight tries take at least the smallest delays allow: half of
  // 100 + 200 + 400 + 800 * 4 ms.
  const span = attempts[7] - attempts[0];
  assert.ok(span >= (100 + 200 + 400 + 800 * 4) / 2 - 50, `eight attempts in ${span} ms`);
  for (let i = 1; i < attempts.length; i++) assert.ok(attempts[i] - attempts[i - 1] >= 40, 'never back-to-back');
  assert.ok(new Set(delays.slice(3)).size > 1, 'capped delays still vary (jitter)');
});

test('bad input from the application gets a clear error', async () => {
  assert.throws(() => new ChatClient({ url: 'http://x', token: 't', WebSocket }), ChatError);
  assert.throws(() => new ChatClient({ url: 'ws://x/v1/ws', WebSocket }), /token/);
  const c = new ChatClient({ url: 'ws://127.0.0.1:1/v1/ws', token: 't', WebSocket });
  assert.throws(() => c.join('bad room!'), (e) => e.code === 'bad_request');
  await assert.rejects(c.send('lobby', 'hi'), (e) => e.code === 'not_joined');
  c.join('lobby').catch(() => {});
  await assert.rejects(c.send('lobby', ''), (e) => e.code === 'bad_request');
  await assert.rejects(c.send('lobby', 'é'.repeat(2049)), (e) => e.code === 'too_large');
  await assert.rejects(c.send('lobby', 'x', { clientId: 'x'.repeat(65) }), (e) => e.code === 'bad_request');
  await assert.rejects(c.history('lobby', { limit: 101 }), (e) => e.code === 'bad_request');
  assert.throws(() => c.join('other', { since: { epoch: 'e', offset: -1 } }), /since/);
  assert.throws(() => c.read('lobby', 1.5), /offset/);
  c.close();
});

test('close() while a socket is still connecting ends quietly', async (t) => {
  const server = http.createServer();
  const upgrades = [];
  // Never answers the handshake; notes when the client hangs up.
  server.on('upgrade', (_, socket) => {
    const s = { ended: false };
    socket.on('end', () => { s.ended = true; });
    socket.on('close', () => { s.ended = true; });
    socket.on('error', () => { s.ended = true; });
    upgrades.push(s);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  t.after(() => { server.closeAllConnections(); server.close(); });
  const uncaught = [];
  const record = (e) => uncaught.push(e);
  process.on('uncaughtException', record);
  t.after(() => process.off('uncaughtException', record));
  const c = client({ url: `ws://127.0.0.1:${port}/v1/ws`, token: 't' });
  c.connect();
  await until('the handshake reaches the server', () => upgrades.length === 1);
  c.close();
  await until('the client hung up', () => upgrades[0].ended);
  await until('its close event has run', () => c.state === 'closed');
  assert.deepEqual(uncaught, []);
  assert.equal(c.state, 'closed');
});

test('a reconnect that cannot recover reloads exactly the page before the live messages', async (t) => {
  const { stack, px, a } = await behindProxy(t, (stack) => ({ token: () => stack.token('alice') }));
  const reloads = [];
  a.on('reload', (r) => reloads.push({ ...r, seenBefore: a.seen.length }));
  a.connect();
  await a.join('trim:gone');
  await a.send('trim:gone', 'first');
  await until('first seen', () => a.seen.length === 1);

  px.down = true;
  px.cut();
  for (let i = 1; i <= 300; i++) await stack.api('POST', '/v1/rooms/trim:gone/messages', { text: `away ${i}`, user: 'bob', kind: 'user' });
  px.down = false;
  await until('reloaded', () => reloads.length === 1);
  const joined = a.joins.at(-1);
  assert.equal(joined.recovered, false);
  const r = reloads[0];
  assert.equal(r.messages.at(-1).offset, joined.offset, 'the page ends at joined.offset');
  r.messages.forEach((m, i) => i && assert.equal(m.offset, r.messages[i - 1].offset + 1));
  assert.equal(r.seenBefore, 1, 'no live message overtook the reload');
  await stack.api('POST', '/v1/rooms/trim:gone/messages', { text: 'live', user: 'bob', kind: 'user' });
  await until('live after reload', () => a.seen.at(-1)?.text === 'live');
  assert.equal(a.seen.at(-1).offset, joined.offset + 1);
  assert.deepEqual(a.seen.map((m) => m.text), ['first', 'live'], 'nothing at or below joined.offset delivered live');
});

test('a send queued before connect goes once; leave then join again keeps the room', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  // The module the nodes serve is this one, importable from other origins.
  const js = await fetch(`${stack.nodes[0].http}/client.js`);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  assert.equal(js.headers.get('access-control-allow-origin'), '*');
  assert.equal(await js.text(), readFileSync(new URL('../chat.js', import.meta.url), 'utf8'));
  const a = client({ url: stack.nodes[0].ws, token: stack.token('alice') });
  t.after(() => a.close());
  const joining = a.join('room-q');
  const early = a.send('room-q', 'early');
  a.connect();
  await joining;
  assert.equal((await early).offset, 1);
  await until('early seen', () => a.seen.length === 1);
  const lefts = [];
  a.on('left', (l) => lefts.push(l));
  a.leave('room-q');
  const again = await a.join('room-q');
  assert.equal(again.room, 'room-q');
  assert.equal((await a.send('room-q', 'after rejoin')).offset, 2);
  await until('both seen', () => a.seen.length === 2);
  assert.deepEqual(a.seen.map((m) => m.text), ['early', 'after rejoin']);
  assert.deepEqual(lefts, [], 'our own leave is not a deletion');
  // Leave while the join is still unanswered, then join again at once.
  const first = a.join('room-r');
  a.leave('room-r');
  await assert.rejects(first, (e) => e.code === 'not_joined');
  await a.join('room-r');
  await a.send('room-r', 'in r');
  await until('r message seen', () => a.seen.at(-1)?.text === 'in r');
  assert.deepEqual(lefts, []);
  await assert.rejects(a.join('room-x').then(() => { a.close(); return a.join('room-y'); }), (e) => e.code === 'closed');
});

test('a fixed token refreshed by the app is the one used after a reconnect', async (t) => {
  const { stack, px, a } = await behindProxy(t, (stack) => ({ token: stack.token('alice', 4) }), { CHAT_EXPIRING_NOTICE: '3s' });
  const asked = new Promise((r) => a.on('error', (e) => { if (/refresh/.test(e.message)) r(); }));
  a.connect();
  await a.join('room-fixed');
  const firstExp = a.session.exp;
  await asked;
  await a.refresh(stack.token('alice', 3600));
  await pastExp(firstExp);
  px.cut();
  await until('reconnected', () => a.joins.length === 2);
  assert.equal(a.state, 'connected');
  assert.equal((await a.send('room-fixed', 'with the new token')).offset, 1);
});
