// The demo page in a real browser (Debian's chromium, driven by
// playwright-core), against the real stack: two pages chat, one ingress node
// is killed mid-conversation, both pages show every message once, in order;
// a page reloaded after its room was trimmed shows "reloaded" and history.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';
import { Stack, until, sleep } from './stack.mjs';

const executablePath = process.env.CHAT_CHROMIUM ?? '/usr/bin/chromium';
// The screenshot for the README: scripts/screenshot sets CHAT_SCREENSHOT to
// docs/demo.png; otherwise it lands in the temp dir.
const screenshot = process.env.CHAT_SCREENSHOT ?? path.join(tmpdir(), 'chat-demo.png');

async function browser(t) {
  const b = await chromium.launch({ executablePath, headless: true, args: ['--headless', '--no-sandbox'] });
  t.after(() => b.close());
  return b;
}

/** What the page shows: the delivered messages (not the pending ones). */
const shown = (page) => page.$$eval('#log .m:not(.pending)', (els) =>
  els.map((e) => ({ offset: Number(e.dataset.offset), text: e.querySelector('.x').textContent, user: e.querySelector('.u').textContent })));
const stateOf = (page) => page.$eval('#state', (e) => e.dataset.state);

async function open(b, url, name, room) {
  const page = await (await b.newContext({ viewport: { width: 900, height: 560 } })).newPage();
  page.on('pageerror', (e) => { throw e; });
  await page.goto(url);
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join');
  await until(`${name} connected`, async () => (await stateOf(page)) === 'connected');
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

test('two pages chat; a node dies; both show every message exactly once, in order', async (t) => {
  const stack = await Stack.start({ nodes: 2 });
  t.after(() => stack.stop());
  const [n0, n1] = stack.nodes;
  const b = await browser(t);
  const alice = await open(b, `${n0.http}/?ws=${n0.ws},${n1.ws}`, 'alice', 'demo');
  const bob = await open(b, `${n1.http}/?ws=${n1.ws},${n0.ws}`, 'bob', 'demo');
  await until('bob is present for alice', async () => (await alice.textContent('#present')).includes('bob'));

  const texts = [];
  for (let i = 0; i < 30; i++) {
    const text = `${i % 2 ? 'bob' : 'alice'} says ${i}`;
    texts.push(text);
    await say(i % 2 ? bob : alice, text);
    if (i === 12) await n0.proc.stop('SIGKILL'); // alice's node
    await sleep(20); // pacing, so that sends straddle the kill
  }
  await until('alice shows reconnecting then recovered', async () => (await stateOf(alice)) === 'recovered');
  const stored = await stack.stored('demo');
  assert.deepEqual(stored.map((m) => m.text).sort(), [...texts].sort(), 'each message stored once');
  for (const [name, page] of [['alice', alice], ['bob', bob]]) {
    await until(`${name} shows all 30`, async () => (await shown(page)).length >= 30);
    const got = await shown(page);
    assert.deepEqual(got.map((m) => m.offset), stored.map((m) => m.offset), `${name}: offsets once, in order`);
    assert.deepEqual(got.map((m) => m.text), stored.map((m) => m.text), `${name}: texts`);
    assert.equal(await page.$$eval('#log .m.pending', (e) => e.length), 0, `${name}: nothing left pending`);
  }
  // Typing notices go at most every 3 s per room, and bob's last was with
  // his last message: he keeps typing until one goes out.
  await until('alice sees bob typing', async () => {
    await bob.type('#text', 'x');
    return (await alice.textContent('#typing')).includes('bob is typing');
  });
  await alice.screenshot({ path: screenshot });
});

test('a page reloaded after its room was trimmed shows "reloaded" and the history', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const n = stack.nodes[0];
  const b = await browser(t);
  const page = await open(b, `${n.http}/`, 'carol', 'trim:room');
  for (let i = 1; i <= 3; i++) await say(page, `early ${i}`);
  await until('three shown', async () => (await shown(page)).length === 3);

  // A reload while nothing was missed recovers, and still shows what came before.
  await page.reload();
  await until('the page says recovered', async () => (await stateOf(page)) === 'recovered');
  await until('the earlier page shown', async () => (await shown(page)).length === 3);
  assert.deepEqual((await shown(page)).map((m) => m.text), ['early 1', 'early 2', 'early 3']);

  // Away while the room moves on far past what it keeps (maxlen 5).
  await page.goto('about:blank');
  for (let i = 1; i <= 300; i++) await stack.api('POST', '/v1/rooms/trim:room/messages', { text: `later ${i}`, user: 'dave', kind: 'user' });
  await page.goBack();
  await until('the page says reloaded', async () => (await stateOf(page)) === 'reloaded');
  await until('history shown', async () => (await shown(page)).length > 0);
  const got = await shown(page);
  assert.equal(got.at(-1).text, 'later 300');
  assert.equal(got.at(-1).offset, 303);
  got.forEach((m, i) => i && assert.equal(m.offset, got[i - 1].offset + 1, 'consecutive'));
  assert.ok(!got.some((m) => m.text.startsWith('early')), 'trimmed messages are gone');
  assert.match(await page.textContent('#log'), /reloaded/);

  // And live messages keep coming after the reload.
  await say(page, 'back again');
  await until('own message shown', async () => (await shown(page)).at(-1)?.text === 'back again');
  assert.equal((await shown(page)).at(-1).offset, 304);
});

test('scrolling up loads older history, page by page, with no gap or repeat', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  for (let i = 1; i <= 120; i++) await stack.api('POST', '/v1/rooms/long/messages', { text: `old ${i}`, user: 'erin', kind: 'user' });
  const b = await browser(t);
  const page = await open(b, `${stack.nodes[0].http}/`, 'frank', 'long');
  await until('the newest 50', async () => (await shown(page)).length === 50);
  for (const want of [100, 120]) {
    await page.$eval('#log', (e) => { e.scrollTop = 0; });
    await until(`${want} shown`, async () => (await shown(page)).length === want);
  }
  const got = await shown(page);
  assert.deepEqual(got.map((m) => m.offset), Array.from({ length: 120 }, (_, i) => i + 1));
  assert.equal(got[0].text, 'old 1');
});

/** A page served from its own origin (`http://127.0.0.1:PORT`), empty. */
async function blankOrigin(t) {
  const server = http.createServer((_, res) => { res.setHeader('content-type', 'text/html'); res.end('<!doctype html><title>app</title>'); });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { server.closeAllConnections(); server.close(); });
  return `http://127.0.0.1:${server.address().port}`;
}

test('in the browser: room subscriptions with on, off and once; a refused origin stops the client', async (t) => {
  const allowed = await blankOrigin(t);
  const refused = await blankOrigin(t);
  const stack = await Stack.start({ nodes: 1, env: { CHAT_ALLOWED_ORIGINS: allowed } });
  t.after(() => stack.stop());
  const n = stack.nodes[0];
  const b = await browser(t);
  const ctx = await b.newContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { throw e; });

  await page.goto(allowed);
  const got = await page.evaluate(async ({ client, url, ta, tb }) => {
    const { ChatClient } = await import(client);
    const a = new ChatClient({ url, token: ta });
    const bob = new ChatClient({ url, token: tb });
    const errors = [];
    a.on('error', (e) => errors.push(e.code));
    const eng = a.room('team:eng');
    const texts = [];
    const first = [];
    const offed = [];
    const offedFn = (m) => offed.push(m.text);
    eng.on('message', (m) => texts.push(m.text));
    eng.once('message', (m) => first.push(m.text));
    eng.on('message', offedFn);
    a.connect(); bob.connect();
    await eng.join();
    await bob.join('team:eng');
    const wait = (cond) => new Promise((res) => { const i = setInterval(() => { if (cond()) { clearInterval(i); res(); } }, 20); });
    await bob.send('team:eng', 'one');
    await wait(() => texts.length === 1);
    eng.off('message', offedFn);
    await bob.send('team:eng', 'two');
    await wait(() => texts.length === 2);
    const present = (await eng.presence()).sort();
    let refusal = null;
    try { await a.join('secret:x'); } catch (e) { refusal = e.code; }
    a.close(); bob.close();
    return { texts, first, offed, present, refusal, errors };
  }, { client: `${n.http}/client.js`, url: n.ws, ta: stack.token('alice', 3600, { rooms: ['team:*'] }), tb: stack.token('bob') });
  assert.deepEqual(got, {
    texts: ['one', 'two'],
    first: ['one'],
    offed: ['one'],
    present: ['alice', 'bob'],
    refusal: 'forbidden',
    errors: [],
  });

  // From an origin the server refuses: one attempt, one error, closed.
  await page.goto(refused);
  const stopped = await page.evaluate(async ({ client, url, token }) => {
    const { ChatClient } = await import(client);
    const c = new ChatClient({ url, token, backoff: { initial: 50, max: 100 } });
    const states = [];
    const errors = [];
    c.on('state', (s) => states.push(s.state));
    c.on('error', (e) => errors.push(e.code));
    c.connect();
    await new Promise((res) => { const i = setInterval(() => { if (c.state === 'closed') { clearInterval(i); res(); } }, 20); });
    // Long enough for several retries, had it kept retrying.
    await new Promise((res) => setTimeout(res, 500));
    return { states, errors };
  }, { client: `${n.http}/client.js`, url: n.ws, token: stack.token('carol') });
  assert.deepEqual(stopped, { states: ['connecting', 'closed'], errors: ['forbidden'] });
});

test('the demo page looks like a chat app', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const n = stack.nodes[0];
  const b = await browser(t);
  const page = await open(b, `${n.http}/`, 'alice', 'look');
  assert.ok(await page.$('link[rel=icon]'), 'a favicon');
  assert.deepEqual(await page.$$eval('#name, #room, #join', (els) => els.map((e) => e.disabled)), [true, true, true], 'the join form is locked while joined');
  await stack.api('POST', '/v1/rooms/look/messages', { text: 'hi alice', user: 'bob' });
  await say(page, 'a long message that wraps '.repeat(12).trim());
  await until('both shown', async () => (await shown(page)).length === 2);
  const geo = await page.evaluate(() => {
    const box = (e) => { const r = e.getBoundingClientRect(); return { left: r.left, right: r.right, bottom: r.bottom }; };
    // Each line's leftmost box (a line may have several, e.g. its trailing space).
    const lines = (e) => {
      const range = document.createRange();
      range.selectNodeContents(e);
      const left = new Map();
      for (const r of range.getClientRects()) {
        const top = Math.round(r.top);
        left.set(top, Math.min(left.get(top) ?? Infinity, Math.round(r.left)));
      }
      return [...left.values()];
    };
    return {
      log: box(document.querySelector('#log')),
      ms: [...document.querySelectorAll('#log .m')].map((e) => ({ mine: e.classList.contains('mine'), ...box(e), lines: lines(e.querySelector('.x')) })),
    };
  });
  const [theirs, mine] = geo.ms;
  assert.deepEqual([theirs.mine, mine.mine], [false, true], 'own messages are marked');
  assert.ok(theirs.left - geo.log.left < 30, 'theirs on the left');
  assert.ok(geo.log.right - mine.right < 30 && mine.left > theirs.left + 40, 'mine on the right');
  assert.ok(geo.log.bottom - mine.bottom < 30, 'the log is anchored at the bottom');
  assert.ok(mine.lines.length > 1, 'the long message wraps');
  assert.ok(mine.lines.every((l) => Math.abs(l - mine.lines[0]) <= 1), `wrapped lines start under the text: ${mine.lines}`);

  // Two days later, the same messages are old history and carry their date.
  const later = await (await b.newContext({ viewport: { width: 900, height: 560 } })).newPage();
  await later.clock.install({ time: new Date(Date.now() + 2 * 86400e3) });
  await later.goto(`${n.http}/`);
  await later.fill('#name', 'carol');
  await later.fill('#room', 'look');
  await later.click('#join');
  await until('carol sees both', async () => (await shown(later)).length === 2);
  const stored = await stack.stored('look');
  const labels = await later.$$eval('#log .m .t', (els) => els.map((e) => e.textContent));
  const dates = await later.evaluate((ts) => ts.map((x) => new Date(x).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' })), stored.map((m) => m.ts));
  assert.deepEqual(labels, dates, 'old messages show their date');
  await page.screenshot({ path: path.join(tmpdir(), 'chat-demo-look.png') });
});

test('the demo page shows edits, deletes, reactions, replies and an unread badge', async (t) => {
  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const [n0] = stack.nodes;
  const b = await browser(t);
  const alice = await open(b, `${n0.http}/`, 'alice', 'conv');
  const bob = await open(b, `${n0.http}/`, 'bob', 'conv');
  const line = (o) => `#log .m[data-offset="${o}"]`;
  const text = (page, o) => page.$eval(line(o), (e) => e.textContent).catch(() => '');
  const press = (page, o, act) => page.$eval(`${line(o)} button[data-act="${act}"]`, (e) => e.click());

  await say(alice, 'helo');
  await until('bob sees it', async () => (await text(bob, 1)).includes('helo'));
  alice.once('dialog', (d) => d.accept('hello'));
  await press(alice, 1, 'edit');
  await until('the edit on bob\'s page', async () => {
    const s = await text(bob, 1);
    return s.includes('hello') && s.includes('(edited)');
  });
  await press(bob, 1, '👍');
  await until('the reaction on alice\'s page', async () => (await text(alice, 1)).includes('👍 1'));
  await press(bob, 1, 'reply');
  await say(bob, 'hi!');
  await until('the reply on alice\'s page', async () => (await text(alice, 4)).includes('↪ reply to #1'));
  await until('the reply count', async () => (await text(alice, 1)).includes('1 reply'));
  await say(alice, 'my pin is 1234');
  await until('bob sees the secret', async () => (await text(bob, 5)).includes('1234'));
  await press(alice, 5, 'delete');
  await until('the delete on bob\'s page', async () => {
    const s = await text(bob, 5);
    return s.includes('message deleted') && !s.includes('1234');
  });

  // A newcomer loads the room as it is now, with its unread count.
  const carol = await open(b, `${n0.http}/`, 'carol', 'conv');
  await until('carol\'s history', async () => (await text(carol, 4)).includes('hi!'));
  const first = await text(carol, 1);
  assert.ok(first.includes('hello') && first.includes('(edited)') && first.includes('👍 1') && first.includes('1 reply'), first);
  assert.ok((await text(carol, 5)).includes('message deleted'));
  assert.equal(await carol.$$eval('#log .m', (els) => els.length), 3, 'events are not lines');
  await until('the unread badge', async () => (await carol.textContent('#unread')) === '2 unread');
});
