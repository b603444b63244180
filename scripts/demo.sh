#!/usr/bin/env bash
# Set up, build, and show capc at work on the tiny captioner.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== capc --check models/captioner_tiny.json"
build/capc --check models/captioner_tiny.json
echo
echo "== capc models/captioner_tiny.json --dump-ir=build/demo-ir"
build/capc models/captioner_tiny.json --dump-ir=build/demo-ir
ls build/demo-ir
