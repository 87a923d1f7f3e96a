// The client as an app developer installs it: the committed chat.js and
// chat.d.ts are what `tsc` builds from src/chat.ts; `npm pack` makes a
// tarball that installs into a scratch project, where a strict TypeScript
// program compiles against the published types and runs against the real
// stack.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, mkdirSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Stack } from './stack.mjs';

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsc = path.join(pkg, 'node_modules/typescript/bin/tsc');
const run = (cmd, args, cwd, env = {}) =>
  execFileSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });

test('chat.js and chat.d.ts are the build of src/chat.ts (run npm run build)', () => {
  const out = mkdtempSync(path.join(tmpdir(), 'chat-build-'));
  run(process.execPath, [tsc, '-p', 'tsconfig.json', '--outDir', out], pkg);
  for (const f of ['chat.js', 'chat.d.ts']) {
    assert.equal(readFileSync(path.join(pkg, f), 'utf8'), readFileSync(path.join(out, f), 'utf8'), `${f} is stale: npm run build`);
  }
});

test('the packed tarball installs, a strict TypeScript program compiles against it and runs', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'chat-app-'));
  const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], pkg));
  const files = packed[0].files.map((f) => f.path).sort();
  assert.deepEqual(files, ['LICENSE', 'README.md', 'chat.d.ts', 'chat.js', 'package.json']);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  // The tarball from the file; ws and the type packages from this package's
  // own node_modules (no registry needed).
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', path.join(dir, packed[0].filename)], dir);
  mkdirSync(path.join(dir, 'node_modules/@types'), { recursive: true });
  for (const dep of ['ws', '@types/ws', '@types/node', 'undici-types']) {
    symlinkSync(path.join(pkg, 'node_modules', dep), path.join(dir, 'node_modules', dep));
  }
  copyFileSync(path.join(pkg, 'examples/typed.ts'), path.join(dir, 'typed.ts'));
  run(process.execPath, [tsc, '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--types', 'node', '--outDir', 'out', 'typed.ts'], dir);

  const stack = await Stack.start({ nodes: 1 });
  t.after(() => stack.stop());
  const out = run(process.execPath, ['out/typed.js'], dir, { CHAT_WS: stack.nodes[0].ws, CHAT_TOKEN: stack.token('tess') });
  const r = JSON.parse(out.trim().split('\n').at(-1));
  assert.deepEqual(r, {
    epoch: true,
    offset: 1,
    first: 'hello from TypeScript',
    seen: 1,
    history: ['hello from TypeScript'],
    refused: 'bad_request',
    states: ['connecting', 'connected'],
  });
});

test('a program that misuses the API does not compile under --strict', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'chat-bad-'));
  mkdirSync(path.join(dir, 'node_modules/@chat'), { recursive: true });
  symlinkSync(pkg, path.join(dir, 'node_modules/@chat/client'));
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'bad', private: true, type: 'module' }));
  writeFileSync(path.join(dir, 'bad.ts'), [
    "import { ChatClient } from '@chat/client';",
    "const chat = new ChatClient({ url: 'ws://x/v1/ws', token: 't' });",
    "chat.room('r').on('message', (m) => { const n: number = m.text; void n; });",
    "chat.on('nonsense', () => {});",
  ].join('\n'));
  let errors = '';
  try {
    run(process.execPath, [tsc, '--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', 'bad.ts'], dir);
  } catch (e) {
    errors = String(e.stdout);
  }
  assert.match(errors, /Type 'string' is not assignable to type 'number'/);
  assert.match(errors, /"nonsense"/);
});
