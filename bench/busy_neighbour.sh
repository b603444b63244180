#!/usr/bin/env bash
# bench/busy_neighbour.sh — does capc's training hold up on a busy machine? The tiny
# captioner's train_step (batch 16) with no environment variable set, idle and beside a busy
# neighbour (one spinning shell loop per core), in turns: ROUNDS rounds of (idle, busy), each
# a median of 10 steps after 3 warm-up. Passes (exit 0) when the busy median of medians is at
# most 2x the idle one, the bar docs/benchmarks.md records; exit 1 otherwise.
#
#   bench/busy_neighbour.sh [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
B=build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCAPC_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target capc cap_bench_step >/dev/null
SO="$B/tiny_b16.so"
"$B/capc" models/captioner_tiny.json -D batch=16 -D dropout=0 --target=cpu -o "$SO"
CLEAN=(env -u OMP_NUM_THREADS -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY -u OPENBLAS_NUM_THREADS)
median_of() { sed -n 's/.*median \([0-9.]*\) ms.*/\1/p'; }
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
spinners=()
stop_spinners() { [ ${#spinners[@]} -gt 0 ] && kill "${spinners[@]}" 2>/dev/null; spinners=(); }
trap stop_spinners EXIT
echo "machine: $(nproc) cores; neighbour: $(nproc) spinning loops"
idle=() busy=()
for r in $(seq "$ROUNDS"); do
  line=$("${CLEAN[@]}" "$B/cap_bench_step" "$SO" cpu train_step 10 3)
  echo "round $r  idle  $line"; idle+=("$(echo "$line" | median_of)")
  for i in $(seq "$(nproc)"); do (while :; do :; done) & spinners+=($!); done
  line=$("${CLEAN[@]}" "$B/cap_bench_step" "$SO" cpu train_step 10 3)
  stop_spinners
  echo "round $r  busy  $line"; busy+=("$(echo "$line" | median_of)")
done
I=$(med "${idle[@]}") U=$(med "${busy[@]}")
awk -v i="$I" -v u="$U" 'BEGIN {
  r = u / i
  printf "idle %.2f ms, busy %.2f ms: %.2fx (bar: 2x) %s\n", i, u, r, r <= 2 ? "PASS" : "FAIL"
  exit r <= 2 ? 0 : 1 }'
