#!/usr/bin/env bash
# bench/train_step.sh — train_step on this machine's CPU, capc beside PyTorch eager in one run:
#   the tiny captioner (batch 16): capc fused (the default), capc with the feature cache in
#   its steady state (train_step_cached: every image's frozen-backbone features cached),
#   capc --no-fuse, PyTorch;
#   the ResNet-50 captioner (batch 4): capc, capc with the feature cache, PyTorch;
# with capc's compile time and each library's kernel launches per step. Numbers go to
# docs/benchmarks.md.
#
#   bench/train_step.sh [ROUNDS=3] [MODELS="tiny resnet50"]
#
# The machine is shared and noisy, so the runs take turns: ROUNDS rounds of every
# configuration, each a median of N steps after warm-up (tiny: 10 after 3, ResNet-50: 4 after
# 1); the summary is the median of the rounds' medians and the ratio to PyTorch with its
# default threads (Debian's PyTorch uses one thread on a 2-core machine, so it is also timed
# with every core: "pytorch, N threads"). capc runs with its defaults (every core, no
# environment variable). All run with dropout 0 (-D dropout=0; PyTorch's p=0). PyTorch is
# Debian's python3-torch (/usr/bin/python3); without it the comparison is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MODELS=${2:-tiny resnet50}
B=build-bench
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCAPC_TESTS=OFF >/dev/null
cmake --build "$B" -j"$(nproc)" --target capc cap cap_bench_step >/dev/null
HAVE_TORCH=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && HAVE_TORCH=1
NPROC=$(nproc)
echo "machine: $NPROC cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# "... median 123.456 ms ..." -> 123.456
median_of() { sed -n 's/.*median \([0-9.]*\) ms.*/\1/p'; }
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# compile NAME MODEL BATCH [capc flags...]: prints the compile time, sets SO
compile() {
  local name=$1 model=$2 batch=$3
  shift 3
  SO="$B/${name}_b$batch.so"
  local t0=$(date +%s.%N)
  "$B/capc" "models/$model" -D batch="$batch" -D dropout=0 --target=cpu "$@" -o "$SO"
  local t1=$(date +%s.%N)
  echo "$name: capc compile $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s," \
       "$("$B/cap" info "$SO" | grep -m1 '^  train_step:' | sed 's/^ *//')"
}

# bench TITLE MODEL BATCH ITERS WARMUP CONFIG...: CONFIG is capc:SO (train_step),
# cached:SO (train_step_cached) or torch:THREADS
bench() {
  local title=$1 model=$2 batch=$3 iters=$4 warmup=$5
  shift 5
  local configs=("$@") n=$#
  declare -A times
  echo "== $title"
  for r in $(seq "$ROUNDS"); do
    for c in "${configs[@]}"; do
      local line
      case $c in
        capc:*) line=$("$B/cap_bench_step" "${c#capc:}" cpu train_step "$iters" "$warmup") ;;
        cached:*) line=$("$B/cap_bench_step" "${c#cached:}" cpu train_step_cached "$iters" "$warmup") ;;
        torch:*) line=$(/usr/bin/python3 bench/torch_step.py --device cpu --model "$model" \
                        --batch "$batch" --iters "$iters" --warmup "$warmup" --threads "${c#torch:}") ;;
      esac
      echo "round $r  $(label "$c")  $line"
      times[$c]="${times[$c]:-} $(echo "$line" | median_of)"
    done
  done
  local base=""
  for c in "${configs[@]}"; do [ "$c" = torch:0 ] && base=$(med ${times[$c]}); done
  echo "summary (median of the rounds' medians):"
  for c in "${configs[@]}"; do
    awk -v name="$(label "$c")" -v ms="$(med ${times[$c]})" -v t="$base" 'BEGIN {
      printf "  %-32s %9.2f ms", name, ms
      if (t > 0) printf "  %.2fx PyTorch", ms / t
      printf "\n" }'
  done
}

label() {
  case $1 in
    capc:*nofuse*) echo "capc --no-fuse" ;;
    cached:*) echo "capc, feature cache" ;;
    capc:*) echo "capc" ;;
    torch:0) echo "pytorch (its default threads)" ;;
    torch:*) echo "pytorch, ${1#torch:} threads" ;;
  esac
}

for model in $MODELS; do
  case $model in
    tiny)
      compile tiny captioner_tiny.json 16; fused=$SO
      compile tiny_nofuse captioner_tiny.json 16 --no-fuse; unfused=$SO
      cfg=("capc:$fused" "cached:$fused" "capc:$unfused")
      [ "$HAVE_TORCH" = 1 ] && cfg+=(torch:0 "torch:$NPROC")
      bench "tiny captioner, batch 16" tiny 16 10 3 "${cfg[@]}" ;;
    resnet50)
      compile resnet50 captioner_resnet50.json 4; r50=$SO
      cfg=("capc:$r50" "cached:$r50")
      [ "$HAVE_TORCH" = 1 ] && cfg+=(torch:0 "torch:$NPROC")
      bench "ResNet-50 captioner, batch 4" resnet50 4 4 1 "${cfg[@]}" ;;
    *) echo "unknown model '$model' (tiny, resnet50)" >&2; exit 2 ;;
  esac
done
[ "$HAVE_TORCH" = 1 ] || echo "pytorch: not installed (apt-get install python3-torch), no comparison"
