#!/usr/bin/env bash
# Hostile load against one ingress node (a release process on a real Redis),
# the figures of docs/operations.md "Limits and abuse":
#   - slow: a node started with N descriptors (`ulimit -n N`) under K
#     connections that send a request head and never finish it (`hold`: as
#     the issue's repro; `churn`: each one the node closes is reopened at
#     once), while /readyz and a user's connect-auth-join-send-ack are
#     probed ten times a second;
#   - hog: sockets with a 4 KiB receive buffer that ask for 90 history pages
#     of ~2.4 MB each and never read: the node's memory per such socket.
# Stops only what it started, by PID. Results: one JSON file per run in $OUT.
#
#   bench/abuse.sh                    # N = 256 and 1024, K = 4 N; 20 hog sockets
#   DESCRIPTORS="256" SLOW=2000 bench/abuse.sh
set -euo pipefail
# The attacker's own sockets.
ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/.."
scripts/ensure-redis
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ingress -p chatctl
OUT=${OUT:-bench/results}
DURATION=${DURATION:-20s}
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { stop_pids "${PIDS[@]}"; rm -rf "$WORK"; }
trap cleanup EXIT

. bench/lib.sh
export CHAT_JWT_SECRET="abuse-secret-$(date +%s%N)"
export CHAT_API_KEYS="abuse-api-key-0123456789"
export RUST_LOG=warn

start_node() { # $1: descriptor limit ("" for the default)
  { read -r RPORT; read -r PORT; } < <(free_ports 2)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
  RPID=$!; PIDS+=("$RPID")
  until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
  if [ -n "$1" ]; then
    (ulimit -n "$1" && CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/" CHAT_LISTEN="127.0.0.1:$PORT" exec target/release/ingress) > "$WORK/ingress.log" 2>&1 &
  else
    CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/" CHAT_LISTEN="127.0.0.1:$PORT" target/release/ingress > "$WORK/ingress.log" 2>&1 &
  fi
  IPID=$!; PIDS+=("$IPID")
  wait_ready "$PORT" "$IPID"
}

stop_node() { stop_pids "$IPID" "$RPID"; }

for n in ${DESCRIPTORS:-256 1024}; do
  k=${SLOW:-$((4 * n))}
  for mode in hold churn; do
    start_node "$n"
    flag=(); [ "$mode" = churn ] && flag=(--churn)
    echo "== slow ($mode): $k slow connections against a node with $n descriptors =="
    target/release/chatctl abuse slow --addr "127.0.0.1:$PORT" --connections "$k" "${flag[@]}" \
      --duration "$DURATION" --pid "$IPID" | tee "$OUT/abuse-slow-$mode-n$n-k$k.json"
    echo "accept warnings in the node's log: $(grep -c 'accept failed' "$WORK/ingress.log" || true)"
    stop_node
  done
done

start_node ""
echo "== hog: ${HOG:-20} sockets that ask for history and never read =="
CHAT_API_KEY="$CHAT_API_KEYS" target/release/chatctl abuse hog --addr "127.0.0.1:$PORT" \
  --sockets "${HOG:-20}" --pid "$IPID" | tee "$OUT/abuse-hog.json"
stop_node
