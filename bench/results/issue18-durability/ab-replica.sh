#!/usr/bin/env bash
# Shape (a) with a replica of Redis, with and without acks that wait for it
# (CHAT_REDIS_ACK_REPLICAS=1), alternating; then without a replica.
set -e
cd "$(dirname "$0")/../../.."
OUTDIR=${OUTDIR:-/tmp/ab-replica}
for i in 1 2; do
  REPLICA=1 NO_BUILD=1 OUT=$OUTDIR/replica-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a >/dev/null 2>&1
  REPLICA=1 CHAT_REDIS_ACK_REPLICAS=1 NO_BUILD=1 OUT=$OUTDIR/replica-acks-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a >/dev/null 2>&1
  NO_BUILD=1 OUT=$OUTDIR/norepl-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a >/dev/null 2>&1
done
echo done
