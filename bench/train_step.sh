#!/usr/bin/env bash
# bench/train_step.sh — the tiny captioner's train_step on this machine's CPU: capc's time
# (median of 20 after 3 warm-up runs) beside PyTorch's for the same model and batch, when
# Debian's python3-torch is installed (/usr/bin/python3). Numbers go to docs/benchmarks.md.
#
#   bench/train_step.sh [BATCH=16]
#
# Both run with dropout 0 (PyTorch's model in tests/golden/make_golden.py has p as a
# parameter; capc's via -D dropout=0) and use every core: OpenMP/OpenBLAS threads for capc,
# torch.get_num_threads() for PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-16}
B=build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCAPC_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target capc cap cap_bench_step >/dev/null
"$B/capc" models/captioner_tiny.json -D batch="$BATCH" -D dropout=0 --target=cpu \
    -o "$B/tiny_b$BATCH.so"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo -n "capc    "; "$B/cap_bench_step" "$B/tiny_b$BATCH.so" cpu train_step 20 3
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo -n "        "; /usr/bin/python3 bench/torch_step.py --device cpu --batch "$BATCH" --iters 20 --warmup 3
else
  echo "pytorch: not installed (apt-get install python3-torch) — no comparison"
fi
