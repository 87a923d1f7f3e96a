#!/usr/bin/env bash
set -e
cd /work/main
for i in 4 5 6; do
  NO_BUILD=1 OUT=/tmp/ab2/t1-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a b >/dev/null 2>&1
  NO_BUILD=1 OUT=/tmp/ab2/t2-$i DURATION=15s bench/run.sh a b >/dev/null 2>&1
done
echo done
