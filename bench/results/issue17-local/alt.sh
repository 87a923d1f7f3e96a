#!/usr/bin/env bash
# alt.sh OUT ROUNDS : alternates bin1 (before) and bin2 (after) stacks, variant w, 2 runs each per round
OUT=$1; mkdir -p $OUT
for round in $(seq $2); do
  for b in bin1 bin2; do
    BIN=/tmp/exp/$b ./ab-run.sh $OUT/$b-$round 2 w >> $OUT/$b.txt 2>&1
  done
done
