#!/usr/bin/env bash
# bench/train_step.sh — the tiny captioner's train_step on this machine's CPU: capc fused (the
# default), capc --no-fuse and PyTorch eager for the same model and batch, in one run, with
# each capc library's kernel launches per step. Numbers go to docs/benchmarks.md.
#
#   bench/train_step.sh [BATCH=16] [ROUNDS=3]
#
# The machine is shared and noisy, so they take turns: ROUNDS rounds of (capc fused with its
# default threads, capc fused on one thread, capc unfused on one thread, PyTorch with its
# default threads), each a median of 10 steps after 3 warm-up steps; the summary is the median
# of the rounds' medians and the ratios to PyTorch. One thread (OMP_NUM_THREADS=1
# OPENBLAS_NUM_THREADS=1) is there because capc's default threading (OpenMP loops beside
# OpenBLAS's own threads) still spins against itself on a small machine (issue 9); Debian's
# PyTorch uses one thread on this 2-core machine (the line says how many it used). All run
# with dropout 0 (PyTorch's model in tests/golden/make_golden.py has p as a parameter; capc's
# via -D dropout=0). PyTorch is Debian's python3-torch (/usr/bin/python3); without it the
# comparison is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-16}
ROUNDS=${2:-3}
B=build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCAPC_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target capc cap cap_bench_step >/dev/null
FUSED="$B/tiny_b$BATCH.so"
UNFUSED="$B/tiny_b${BATCH}_nofuse.so"
"$B/capc" models/captioner_tiny.json -D batch="$BATCH" -D dropout=0 --target=cpu -o "$FUSED"
"$B/capc" models/captioner_tiny.json -D batch="$BATCH" -D dropout=0 --target=cpu --no-fuse \
    -o "$UNFUSED"
HAVE_TORCH=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && HAVE_TORCH=1

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "batch $BATCH, $ROUNDS rounds of 10 steps after 3 warm-up steps"
for so in "$FUSED" "$UNFUSED"; do
  echo "$(basename "$so"): $("$B/cap" info "$so" | grep -m1 '^  train_step:' | sed 's/^ *//')"
done

# "... median 123.456 ms ..." -> 123.456
median_of() { sed -n 's/.*median \([0-9.]*\) ms.*/\1/p'; }
ONE="env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1"
fused=() fused1=() unfused1=() torch=()
for r in $(seq "$ROUNDS"); do
  line=$("$B/cap_bench_step" "$FUSED" cpu train_step 10 3)
  echo "round $r  capc fused, default threads  $line"; fused+=("$(echo "$line" | median_of)")
  line=$($ONE "$B/cap_bench_step" "$FUSED" cpu train_step 10 3)
  echo "round $r  capc fused, 1 thread         $line"; fused1+=("$(echo "$line" | median_of)")
  line=$($ONE "$B/cap_bench_step" "$UNFUSED" cpu train_step 10 3)
  echo "round $r  capc unfused, 1 thread       $line"; unfused1+=("$(echo "$line" | median_of)")
  if [ "$HAVE_TORCH" = 1 ]; then
    line=$(/usr/bin/python3 bench/torch_step.py --device cpu --batch "$BATCH" --iters 10 --warmup 3)
    echo "round $r  $line"; torch+=("$(echo "$line" | median_of)")
  fi
done

med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
T=0
[ "$HAVE_TORCH" = 1 ] && T=$(med "${torch[@]}")
echo "summary (median of the rounds' medians):"
awk -v f="$(med "${fused[@]}")" -v f1="$(med "${fused1[@]}")" -v u1="$(med "${unfused1[@]}")" \
    -v t="$T" 'function row(name, ms) {
      printf "  %-30s %8.2f ms", name, ms
      if (t > 0) printf "  %.2fx PyTorch", ms / t
      printf "\n" }
    BEGIN {
      row("capc fused, default threads", f); row("capc fused, 1 thread", f1)
      row("capc unfused, 1 thread", u1)
      if (t > 0) printf "  %-30s %8.2f ms\n", "pytorch (its default threads)", t
      else print "  pytorch: not installed (apt-get install python3-torch), no comparison"
      printf "  fused / unfused (1 thread): %.2f\n", f1 / u1 }'
