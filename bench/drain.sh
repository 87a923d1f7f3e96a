#!/usr/bin/env bash
# One shard-stream worker's capacity alone: fills the shard streams with N
# messages (100 rooms, no members, so no push work), then times how long 1
# and then 2 workers take to handle and acknowledge all of them. Shows what
# a second worker adds when that worker is the bottleneck. Stops only what
# it started.
#
#   bench/drain.sh                        # the fanout group, N=200000
#   N=500000 bench/drain.sh
#   WORKER=archive N=50000 bench/drain.sh # the archive group, into an
#                                         # nx-27017 server it starts
#   WORKER=webhook N=20000 bench/drain.sh # the webhooks group, to one local
#                                         # endpoint (node) answering 204
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis
WORKER=${WORKER:-fanout}
case "$WORKER" in fanout|archive|webhook) ;; *) echo "WORKER is fanout, archive or webhook" >&2; exit 2 ;; esac
cargo build --release -q -p "$WORKER-worker"
N=${N:-200000}
SHARDS=8
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
. bench/lib.sh
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
PIDS+=("$!")
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
printf '[fanout]\nshards = %d\n' "$SHARDS" > "$WORK/streams.toml"
export CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/" CHAT_STREAMS="$WORK/streams.toml" RUST_LOG=warn
if [ "$WORKER" = archive ]; then
  start_mongo "$WORK"
  PIDS+=("$MPID")
fi
GROUP=$WORKER
if [ "$WORKER" = webhook ]; then
  # One endpoint for every room, answering 204 at once: the worker's own cost.
  HPORT=$(free_port)
  node -e "require('http').createServer((q, s) => { q.resume(); q.on('end', () => { s.writeHead(204); s.end(); }); }).listen($HPORT, '127.0.0.1')" &
  PIDS+=("$!")
  printf '[fanout]\nshards = %d\n\n[[webhooks.endpoints]]\nname = "bench"\nurl = "http://127.0.0.1:%d/hook"\nsecret_env = "BENCH_HOOK_SECRET"\n' "$SHARDS" "$HPORT" > "$WORK/streams.toml"
  export BENCH_HOOK_SECRET=bench-secret-0123456789
  GROUP=webhooks
fi

# Entries in the shard format the append script writes.
FILL='for i = 1, tonumber(ARGV[1]) do
  local room = i % 100
  local s = room % tonumber(ARGV[2])
  local o = math.floor(i / 100) + 1
  redis.call("XADD", "chat:fanout:{" .. s .. "}", "*", "r", "bench:" .. room, "e", ARGV[3],
    "o", o, "i", o .. "-1", "u", "u" .. (i % 10), "t", "hello from the fanout drain benchmark", "c", "c" .. i, "k", "user")
end'


for workers in 1 2; do
  redis-cli -p "$RPORT" FLUSHALL >/dev/null
  for s in $(seq 0 $((SHARDS - 1))); do
    redis-cli -p "$RPORT" XGROUP CREATE "chat:fanout:{$s}" "$GROUP" 0 MKSTREAM >/dev/null
  done
  # A new epoch per run: the archive never finds a run's messages already written.
  redis-cli -p "$RPORT" EVAL "$FILL" 0 "$N" "$SHARDS" "$(printf '%016x' "$RANDOM$workers")" >/dev/null
  start=$(date +%s.%N)
  WPIDS=()
  for w in $(seq 1 "$workers"); do
    CHAT_FANOUT_CONSUMER="drain-$workers-$w" CHAT_ARCHIVE_CONSUMER="drain-$workers-$w" CHAT_WEBHOOK_CONSUMER="drain-$workers-$w" \
      target/release/"$WORKER"-worker > "$WORK/f$w.log" 2>&1 &
    WPIDS+=("$!"); PIDS+=("$!")
  done
  while [ "$(group_backlog "$RPORT" "$GROUP" "$SHARDS")" -gt 0 ]; do sleep 0.05; done
  end=$(date +%s.%N)
  # The workers' own CPU (utime + stime, in clock ticks), before they stop.
  ticks=0
  for p in "${WPIDS[@]}"; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  for p in "${WPIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  python3 -c "import json; s=$end-$start; print(json.dumps({'worker': '$WORKER', 'workers': $workers, 'messages': $N, 'seconds': round(s, 2), 'msgs_per_s': round($N / s), 'worker_cpu_us_per_msg': round($ticks * 10000 / $N, 1)}))"
done
