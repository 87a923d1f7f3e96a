#!/usr/bin/env bash
set -e
cd /work/main
for i in 1 2 3; do for v in mt ct; do
  cp /tmp/fanout-$v target/release/fanout-worker
  NO_BUILD=1 OUT=/tmp/ab/$v-$i DURATION=15s bench/run.sh a b >/dev/null 2>&1
done; done
cp /tmp/fanout-ct target/release/fanout-worker
echo done
