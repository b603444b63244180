#!/usr/bin/env bash
# Device check for the data -> train -> caption path on a GPU machine (run from the repository
# root; writes its logs into ${OUT:-/tmp/capc-gpu-check}): builds capc and cap (Release), makes
# the demo's synthetic set, compiles the tiny captioner for cpu and cuda, trains STEPS steps with
# `cap train --data --backend cuda`, then greedy-captions and scores the test split on cuda
# and on cpu from the same checkpoint (the captions must agree) and times both.
set -euo pipefail
STEPS=${STEPS:-1500}
OUT=${OUT:-/tmp/capc-gpu-check}
WORK=/tmp/capc-gpu-work
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/gpu_check.log") 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
t0=$SECONDS
D=$WORK/data
if [ -n "${PREBUILT:-}" ]; then
  # A folder made on a build machine (no dev packages here): cap, libcaprt.so, cap.so
  # (`capc models/captioner_tiny.json -D vocab=38 -D lr=0.001 --target=all`) and lib/ with the
  # shared libraries they need (ldd); carried along with the working tree.
  B=$PREBUILT
  export LD_LIBRARY_PATH=$PREBUILT/lib:$PREBUILT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  mkdir -p "$D"
  cp "$PREBUILT/cap.so" "$D/cap.so"
else
  B=$WORK/build
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DCAPC_TESTS=OFF >/dev/null
  cmake --build "$B" -j"$(nproc)" --target capc cap >"$WORK/build.log" 2>&1 ||
    { tail -n 30 "$WORK/build.log"; exit 1; }
  echo "build: $((SECONDS - t0)) s"
fi
"$B/cap" data synth --out "$D" --images 1000 --seed 1 --size 128 >/dev/null
"$B/cap" vocab --data "coco:$D/captions.json" --min-count 2 -o "$D/vocab.txt"
if [ -z "${PREBUILT:-}" ]; then
  t=$SECONDS
  "$B/capc" models/captioner_tiny.json -D vocab=38 -D lr=0.001 --target=all -o "$D/cap.so"
  echo "capc --target=all: $((SECONDS - t)) s"
fi
t=$SECONDS
"$B/cap" train "$D/cap.so" --data "coco:$D/captions.json" --vocab "$D/vocab.txt" \
  --steps "$STEPS" --seed 1 --out "$D/ckpt.safetensors" --print-every 250 --workers 4 \
  --backend cuda
echo "train on cuda: $((SECONDS - t)) s"
for be in cuda cpu; do
  t=$SECONDS
  "$B/cap" eval "$D/cap.so" --weights "$D/ckpt.safetensors" \
    --data "coco:$D/captions.json" --results "$OUT/results_$be.json" --backend "$be"
  echo "eval on $be: $((SECONDS - t)) s"
  "$B/cap" sample "$D/cap.so" --weights "$D/ckpt.safetensors" --beam 3 \
    --image $(ls "$D"/images/synth_* | tail -n 4) --backend "$be" > "$OUT/beam_$be.txt"
done
if cmp -s "$OUT/results_cuda.json" "$OUT/results_cpu.json"; then echo "greedy captions: cuda == cpu"
else echo "greedy captions: cuda != cpu"; fi
if cmp -s "$OUT/beam_cuda.txt" "$OUT/beam_cpu.txt"; then echo "beam captions: cuda == cpu"
else echo "beam captions: cuda != cpu"; fi
cat "$OUT/beam_cuda.txt"
echo "total: $((SECONDS - t0)) s"
