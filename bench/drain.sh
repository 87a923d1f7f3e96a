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
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-redis
WORKER=${WORKER:-fanout}
case "$WORKER" in fanout|archive) ;; *) echo "WORKER is fanout or archive" >&2; exit 2 ;; esac
cargo build --release -q -p "$WORKER-worker"
N=${N:-200000}
SHARDS=8
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
PIDS+=("$!")
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
printf '[fanout]\nshards = %d\n' "$SHARDS" > "$WORK/streams.toml"
export CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/" CHAT_STREAMS="$WORK/streams.toml" RUST_LOG=warn
if [ "$WORKER" = archive ]; then
  scripts/ensure-mongo
  NX=$(command -v nx-27017 || echo "$HOME/.cache/chat-nx-27017/bin/nx-27017")
  MPORT=$(free_port)
  "$NX" --db "$WORK/archive.db" --host 127.0.0.1 -p "$MPORT" --log-file "$WORK/nx.log" --pid-file "$WORK/nx.pid" > /dev/null 2>&1 &
  PIDS+=("$!")
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $MPORT))" 2>/dev/null; do sleep 0.1; done
  export CHAT_MONGODB_URL="mongodb://127.0.0.1:$MPORT/?directConnection=true"
fi

# Entries in the shard format the append script writes.
FILL='for i = 1, tonumber(ARGV[1]) do
  local room = i % 100
  local s = room % tonumber(ARGV[2])
  local o = math.floor(i / 100) + 1
  redis.call("XADD", "chat:fanout:{" .. s .. "}", "*", "r", "bench:" .. room, "e", "00000000000000ab",
    "o", o, "i", o .. "-1", "u", "u" .. (i % 10), "t", "hello from the fanout drain benchmark", "c", "c" .. i, "k", "user")
end'

lag() {
  local total=0
  for s in $(seq 0 $((SHARDS - 1))); do
    # XINFO GROUPS: lag and pending of the worker's group (Redis 7).
    local v
    v=$(redis-cli -p "$RPORT" --no-raw XINFO GROUPS "chat:fanout:{$s}" 2>/dev/null |
      awk -v g="\"$WORKER\"" '$NF == g {mine = 1} /"name"/ && $NF != g {mine = 0} mine && /"lag"|"pending"/ {getline; t += $NF} END {print t + 0}')
    total=$((total + v))
  done
  echo "$total"
}

for workers in 1 2; do
  redis-cli -p "$RPORT" FLUSHALL >/dev/null
  for s in $(seq 0 $((SHARDS - 1))); do
    redis-cli -p "$RPORT" XGROUP CREATE "chat:fanout:{$s}" "$WORKER" 0 MKSTREAM >/dev/null
  done
  redis-cli -p "$RPORT" EVAL "$FILL" 0 "$N" "$SHARDS" >/dev/null
  start=$(date +%s.%N)
  WPIDS=()
  for w in $(seq 1 "$workers"); do
    # (Each run archives into a database of its own: no upsert finds its document.)
    CHAT_FANOUT_CONSUMER="drain-$workers-$w" CHAT_ARCHIVE_CONSUMER="drain-$workers-$w" CHAT_MONGODB_DB="drain$workers" \
      target/release/"$WORKER"-worker > "$WORK/f$w.log" 2>&1 &
    WPIDS+=("$!"); PIDS+=("$!")
  done
  while [ "$(lag)" -gt 0 ]; do sleep 0.05; done
  end=$(date +%s.%N)
  for p in "${WPIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  python3 -c "import json; s=$end-$start; print(json.dumps({'worker': '$WORKER', 'workers': $workers, 'messages': $N, 'seconds': round(s, 2), 'msgs_per_s': round($N / s)}))"
done
