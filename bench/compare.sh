#!/usr/bin/env bash
# Side by side with the Socket.IO peer (../shared/peers), in one run on this
# box: the shared Node load generator drives our stack (--target chatv1) and
# the peer (--target socketio) through the same shapes, with the same checks
# and the CPU of every server process. Writes the raw JSON into $OUT and the
# table into docs/benchmarks.md (between the compare markers).
#
#   bench/compare.sh                 # shapes a b c overload, both sides
#   SHAPES="a b" bench/compare.sh    # some of them
#   SIDES=ours bench/compare.sh      # one side only (ours | peer)
#   SESSIONS=0 bench/compare.sh      # our clients without the session handoff
#   INGRESS_THREADS= bench/compare.sh # each ingress node a thread per core
#
# Each ingress node gets INGRESS_THREADS tokio worker threads, by default
# the cores divided by the two nodes (at least one): the threads of the
# processes on a host add up to its cores, as docs/operations.md advises
# (the peer's two Node processes are one thread each). Empty: tokio's
# default, a thread per core per node. Fanout workers are one thread always.
#
# Our clients use the session handoff by default, as production does: each
# token carries a `sid` the generator registered with PUT /v1/sessions/{sid}
# (its --sessions, with bench/loadgen-sessions.patch). SESSIONS=0 leaves it out.
#
# Ours: two ingress nodes, two fanout workers and one redis-server, release
# builds, separate processes. Peer: ../shared/peers/run-socketio.sh (two
# Socket.IO nodes on one redis-server). Overload runs at 8,000 msg/s and at
# twice our highest sustainable rate from (c). Stops only what it started,
# by PID.
set -euo pipefail
ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS_SRC=${PEERS_SRC:-$ROOT/../shared/peers}
SHAPES=${SHAPES:-a b c overload}
SIDES=${SIDES:-ours peer}
INGRESS_THREADS=${INGRESS_THREADS-$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))}
INGRESS_ENV=()
[ -n "$INGRESS_THREADS" ] && INGRESS_ENV=("TOKIO_WORKER_THREADS=$INGRESS_THREADS")
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-2}
DRAIN=${DRAIN:-5}
STEP_DURATION=${STEP_DURATION:-10}
STEPS=${STEPS:-2000 3000 4000 5000 6000 8000 12000 16000}
P99_LIMIT_MS=${P99_LIMIT_MS:-50}
OVERLOAD_RATE=${OVERLOAD_RATE:-8000}
SESSIONS=${SESSIONS:-1}
SESSION_ARGS=()
[ "$SESSIONS" = 0 ] || SESSION_ARGS=(--api-key compare-api-key-0123456789 --sessions)
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
OUT=${OUT:-bench/results/compare-$STAMP}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

scripts/ensure-redis
[ -d "$PEERS_SRC/loadgen" ] || { echo "no peer harness at $PEERS_SRC (set PEERS_SRC)" >&2; exit 2; }
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p ingress -p fanout-worker

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A writable copy of the peer harness, with its Node packages.
cp -r "$PEERS_SRC" "$WORK/peers" && chmod -R u+w "$WORK/peers"
# The generator's fix for --sessions (registers them from a worker thread
# before connecting; see the patch's comment and docs/benchmarks.md), until
# the shared copy has it. Skipped when it is already there.
if ! grep -q registerSessions "$WORK/peers/loadgen/loadgen.js"; then
  (cd "$WORK/peers" && git apply "$ROOT/bench/loadgen-sessions.patch")
fi
(cd "$WORK/peers/loadgen" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$WORK/peers/socketio" && npm ci --no-audit --no-fund --loglevel=error)
LOADGEN="$WORK/peers/loadgen/loadgen.js"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "node: $(node -v)"
  echo "redis: $(redis-server --version)"
  echo "ours: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' ':!docs' || echo ' + uncommitted changes'), release build; 2 ingress + 2 fanout + 1 redis; ingress threads: ${INGRESS_THREADS:-one per core} each"
  echo "our clients: $([ "$SESSIONS" = 0 ] && echo 'no sessions' || echo 'session handoff (--sessions)')"
  echo "shapes: $SHAPES; duration ${DURATION}s, warmup ${WARMUP}s, drain ${DRAIN}s, steps ($STEPS) of ${STEP_DURATION}s, p99 limit ${P99_LIMIT_MS} ms"
} > "$OUT/env.txt"

. bench/lib.sh

# verdict FILE -> why the step failed (empty when it held)
verdict() {
  node -e '
    const r = require(process.argv[1]); const lim = Number(process.argv[2]); const why = [];
    if (r.lost !== 0) why.push(`lost ${r.lost}`);
    if (r.latency_ms.p99 === null || r.latency_ms.p99 > lim) why.push(`p99 ${r.latency_ms.p99} ms > ${lim}`);
    if (r.loadgen_saturated) why.push(`loadgen saturated (${r.saturation_reasons.join("; ")})`);
    process.stdout.write(why.join(", "));' "$1" "$P99_LIMIT_MS"
}

# Each shape gets a fresh stack and an empty Redis: state left by one shape
# (the last shape's users, now offline members of the same room names) would
# add push work the next shape does not ask for and the peer never does.
start_ours() {
  { read -r RPORT; read -r P1; read -r P2; } < <(free_ports 3)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
  RPID=$!; PIDS+=("$RPID")
  until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
  SECRET="compare-secret-$(date +%s%N)"
  export CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/" CHAT_JWT_SECRET="$SECRET"
  export CHAT_API_KEYS="compare-api-key-0123456789" RUST_LOG=warn
  # (`env` execs, so $! stays the node's own PID.)
  CHAT_LISTEN="127.0.0.1:$P1" CHAT_NODE_ID=n1 env "${INGRESS_ENV[@]}" target/release/ingress > "$WORK/i1.log" 2>&1 & I1=$!; PIDS+=("$I1")
  CHAT_LISTEN="127.0.0.1:$P2" CHAT_NODE_ID=n2 env "${INGRESS_ENV[@]}" target/release/ingress > "$WORK/i2.log" 2>&1 & I2=$!; PIDS+=("$I2")
  target/release/fanout-worker > "$WORK/f1.log" 2>&1 & F1=$!; PIDS+=("$F1")
  target/release/fanout-worker > "$WORK/f2.log" 2>&1 & F2=$!; PIDS+=("$F2")
  wait_ready "$P1" "$I1"
  wait_ready "$P2" "$I2"
  urls="http://127.0.0.1:$P1,http://127.0.0.1:$P2"
  pids="ingress1=$I1,ingress2=$I2,fanout1=$F1,fanout2=$F2,redis=$RPID"
}

stop_ours() {
  stop_pids $I1 $I2 $F1 $F2 $RPID
  # Forget them, so the exit trap never signals a reused PID.
  local keep=() p
  for p in "${PIDS[@]}"; do
    case " $I1 $I2 $F1 $F2 $RPID " in *" $p "*) ;; *) keep+=("$p") ;; esac
  done
  PIDS=(${keep[@]+"${keep[@]}"})
}

run_ours() {
  # one LABEL ROOMS MEMBERS RATE DURATION [DRAIN]
  one() {
    redis-cli -p "$RPORT" config resetstat >/dev/null
    timeout --kill-after=5 "$(($5 + WARMUP + ${6:-$DRAIN} + 40))" node "$LOADGEN" --target chatv1 --urls "$urls" \
      --jwt-secret "$SECRET" "${SESSION_ARGS[@]}" --rooms "$2" --members "$3" --rate "$4" --duration "$5" \
      --warmup "$WARMUP" --drain "${6:-$DRAIN}" --text-bytes 64 --pids "$pids" \
      --label "$1" --out "$OUT/$1.json" >/dev/null 2>>"$WORK/loadgen.log" || true
    redis-cli -p "$RPORT" info commandstats | tr -d '\r' | grep '^cmdstat' > "$OUT/$1.commandstats.txt"
    for p in $I1 $I2 $F1 $F2 $RPID; do kill -0 "$p" 2>/dev/null || { echo "process $p died during $1" >&2; exit 1; }; done
    echo "ours $1: $(node -e 'const r=require(process.argv[1]);console.log(`${r.deliveries_per_s} deliveries/s, p99 ${r.latency_ms.p99} ms, lost ${r.lost}`)' "$OUT/$1.json")" >&2
    sleep 2
  }
  local best=""
  for s in $SHAPES; do
    start_ours
    case "$s" in
      a) one ours-a-100x10-r2000 100 10 2000 "$DURATION" ;;
      b) one ours-b-10x100-r300 10 100 300 "$DURATION" ;;
      c)
        local stop="" why=""
        for rate in $STEPS; do
          one "ours-c-100x10-r$rate" 100 10 "$rate" "$STEP_DURATION"
          why=$(verdict "$OUT/ours-c-100x10-r$rate.json")
          if [ -n "$why" ]; then stop=$rate; break; fi
          best=$rate
        done
        node -e '
          const [out, good, stop, why, lim] = process.argv.slice(1);
          require("fs").writeFileSync(out, JSON.stringify({ target: "chatv1", shape: { rooms: 100, members: 10 },
            p99_limit_ms: Number(lim), last_good_rate: good ? Number(good) : null,
            last_good_result: good ? `ours-c-100x10-r${good}.json` : null,
            stop_rate: stop ? Number(stop) : null, stop_reason: why || "no step failed: raise STEPS" }, null, 2) + "\n");' \
          "$OUT/ours-c-max.json" "$best" "$stop" "$why" "$P99_LIMIT_MS"
        ;;
      overload)
        one "ours-overload-100x10-r$OVERLOAD_RATE" 100 10 "$OVERLOAD_RATE" 10 15
        # Twice our own sustainable rate (from c, or the last c result on file).
        local twice=$(( ${best:-$(node -e 'try{console.log(require(process.argv[1]).last_good_rate||2000)}catch{console.log(2000)}' "$OUT/ours-c-max.json")} * 2 ))
        if [ "$twice" != "$OVERLOAD_RATE" ]; then one "ours-overload-100x10-r$twice" 100 10 "$twice" 10 15; fi
        ;;
      *) echo "unknown shape $s" >&2; exit 2 ;;
    esac
    stop_ours
  done
}

run_peer() {
  local shapes=""
  for s in $SHAPES; do shapes="$shapes $s"; done
  # The peer's own script: fixed ports 6391/3101/3102, its own redis-server,
  # stops what it started. It runs from our writable copy.
  DURATION=$DURATION WARMUP=$WARMUP DRAIN=$DRAIN STEP_DURATION=$STEP_DURATION STEPS=$STEPS \
    P99_LIMIT_MS=$P99_LIMIT_MS OVERLOAD_RATE=$OVERLOAD_RATE RESULTS="$OUT" \
    "$WORK/peers/run-socketio.sh" $shapes &
  local pid=$!
  PIDS+=("$pid")
  wait "$pid"
}

for side in $SIDES; do
  case "$side" in
    ours) run_ours ;;
    peer) run_peer ;;
    *) echo "unknown side $side" >&2; exit 2 ;;
  esac
done

node bench/compare-table.mjs "$OUT" > "$OUT/table.md"
node bench/compare-table.mjs "$OUT" --update docs/benchmarks.md
echo "table: $OUT/table.md (and docs/benchmarks.md)" >&2
cat "$OUT/table.md"
