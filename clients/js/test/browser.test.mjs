// The demo page in a real browser (Debian's chromium, driven by
// playwright-core), against the real stack: two pages chat, one ingress node
// is killed mid-conversation, both pages show every message once, in order;
// a page reloaded after its room was trimmed shows "reloaded" and history.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
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
