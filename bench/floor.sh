#!/usr/bin/env bash
# The kernel's cost of one delivery on this machine: bench/floor.c writes one
# frame per delivery over loopback TCP, paced like shapes (a) and (b) on one
# ingress node, and prints its CPU per write (and its reader's). Nothing
# else runs in the sender: no parsing, no Redis, no WebSocket library. It
# is the least any server that writes each delivery to its own socket pays
# here. Results: bench/results/floor-<shape>.json (one line per repeat).
#
#   bench/floor.sh            # shapes a and b, 3 repeats of 10 s each
#   REPEAT=1 SECONDS_EACH=5 bench/floor.sh
set -euo pipefail
ulimit -n 65536 2>/dev/null || true
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
REPEAT=${REPEAT:-3}
SECONDS_EACH=${SECONDS_EACH:-10}
# The size of one of our message frames at the benchmark's 64-byte texts.
FRAME_BYTES=${FRAME_BYTES:-220}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cc -O2 -Wall -o "$WORK/floor" bench/floor.c
# As one of two nodes sees the shapes: (a) 2,000 messages/s to 5 of its
# sockets each; (b) 300 messages/s to 50 each. 500 sockets: half of the
# generator's 1,000.
: > "$OUT/floor-a.json"
: > "$OUT/floor-b.json"
for _ in $(seq "$REPEAT"); do
  "$WORK/floor" 500 10000 5 "$SECONDS_EACH" "$FRAME_BYTES" | tee -a "$OUT/floor-a.json"
  "$WORK/floor" 500 15000 50 "$SECONDS_EACH" "$FRAME_BYTES" | tee -a "$OUT/floor-b.json"
done
