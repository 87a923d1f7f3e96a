#!/usr/bin/env bash
# Redis's own cost of our Lua scripts, apart from everything else: an idle
# redis-server on a free port, the product's append.lua and notify.lua
# loaded as the services load them, and redis-benchmark calling each (4
# clients, pipelines of 4). Prints µs per call from INFO commandstats (time
# inside Redis, commands the script runs included), next to the bare parts
# they are built from. The notify call is one batch of three rooms with one
# message each, ten members each, all present (the benchmark shapes' case)
# and then with one member absent in every room (the full path).
#
#   bench/scripts.sh            # 100,000 calls each
#   N=20000 bench/scripts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
scripts/ensure-redis >/dev/null
N=${N:-100000}
WORK=$(mktemp -d)
PORT=$(free_port)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
RPID=$!
trap 'kill "$RPID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
R=(redis-cli -p "$PORT")
until "${R[@]}" ping >/dev/null 2>&1; do sleep 0.1; done

# µs per call of the command named $1 after running the rest as a benchmark.
per_call() {
  local name=$1
  shift
  "${R[@]}" config resetstat >/dev/null
  redis-benchmark -p "$PORT" -n "$N" -r 100000000 -c 4 -P 4 -q "$@" >/dev/null 2>&1
  "${R[@]}" info commandstats | tr -d '\r' | grep "^cmdstat_$name:" | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/'
}
load() { "${R[@]}" script load "$(cat "$1")"; }

APPEND=$(load core/src/scripts/append.lua)
NOTIFY=$(load core/src/scripts/notify.lua)
EMPTY=$("${R[@]}" script load "return 1")
TWO_XADD=$("${R[@]}" script load "
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'r', ARGV[1], 'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5])
return 1")

# append.lua's arguments (core/src/scripts/append.lua), a fresh client_id per call.
APPEND_ARGS=(4 'chat:room:{r1}:meta' 'chat:room:{r1}:log' 'chat:room:{r1}:dedup:2:u1:__rand_int__'
  'chat:fanout:{1}' r1 u1 'a message of about the benchmark text size, 64 bytes or so....'
  __rand_int__ user 00000000000000ab 100000 3600000 3600 600 1000000 1)
# The same with the store declared durable (CHAT_REDIS_DURABLE: no writer check).
DURABLE_ARGS=("${APPEND_ARGS[@]}")
DURABLE_ARGS[${#DURABLE_ARGS[@]}-1]=0

present() {
  "${R[@]}" del "chat:room:{$1}:allpresent" >/dev/null
  for u in $(seq 1 10); do
    "${R[@]}" sadd "chat:room:{$1}:members" "u$u" >/dev/null
    "${R[@]}" zadd "chat:room:{$1}:presence" 9999999999999 "n1|u$u" >/dev/null
  done
}
NOTIFY_ARGS=(2 chat:notify chat:notify:due 30000 100000 512 3660000 0)
for r in r1 r2 r3; do
  present "$r"
  NOTIFY_ARGS+=("$r" "chat:room:{$r}:members" "chat:room:{$r}:joined" "chat:room:{$r}:presence"
    "chat:room:{$r}:allpresent" "chat:room:{$r}:summary:count" "chat:room:{$r}:push:" 1
    u1 __rand_int__ 00000000000000ab 'a message' user)
done

echo "redis: $(redis-server --version | cut -d' ' -f3), $N calls each, µs per call inside Redis"
echo "empty script:                         $(per_call evalsha evalsha "$EMPTY" "${APPEND_ARGS[@]}")"
echo "script of the two XADDs alone:        $(per_call evalsha evalsha "$TWO_XADD" "${APPEND_ARGS[@]}")"
echo "append.lua:                           $(per_call evalsha evalsha "$APPEND" "${APPEND_ARGS[@]}")"
echo "append.lua, CHAT_REDIS_DURABLE:       $(per_call evalsha evalsha "$APPEND" "${DURABLE_ARGS[@]}")"
echo "notify.lua, 3 rooms, all present:     $(per_call evalsha evalsha "$NOTIFY" "${NOTIFY_ARGS[@]}")"
# One member of each room absent: no marker, the whole path every call.
# (As a leave does: the entry, then the room's marker.)
for r in r1 r2 r3; do
  "${R[@]}" zrem "chat:room:{$r}:presence" "n1|u10" >/dev/null
  "${R[@]}" del "chat:room:{$r}:allpresent" >/dev/null
done
echo "notify.lua, 3 rooms, one absent each: $(per_call evalsha evalsha "$NOTIFY" "${NOTIFY_ARGS[@]}")"
echo "XADD alone (the peer's append):       $(per_call xadd xadd 'chat:peer' MAXLEN '~' 100000 '*' u u1 t 'a message of about the benchmark text size, 64 bytes or so....')"
