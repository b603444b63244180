#!/usr/bin/env bash
# The demo: set up, build (Release), generate the synthetic captioning set, build its
# vocabulary, compile the tiny captioner for it, train it on the CPU (progress line), caption a
# few held-out images and score the test split (BLEU-4, CIDEr-D). About 5-7 minutes on 2 cores;
# docs/benchmarks.md ("Demo") has measured figures. Every knob below can be overridden from the
# environment (e.g. STEPS=500 scripts/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES=${IMAGES:-1000}   # synthetic images: 80% train, 10% val, 10% test
SIZE=${SIZE:-128}        # image side (the tiny captioner's own; 64 trains 2x faster, a little worse)
BATCH=${BATCH:-16}       # compiled batch
TRAIN_SECONDS=${TRAIN_SECONDS:-265} # training time: the demo trains for a fixed time (265 s:
                         # what its 2500 steps once took here); a faster machine fits more steps
STEPS=${STEPS:-20000}    # at most this many steps (400 epochs of 800 train images at batch 16)
LR=${LR:-0.001}          # Adam's learning rate (the model file's default is 1e-4)
MIN_COUNT=${MIN_COUNT:-2} # vocabulary: words seen at least this often in the train split
SEED=${SEED:-1}          # data set, initialization, dropout and shuffling
SHOW=${SHOW:-6}          # held-out images to caption
BUILD=${BUILD:-build}    # build folder
OUT=$BUILD/demo          # everything the demo writes

t_start=$SECONDS
phase() { echo; echo "== $* ($((SECONDS - t_start)) s)"; }

scripts/setup.sh
phase "build (Release)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
if ! cmake --build "$BUILD" -j"$(nproc)" --target capc cap >"$BUILD/demo-build.log" 2>&1; then
  tail -n 40 "$BUILD/demo-build.log"
  exit 1
fi
echo "built $BUILD/capc and $BUILD/cap (compiler output in $BUILD/demo-build.log)"
t_built=$SECONDS
CAPC=$BUILD/capc
CAP=$BUILD/cap
rm -rf "$OUT"
mkdir -p "$OUT"

phase "cap data synth: $IMAGES images of ${SIZE}x${SIZE}"
"$CAP" data synth --out "$OUT/data" --images "$IMAGES" --seed "$SEED" --size "$SIZE"
DATA=coco:$OUT/data/captions.json

phase "cap vocab"
"$CAP" vocab --data "$DATA" --min-count "$MIN_COUNT" -o "$OUT/vocab.txt"
VOCAB=$(wc -l < "$OUT/vocab.txt")

phase "capc models/captioner_tiny.json -D vocab=$VOCAB -D image=$SIZE -D batch=$BATCH -D lr=$LR"
FLAGS=(-D "vocab=$VOCAB" -D "image=$SIZE" -D "batch=$BATCH" -D "lr=$LR")
"$CAPC" --check models/captioner_tiny.json "${FLAGS[@]}" | grep -E '^(model|parameters|trainable):'
"$CAPC" models/captioner_tiny.json "${FLAGS[@]}" --target=cpu -o "$OUT/cap.so"
echo "wrote $OUT/cap.so"

phase "cap train: $TRAIN_SECONDS s (at most $STEPS steps) on the CPU"
t_train=$SECONDS
"$CAP" train "$OUT/cap.so" --data "$DATA" --vocab "$OUT/vocab.txt" --steps "$STEPS" \
  --time-limit "$TRAIN_SECONDS" --seed "$SEED" --out "$OUT/ckpt.safetensors" --log "$OUT/metrics.jsonl" \
  --print-every 500 --backend cpu
t_train=$((SECONDS - t_train))
"$CAP" plot "$OUT/metrics.jsonl" -o "$OUT/curves.svg"

phase "cap sample: $SHOW held-out (test split) images, greedy"
mapfile -t held_out < <(ls "$OUT"/data/images/synth_* | tail -n "$SHOW")
"$CAP" sample "$OUT/cap.so" --weights "$OUT/ckpt.safetensors" --image "${held_out[@]}" \
  --backend cpu
echo "-- the same, beam search with 3 beams:"
"$CAP" sample "$OUT/cap.so" --weights "$OUT/ckpt.safetensors" --image "${held_out[@]:0:3}" \
  --beam 3 --backend cpu

echo "-- where the decoder looked, word by word (open $OUT/attend.png):"
"$CAP" attend "$OUT/cap.so" --weights "$OUT/ckpt.safetensors" --image "${held_out[0]}" \
  -o "$OUT/attend.png" --backend cpu

phase "cap eval: the test split, greedy"
"$CAP" eval "$OUT/cap.so" --weights "$OUT/ckpt.safetensors" --data "$DATA" --split test \
  --results "$OUT/results.json" --backend cpu | tee "$OUT/scores.txt"

echo
echo "== done in $((SECONDS - t_start)) s (build $((t_built - t_start)) s, training ${t_train} s)"
echo "   BLEU-4 $(sed -n 's/^BLEU-4: //p' "$OUT/scores.txt"), CIDEr-D $(sed -n 's/^CIDEr-D: //p' "$OUT/scores.txt") on the held-out test split"
echo "   files in $OUT/: cap.so, ckpt.safetensors, metrics.jsonl, curves.svg (open it in a browser), attend.png, results.json, vocab.txt"
