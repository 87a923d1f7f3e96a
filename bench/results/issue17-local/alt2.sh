#!/usr/bin/env bash
OUT=$1; mkdir -p $OUT
for round in $(seq $2); do
  BIN=/tmp/exp/bin2 ./ab-run.sh $OUT/d-$round 2 w >> $OUT/default.txt 2>&1
  CHAT_STREAMS=/tmp/exp/streams-linger0.toml BIN=/tmp/exp/bin2 ./ab-run.sh $OUT/l0-$round 2 w >> $OUT/linger0.txt 2>&1
done
