// The side-by-side table of a bench/compare.sh run.
//   node bench/compare-table.mjs DIR                      -> markdown on stdout
//   node bench/compare-table.mjs DIR --update FILE.md     -> replaces the part of
//     FILE.md between the compare markers (appends them when missing)
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';

const [dir, flag, target] = process.argv.slice(2);
const load = (f) => { try { return JSON.parse(readFileSync(path.join(dir, f), 'utf8')); } catch { return null; } };
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
const find = (re) => files.filter((f) => re.test(f)).map((f) => [f, load(f)]).filter(([, r]) => r && r.shape && r.sent !== undefined);

const serverCpu = (r) => Object.entries(r.cpu ?? {}).filter(([n]) => n !== 'loadgen').reduce((a, [, v]) => a + v.seconds, 0);
const usPerDelivery = (r) => (r.delivered ? (serverCpu(r) * 1e6) / r.delivered : null);
// Redis is the one process every node shares: its CPU per message sent.
const redisUsPerMessage = (r) => (r.sent && r.cpu?.redis?.seconds != null ? (r.cpu.redis.seconds * 1e6) / r.sent : null);
const f = (x, d = 1) => (x === null || x === undefined || Number.isNaN(x) ? '-' : Number(x).toFixed(d));
const int = (x) => (x === null || x === undefined ? '-' : Number(x).toLocaleString('en-US'));
const errs = (r) => Object.entries(r.errors ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
const cpuList = (r) => Object.entries(r.cpu ?? {}).map(([n, v]) => `${n} ${v.pct_of_core}%`).join(', ');

function row(shape, side, file, r) {
  return `| ${shape} | ${side} | ${int(r.deliveries_per_s)} | ${f(r.latency_ms.p50, 2)} / ${f(r.latency_ms.p99, 2)} | ${int(r.lost)} | ${int(r.duplicates)} | ${int(r.out_of_order)} | ${r.offset_gaps ?? '-'} | ${f(usPerDelivery(r))} | ${f(redisUsPerMessage(r))} | ${r.loadgen_saturated ? 'yes' : 'no'} | \`${file}\` |`;
}

const out = [];
const env = existsSync(path.join(dir, 'env.txt')) ? readFileSync(path.join(dir, 'env.txt'), 'utf8').trim() : '';
out.push(`Run of \`bench/compare.sh\`; raw JSON in \`${path.relative(process.cwd(), dir)}\`.`, '', '```', env, '```', '');
out.push('| shape | side | deliveries/s | p50 / p99 ms | lost | dup | out of order | offset gaps | server CPU µs per delivery | Redis CPU µs per message | loadgen saturated | raw |');
out.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
const pairs = {};
for (const [shape, re] of [['(a) 100×10, 2,000 msg/s', /-a-100x10-r2000\.json$/], ['(b) 10×100, 300 msg/s', /-b-10x100-r300\.json$/]]) {
  for (const [file, r] of find(re)) {
    const side = r.target === 'socketio' ? 'Socket.IO' : 'ours';
    out.push(row(shape, side, file, r));
    (pairs[shape] ??= {})[side] = r;
  }
}
const cmax = {};
for (const [side, file] of [['ours', 'ours-c-max.json'], ['Socket.IO', 'socketio-c-max.json']]) {
  const m = load(file);
  if (!m) continue;
  cmax[side] = m;
  const r = m.last_good_result ? load(m.last_good_result) : null;
  if (r) out.push(row(`(c) 100×10 at ${int(m.last_good_rate)} msg/s (highest that held)`, side, m.last_good_result, r));
  out.push(`| (c) stopped at ${int(m.stop_rate)} msg/s | ${side} | ${m.stop_reason} | | | | | | | | | \`${file}\` |`);
}
out.push('');
const over = find(/-overload-/);
if (over.length) {
  out.push('Overload (100×10; 10 s of sends, 15 s drain):', '');
  out.push('| side | rate msg/s | sent | acked | delivered / expected | lost | dup | out of order | offset gaps | p99 ms | errors and closes | CPU |');
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const [, r] of over.sort((x, y) => x[1].shape.rate - y[1].shape.rate)) {
    out.push(`| ${r.target === 'socketio' ? 'Socket.IO' : 'ours'} | ${int(r.shape.rate)} | ${int(r.sent)} | ${int(r.acked)} | ${int(r.delivered)} / ${int(r.expected_deliveries)} | ${int(r.lost)} | ${int(r.duplicates)} | ${int(r.out_of_order)} | ${r.offset_gaps ?? '-'} | ${f(r.latency_ms.p99, 0)} | ${errs(r)} | ${cpuList(r)} |`);
  }
  out.push('');
}
// Issue 17's bar, computed from this run: p50 and p99 at most the peer's,
// server CPU per delivery at most 0.75x, Redis CPU per message at most the
// peer's, (c) at least 1.5x.
const bar = [];
for (const [shape, p] of Object.entries(pairs)) {
  if (!p.ours || !p['Socket.IO']) continue;
  const o = p.ours, s = p['Socket.IO'];
  const clean = o.lost === 0 && o.duplicates === 0 && o.out_of_order === 0 && !o.offset_gaps;
  bar.push(`- ${shape}: ${clean ? 'no' : '**some**'} loss/duplicates/reorders/gaps; p50 ${f(o.latency_ms.p50, 2)} vs ${f(s.latency_ms.p50, 2)} ms (${f(o.latency_ms.p50 / s.latency_ms.p50, 2)}×, bar ≤ 1×); p99 ${f(o.latency_ms.p99, 2)} vs ${f(s.latency_ms.p99, 2)} ms (${f(o.latency_ms.p99 / s.latency_ms.p99, 2)}×, bar ≤ 1×); CPU per delivery ${f(usPerDelivery(o))} vs ${f(usPerDelivery(s))} µs (${f(usPerDelivery(o) / usPerDelivery(s), 2)}×, bar ≤ 0.75×); Redis CPU per message ${f(redisUsPerMessage(o))} vs ${f(redisUsPerMessage(s))} µs (${f(redisUsPerMessage(o) / redisUsPerMessage(s), 2)}×, bar ≤ 1×)`);
}
if (cmax.ours && cmax['Socket.IO']) {
  const a = cmax.ours.last_good_rate ?? 0, b = cmax['Socket.IO'].last_good_rate ?? 0;
  bar.push(`- (c): ${int(a)} vs ${int(b)} msg/s (${b ? f(a / b, 2) : '-'}×, bar ≥ 1.5×)`);
}
if (bar.length) out.push('Against the bar (ours vs Socket.IO, same run):', '', ...bar, '');
const table = out.join('\n');

if (flag === '--update') {
  const begin = '<!-- compare:begin -->', end = '<!-- compare:end -->';
  let doc = existsSync(target) ? readFileSync(target, 'utf8') : '';
  const block = `${begin}\n${table}\n${end}`;
  if (doc.includes(begin) && doc.includes(end)) {
    doc = doc.slice(0, doc.indexOf(begin)) + block + doc.slice(doc.indexOf(end) + end.length);
  } else {
    doc += `\n## Side by side with Socket.IO (bench/compare.sh)\n\n${block}\n`;
  }
  writeFileSync(target, doc);
} else {
  console.log(table);
}
