// Redis memory per stored message, to size Redis (docs/operations.md):
// starts redis-server, one ingress and a fanout worker (debug builds unless
// CHAT_BIN_DIR points at release ones), publishes ROOMS x PER_ROOM messages
// of TEXT_BYTES through the HTTP API, and prints the room stream's MEMORY
// USAGE per entry and Redis' used_memory growth per message (room stream +
// fanout shard stream + dedup records), as JSON.
//   node bench/room-memory.mjs          (from the repository root, after
//   cargo build -p ingress -p fanout-worker and npm ci in clients/js)
import net from 'node:net';
import { Stack } from '../clients/js/test/stack.mjs';

const ROOMS = Number(process.env.ROOMS ?? 10);
const PER_ROOM = Number(process.env.PER_ROOM ?? 2000);
const TEXT_BYTES = Number(process.env.TEXT_BYTES ?? 64);

function redis(port, ...args) {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let buf = '';
    c.on('error', reject);
    c.on('data', (d) => {
      buf += d;
      const m = /^([:+-])(.*)\r\n/.exec(buf) ?? /^\$(\d+)\r\n([\s\S]*)\r\n$/.exec(buf);
      if (!m) return;
      if (buf[0] === '$' && m[2].length < Number(m[1])) return;
      c.destroy();
      resolve(m[2]);
    });
    c.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(''));
  });
}
const used = async (port) => Number(/used_memory:(\d+)/.exec(await redis(port, 'INFO', 'memory'))[1]);

const stack = await Stack.start({ nodes: 1, env: { CHAT_RATE_PER_SEC: '100000', CHAT_RATE_BURST: '100000' } });
try {
  const text = 'x'.repeat(TEXT_BYTES);
  await stack.api('POST', '/v1/rooms/mem:0/messages', { text, user: 'warmup' });
  const before = await used(stack.redisPort);
  for (let r = 0; r < ROOMS; r++) {
    for (let i = 0; i < PER_ROOM; i += 50) {
      const batch = [];
      for (let j = i; j < Math.min(PER_ROOM, i + 50); j++) {
        batch.push(stack.api('POST', `/v1/rooms/mem:${r + 1}/messages`, { text, user: `user-${j % 10}`, kind: 'user' }));
      }
      await Promise.all(batch);
    }
  }
  const after = await used(stack.redisPort);
  const stream = Number(await redis(stack.redisPort, 'MEMORY', 'USAGE', 'chat:room:{mem:1}:log', 'SAMPLES', '0'));
  console.log(JSON.stringify({
    rooms: ROOMS, per_room: PER_ROOM, text_bytes: TEXT_BYTES,
    room_stream_bytes_per_entry: Math.round(stream / PER_ROOM),
    redis_bytes_per_message_all_keys: Math.round((after - before) / (ROOMS * PER_ROOM)),
  }));
} finally {
  await stack.stop();
}
