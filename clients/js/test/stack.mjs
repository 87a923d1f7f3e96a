// Test support: the real stack as separate processes (redis-server, ingress
// nodes, a fanout worker) on free loopback ports, from the binaries cargo
// built (CHAT_BIN_DIR, default target/debug). Stopped by pid.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../../..');
const binDir = process.env.CHAT_BIN_DIR ?? path.join(repo, 'target/debug');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function until(what, fn, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function redisPing(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => resolve(false));
    c.on('data', (d) => { c.destroy(); resolve(d.toString().startsWith('+PONG')); });
    c.on('connect', () => c.write('PING\r\n'));
  });
}

const b64url = (b) => Buffer.from(b).toString('base64url');

/** An HS256 JWT. */
export function mint(secret, claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

class Proc {
  constructor(name, child) {
    this.name = name;
    this.child = child;
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    this.log = '';
    const keep = (d) => { this.log = (this.log + d).slice(-20000); };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  }
  get pid() { return this.child.pid; }
  async stop(signal = 'SIGTERM') {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try { process.kill(this.child.pid, signal); } catch { return; }
    const t = setTimeout(() => { try { process.kill(this.child.pid, 'SIGKILL'); } catch { /* gone */ } }, 5000);
    await this.exited;
    clearTimeout(t);
  }
}

export class Stack {
  /** @param {{nodes?: number, env?: object, streams?: string}} opts */
  static async start(opts = {}) {
    const s = new Stack();
    s.dir = mkdtempSync(path.join(tmpdir(), 'chat-js-'));
    s.secret = 'test-secret-' + randomBytes(8).toString('hex');
    s.apiKey = 'test-api-key-' + randomBytes(8).toString('hex');
    s.procs = [];
    try {
      for (const bin of ['ingress', 'fanout-worker']) {
        if (!existsSync(path.join(binDir, bin))) throw new Error(`${bin} not built in ${binDir}: run cargo build -p ingress -p fanout-worker`);
      }
      s.redisPort = await freePort();
      const redis = s._spawn('redis', 'redis-server', ['--port', String(s.redisPort), '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', s.dir], {});
      await until('redis-server', () => redisPing(s.redisPort));
      s.redis = redis;
      const streams = path.join(s.dir, 'streams.toml');
      writeFileSync(streams, opts.streams ?? `
[defaults]
maxlen = 10000
max_age = "1h"
ttl = "1h"

# Rooms a test trims hard, to show a reconnect that cannot be recovered.
[[rooms]]
pattern = "trim:*"
maxlen = 5
`);
      s.env = {
        CHAT_REDIS_URL: `redis://127.0.0.1:${s.redisPort}/`,
        CHAT_STREAMS: streams,
        CHAT_JWT_SECRET: s.secret,
        CHAT_API_KEYS: s.apiKey,
        CHAT_DEV_TOKENS: 'true',
        CHAT_ALLOWED_ORIGINS: '*',
        CHAT_FANOUT_BLOCK: '200ms',
        RUST_LOG: 'warn',
        ...(opts.env ?? {}),
      };
      s.nodes = [];
      for (let i = 0; i < (opts.nodes ?? 2); i++) s.nodes.push(await s.startNode(i));
      s.fanout = s._spawn('fanout', path.join(binDir, 'fanout-worker'), [], { ...s.env, CHAT_FANOUT_CONSUMER: 'js-fanout' });
      return s;
    } catch (e) {
      await s.stop();
      throw e;
    }
  }

  _spawn(name, cmd, args, env) {
    const child = spawn(cmd, args, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = new Proc(name, child);
    this.procs.push(p);
    return p;
  }

  async startNode(i) {
    const port = await freePort();
    const proc = this._spawn(`ingress-${i}`, path.join(binDir, 'ingress'), [], {
      ...this.env, CHAT_LISTEN: `127.0.0.1:${port}`, CHAT_NODE_ID: `js-node-${i}`,
    });
    const http = `http://127.0.0.1:${port}`;
    await until(`ingress ${i} ready`, async () => {
      if (proc.child.exitCode !== null) throw new Error(`ingress exited: ${proc.log}`);
      return (await fetch(`${http}/readyz`)).ok;
    });
    return { proc, port, http, ws: `ws://127.0.0.1:${port}/v1/ws` };
  }

  /** An HS256 token for `user` (signed with `secret`, by default the stack's). */
  token(user, ttlSecs = 3600, extra = {}, secret = this.secret) {
    return mint(secret, { sub: user, exp: Math.floor(Date.now() / 1000) + ttlSecs, rooms: ['*'], ...extra });
  }

  /** Admin HTTP call on node 0 (or the first node still up). */
  async api(method, p, body) {
    const node = this.nodes.find((n) => n.proc.child.exitCode === null && n.proc.child.signalCode === null);
    const r = await fetch(node.http + p, {
      method,
      headers: { authorization: `Bearer ${this.apiKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /** Every stored message of a room, oldest first (admin history pages). */
  async stored(room) {
    const all = [];
    let q = '?limit=100';
    for (;;) {
      const page = await this.api('GET', `/v1/rooms/${encodeURIComponent(room)}/messages${q}`);
      all.unshift(...page.messages);
      if (!page.next) return all;
      q = `?limit=100&before=${page.next.before}&epoch=${page.next.epoch}`;
    }
  }

  async stop() {
    for (const p of [...(this.procs ?? [])].reverse()) await p.stop();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
