#!/usr/bin/env bash
# Runs the benchmark shapes against our stack as separate processes on this
# machine: one redis-server, two ingress nodes, two fanout workers, and the
# Rust load generator (`chatctl bench`). Stops only the processes it started,
# by PID. Results: one JSON file per shape in $OUT (default bench/results).
#
#   bench/run.sh            # shapes a, b, c, d
#   bench/run.sh a b        # some of them
#   FANOUT=1 bench/run.sh c # shape c with one fanout worker instead of two
#   ARCHIVE=1 bench/run.sh a # also an archive worker into nx-27017, and its lag
#   REDIS_ARGS="--appendonly yes --appendfsync always" bench/run.sh a  # Redis durability settings
#   REPLICA=1 CHAT_REDIS_ACK_REPLICAS=1 bench/run.sh a  # a replica, and acks that wait for it
set -euo pipefail
# 10,000 idle sockets need as many descriptors on each side.
ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/.."
scripts/ensure-redis
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ingress -p fanout-worker -p archive-worker -p chatctl
OUT=${OUT:-bench/results}
DURATION=${DURATION:-20s}
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
# KEEP_LOGS=1 copies the services' logs into $OUT/logs before the work directory goes.
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$OUT/logs"; cp "$WORK"/*.log "$OUT/logs/" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

. bench/lib.sh
export CHAT_JWT_SECRET="bench-secret-$(date +%s%N)"
export CHAT_API_KEYS="bench-api-key-0123456789"
export CHAT_RATE_PER_SEC=1000 CHAT_RATE_BURST=1000
export RUST_LOG=warn
if [ -n "${ARCHIVE:-}" ]; then
  start_mongo "$WORK"
  PIDS+=("$MPID")
fi
# SERVICE_THREADS sets the services' tokio worker threads (default: one per core).
# (`env` execs, so $! stays the service's own PID.)
THREADS=()
[ -n "${SERVICE_THREADS:-}" ] && THREADS=("TOKIO_WORKER_THREADS=$SERVICE_THREADS")

# Each shape gets a fresh stack and an empty Redis: the users of one shape
# would otherwise stay behind as offline members of the next shape's rooms
# (the same room names) and add push work that shape does not ask for.
start_stack() {
  { read -r RPORT; read -r P1; read -r P2; read -r QPORT; } < <(free_ports 4)
  # REDIS_ARGS come last, so they override (e.g. "--appendonly yes --appendfsync always").
  # shellcheck disable=SC2086
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" ${REPLICA:+--repl-diskless-sync-delay 0} ${REDIS_ARGS:-} &
  RPID=$!; PIDS+=("$RPID")
  until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done

  STACK=("$RPID")
  PIDARG_Q=""
  if [ -n "${REPLICA:-}" ]; then
    # REPLICA=1: a replica of it (its CPU is reported as `replica`).
    mkdir -p "$WORK/replica"
    redis-server --port "$QPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/replica" --logfile "$WORK/replica.log" --replicaof 127.0.0.1 "$RPORT" ${REDIS_ARGS:-} &
    QPID=$!; PIDS+=("$QPID"); STACK+=("$QPID"); PIDARG_Q=",replica=$QPID"
    # Online for the primary (what WAIT counts) only after the replica's first ack, up to a second after its link is up.
    until redis-cli -p "$RPORT" info replication 2>/dev/null | grep -Eq 'slave0:.*state=online,offset=[1-9]'; do sleep 0.1; done
  fi
  export CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/"
  CHAT_LISTEN="127.0.0.1:$P1" CHAT_NODE_ID=n1 env "${THREADS[@]}" target/release/ingress > "$WORK/i1.log" 2>&1 & I1=$!; PIDS+=("$I1")
  CHAT_LISTEN="127.0.0.1:$P2" CHAT_NODE_ID=n2 env "${THREADS[@]}" target/release/ingress > "$WORK/i2.log" 2>&1 & I2=$!; PIDS+=("$I2")
  # FANOUT (default 2) fanout workers share the `fanout` group.
  PIDARG_F=""; FS=""
  for n in $(seq 1 "${FANOUT:-2}"); do
    env "${THREADS[@]}" target/release/fanout-worker > "$WORK/f$n.log" 2>&1 & F=$!; PIDS+=("$F")
    PIDARG_F="$PIDARG_F,fanout$n=$F"; FS="$FS $F"
  done
  if [ -n "${ARCHIVE:-}" ]; then
    env "${THREADS[@]}" target/release/archive-worker > "$WORK/archive.log" 2>&1 & AW=$!; PIDS+=("$AW")
  fi
  wait_ready "$P1" "$I1"
  wait_ready "$P2" "$I2"
  URLS="ws://127.0.0.1:$P1/v1/ws,ws://127.0.0.1:$P2/v1/ws"
  PIDARG="ingress1=$I1,ingress2=$I2$PIDARG_F,redis=$RPID$PIDARG_Q"
  STACK+=("$I1" "$I2" $FS ${AW:-})
}

stop_stack() {
  local p keep=()
  stop_pids "${STACK[@]}"
  # Forget them, so the exit trap never signals a reused PID.
  for p in "${PIDS[@]}"; do
    case " ${STACK[*]} " in *" $p "*) ;; *) keep+=("$p") ;; esac
  done
  PIDS=(${keep[@]+"${keep[@]}"})
}
bench() { timeout 600 target/release/chatctl bench --urls "$URLS" --pids "$PIDARG" "$@"; }

for shape in "${@:-a b c d}"; do
  for s in $shape; do
    start_stack
    # Redis commands per shape (`INFO commandstats`), beside its JSON.
    redis-cli -p "$RPORT" config resetstat >/dev/null
    if [ -n "${ARCHIVE:-}" ]; then
      # The archive group's backlog (entries not yet written) every 0.5 s
      # (each sample is eight redis-cli calls: sampling faster costs the box).
      ( while :; do echo "$(date +%s.%N) $(group_backlog "$RPORT" archive 8)"; sleep 0.5; done ) > "$WORK/$s-backlog.txt" &
      SAMPLER=$!
      A_CPU0=$(awk '{print $14 + $15}' "/proc/$AW/stat")
    fi
    case "$s" in
      a) bench --rooms 100 --members 10 --rate 2000 --duration "$DURATION" > "$OUT/a-100x10-r2000.json" ;;
      b) bench --rooms 10 --members 100 --rate 300 --duration "$DURATION" > "$OUT/b-10x100-r300.json" ;;
      c) bench --rooms 100 --members 10 --rate "${C_START:-2000}" --step "${C_STEP:-500}" --max-rate 40000 --duration 10s --find-max > "$OUT/c-find-max.json" ;;
      d) timeout 600 target/release/chatctl bench --urls "ws://127.0.0.1:$P1/v1/ws" --connections 10000 --pids "ingress1=$I1" > "$OUT/d-10000-idle.json" ;;
      *) echo "unknown shape $s" >&2; exit 2 ;;
    esac
    if [ -n "${ARCHIVE:-}" ]; then
      t0=$(date +%s.%N)
      while [ "$(group_backlog "$RPORT" archive 8)" -gt 0 ]; do sleep 0.1; done
      catchup=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))")
      kill "$SAMPLER" 2>/dev/null || true
      A_CPU1=$(awk '{print $14 + $15}' "/proc/$AW/stat")
      RUNJSON=$(ls "$OUT"/"$s"-*.json | grep -v archive | head -1)
      python3 - "$WORK/$s-backlog.txt" "$RUNJSON" "$A_CPU0" "$A_CPU1" "$catchup" > "$OUT/$s-archive.json" <<'PY'
import json, sys
samples = [int(l.split()[1]) for l in open(sys.argv[1]) if len(l.split()) == 2]
try:
    run = json.load(open(sys.argv[2]))
    rate, window = run["shape"]["rate"], run["shape"]["duration"] + run["shape"]["warmup"]
except (OSError, KeyError, ValueError):
    rate, window = 0, 0
print(json.dumps({
    "samples": len(samples),
    "backlog_max": max(samples, default=0),
    "backlog_mean": round(sum(samples) / len(samples), 1) if samples else 0,
    # At the shape's send rate, entries behind are this many seconds behind.
    "lag_max_s": round(max(samples, default=0) / rate, 3) if rate else None,
    "lag_mean_s": round(sum(samples) / len(samples) / rate, 3) if rate and samples else None,
    "catch_up_after_run_s": float(sys.argv[5]),
    "archive_worker_cpu_pct_of_core": round((int(sys.argv[4]) - int(sys.argv[3])) / 100 / window * 100) if window else None,
}))
PY
    fi
    redis-cli -p "$RPORT" info commandstats | tr -d '\r' | grep '^cmdstat' > "$OUT/$s-commandstats.txt"
    echo "shape $s: $(cat "$OUT"/"$s"-*.json | head -c 400)"
    stop_stack
  done
done
