#!/usr/bin/env bash
# ab.sh OUTDIR REPS VARIANT... : one stack (2 ingress, 2 fanout, redis), runs
# loadgen shape (a) per variant, alternating, REPS times. Variants: s (sessions), n (none).
set -uo pipefail
cd /work/main
. bench/lib.sh
OUT=$1; REPS=$2; shift 2; mkdir -p "$OUT"
ROOMS=${ROOMS:-100}; MEMBERS=${MEMBERS:-10}; RATE=${RATE:-2000}; DUR=${DUR:-10}
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
{ read -r RPORT; read -r P1; read -r P2; } < <(free_ports 3)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" & RPID=$!
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.1; done
SECRET=s3cret-$RANDOM
export CHAT_REDIS_URL="redis://127.0.0.1:$RPORT/" CHAT_JWT_SECRET="$SECRET" CHAT_API_KEYS="compare-api-key-0123456789" RUST_LOG=warn
CHAT_LISTEN="127.0.0.1:$P1" CHAT_NODE_ID=n1 $BIN/ingress > "$WORK/i1.log" 2>&1 & I1=$!
CHAT_LISTEN="127.0.0.1:$P2" CHAT_NODE_ID=n2 $BIN/ingress > "$WORK/i2.log" 2>&1 & I2=$!
$BIN/fanout-worker > "$WORK/f1.log" 2>&1 & F1=$!
$BIN/fanout-worker > "$WORK/f2.log" 2>&1 & F2=$!
trap 'stop_pids $I1 $I2 $F1 $F2 $RPID; rm -rf $WORK' EXIT
wait_ready $P1 $I1; wait_ready $P2 $I2
echo "ports $P1 $P2 redis $RPORT" >&2
for r in $(seq "$REPS"); do
  for v in "$@"; do
    args=(); unset LG_PRELOADED LG_RUN LG_PUT LG_GC LG_PREPUT LG_WORKER; NODEFLAGS=
    [ "$v" = s ] && args=(--api-key compare-api-key-0123456789 --sessions)
    [ "$v" = h ] && { args=(--api-key compare-api-key-0123456789 --sessions); export LG_PUT=http; }
    [ "$v" = g ] && { args=(--api-key compare-api-key-0123456789 --sessions); export LG_GC=1; NODEFLAGS=--expose-gc; }
    [ "$v" = a ] && { args=(--api-key compare-api-key-0123456789 --sessions); export LG_PREPUT=1 LG_PUT=http; }
    [ "$v" = w ] && { args=(--api-key compare-api-key-0123456789 --sessions); export LG_WORKER=1; }
    [ "$v" = S ] && { args=(--api-key compare-api-key-0123456789 --sessions); NODEFLAGS=--trace-gc; }
    if [ "$v" = p ] || [ "$v" = P ]; then
      [ "$v" = P ] && NODEFLAGS=--trace-gc
      args=(--api-key compare-api-key-0123456789 --sessions); export LG_PRELOADED=1 LG_RUN=p$r$RANDOM
      for n in $(seq 0 $((ROOMS*MEMBERS-1))); do printf 'SET "chat:session:{bench-%s-%d}" "bench-%d\n3600" EX 3600\n' "$LG_RUN" $n $n; done | redis-cli -p $RPORT >/dev/null
    fi
    redis-cli -p "$RPORT" config resetstat >/dev/null
    node /tmp/exp/hops.js snap http://127.0.0.1:$P1 http://127.0.0.1:$P2 > $OUT/$v-$r.hb.json
    timeout 120 node ${NODEFLAGS:-} /tmp/peers/loadgen/loadgen-x.js --target chatv1 --urls "http://127.0.0.1:$P1,http://127.0.0.1:$P2" \
      --jwt-secret "$SECRET" "${args[@]}" --rooms $ROOMS --members $MEMBERS --rate $RATE --duration $DUR --warmup 2 --drain 5 \
      --text-bytes 64 --pids "i1=$I1,i2=$I2,f1=$F1,f2=$F2,redis=$RPID" --label "$v-$r" --out "$OUT/$v-$r.json" 2>>"$OUT/loadgen.log" >"$OUT/$v-$r.stdout"
    node /tmp/exp/hops.js snap http://127.0.0.1:$P1 http://127.0.0.1:$P2 > $OUT/$v-$r.ha.json
    echo "  hops $v-$r: $(node /tmp/exp/hops.js diff $OUT/$v-$r.hb.json $OUT/$v-$r.ha.json)"
    redis-cli -p "$RPORT" info commandstats | tr -d '\r' | grep '^cmdstat' > "$OUT/$v-$r.cmd.txt"
    node -e 'const r=require(process.argv[1]);const c=r.cpu;const srv=["i1","i2","f1","f2","redis"].reduce((a,k)=>a+c[k].seconds,0);console.log(process.argv[2], "p50",r.latency_ms.p50,"p99",r.latency_ms.p99,"max",r.latency_ms.max,"eld99",r.event_loop_delay_ms.p99,"lost",r.lost,"gaps",r.offset_gaps,"us/deliv",(srv*1e6/r.delivered).toFixed(1),"redis us/msg",(c.redis.seconds*1e6/r.sent).toFixed(1),"lg%",c.loadgen.pct_of_core)' "$OUT/$v-$r.json" "$v-$r"
    sleep 1
  done
done
