// A typical program against the published types, compiled with
// `tsc --strict` by test/package.test.mjs: connect, a room's own events,
// send, history, a typed error. Run: CHAT_WS=ws://... CHAT_TOKEN=... node typed.js
import { ChatClient, ChatError, type Ack, type Message, type StateEvent } from '@chat/client';
import WebSocket from 'ws';

const url = process.env.CHAT_WS ?? 'ws://127.0.0.1:8080/v1/ws';
const token = process.env.CHAT_TOKEN ?? '';

async function main(): Promise<void> {
  const chat = new ChatClient({ url, token: async () => token, WebSocket });
  const states: StateEvent['state'][] = [];
  chat.on('state', (s) => states.push(s.state));
  const room = chat.room('typed:demo');
  const seen: Message[] = [];
  const got = new Promise<Message>((resolve) => room.once('message', resolve));
  room.on('message', (m) => seen.push(m));
  chat.connect();
  const joined = await room.join();
  const ack: Ack = await room.send('hello from TypeScript');
  const first = await got;
  const page = await room.history({ limit: 10 });
  let refused = '';
  try {
    await chat.send('typed:demo', '');
  } catch (e) {
    if (e instanceof ChatError) refused = e.code;
  }
  console.log(JSON.stringify({
    epoch: joined.epoch === ack.epoch,
    offset: ack.offset,
    first: first.text,
    seen: seen.length,
    history: page.messages.map((m) => m.text),
    refused,
    states,
  }));
  chat.close();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
