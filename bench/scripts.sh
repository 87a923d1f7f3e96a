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
# The append script before conversation events (issue 22), to show what
# a plain message costs now against then, in the same run.
git show 9314983:core/src/scripts/append.lua >"$WORK/append-before.lua"
APPEND_BEFORE=$(load "$WORK/append-before.lua")
NOTIFY=$(load core/src/scripts/notify.lua)
EMPTY=$("${R[@]}" script load "return 1")
TWO_XADD=$("${R[@]}" script load "
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'r', ARGV[1], 'u', ARGV[2], 't', ARGV[3], 'c', ARGV[4], 'k', ARGV[5])
return 1")

# append.lua's arguments (core/src/scripts/append.lua), a fresh client_id per call.
TEXT='a message of about the benchmark text size, 64 bytes or so....'
# append_args NAME room text kind check op target epoch emoji staff: sets array NAME
# (a user's own frame: the mute is checked; slow mode off).
append_args() {
  local -n out=$1
  local room=$2
  out=(8 "chat:room:{$room}:meta" "chat:room:{$room}:log" "chat:room:{$room}:dedup:2:u1:__rand_int__"
    "chat:room:{$room}:state" "chat:room:{$room}:threads" "chat:room:{$room}:sanctions"
    "chat:room:{$room}:slow" 'chat:fanout:{1}'
    "$room" u1 "$3" __rand_int__ "$4" 00000000000000ab 100000 3600000 3600 600 1000000 "$5" "$6" "$7" "$8" "$9" "${10}" 1 0)
}
append_args APPEND_ARGS r1 "$TEXT" user 1 post 0 '' '' 0
append_args DURABLE_ARGS r1 "$TEXT" user 0 post 0 '' '' 0
BEFORE_ARGS=(4 'chat:room:{r0}:meta' 'chat:room:{r0}:log' 'chat:room:{r0}:dedup:2:u1:__rand_int__'
  'chat:fanout:{1}' r0 u1 "$TEXT" __rand_int__ user 00000000000000ab 100000 3600000 3600 600 1000000 1)
# Events act on room r2's messages, N of them by u1; the target is random
# among them (redis-benchmark's __rand_int__ below -r N; 0 is refused).
append_args SEED_ARGS r2 "$TEXT" user 1 post 0 '' '' 0
append_args EDIT_ARGS r2 'an edited text of about the same size as the message, 64 bytes.' edit 1 edit __rand_int__ '' '' 0
append_args REACT_ARGS r2 '' reaction 1 react __rand_int__ '' '👍' 0
append_args REPLY_ARGS r2 "$TEXT" user 1 post __rand_int__ '' '' 0
append_args DELETE_ARGS r2 '' delete 1 delete __rand_int__ '' '' 0
rand_below_n() { redis-benchmark -p "$PORT" -n "$N" -r "$N" -c 4 -P 4 -q "$@" >/dev/null 2>&1; }
event_call() {
  "${R[@]}" config resetstat >/dev/null
  rand_below_n "$@"
  "${R[@]}" info commandstats | tr -d '\r' | grep "^cmdstat_evalsha:" | sed 's/.*usec_per_call=\([0-9.]*\).*/\1/'
}

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
echo "append.lua before events (9314983):    $(per_call evalsha evalsha "$APPEND_BEFORE" "${BEFORE_ARGS[@]}")"
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
# Conversation events (docs/protocol.md), each on one of N messages.
per_call evalsha evalsha "$APPEND" "${SEED_ARGS[@]}" >/dev/null
echo "append.lua, a reply:                  $(event_call evalsha "$APPEND" "${REPLY_ARGS[@]}")"
echo "append.lua, an edit:                  $(event_call evalsha "$APPEND" "${EDIT_ARGS[@]}")"
echo "append.lua, a reaction:               $(event_call evalsha "$APPEND" "${REACT_ARGS[@]}")"
echo "append.lua, a delete (after the edits): $(event_call evalsha "$APPEND" "${DELETE_ARGS[@]}")"
