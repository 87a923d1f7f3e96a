#!/usr/bin/env bash
set -e
cd /work/main
for i in 1 2 3; do
  NO_BUILD=1 OUT=/tmp/ab3/l1-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a b >/dev/null 2>&1
  CHAT_STREAMS=/tmp/linger05.toml NO_BUILD=1 OUT=/tmp/ab3/l05-$i DURATION=15s SERVICE_THREADS=1 bench/run.sh a b >/dev/null 2>&1
done
echo done
