#!/usr/bin/env bash
set -e
cd /work/main
for i in 1 2; do
  NO_BUILD=1 OUT=/tmp/ab4/none-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a >/dev/null 2>&1
  REDIS_ARGS="--appendonly yes --appendfsync everysec" NO_BUILD=1 OUT=/tmp/ab4/everysec-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a >/dev/null 2>&1
  REDIS_ARGS="--appendonly yes --appendfsync always" NO_BUILD=1 OUT=/tmp/ab4/always-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a >/dev/null 2>&1
done
echo done
