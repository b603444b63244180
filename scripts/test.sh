#!/usr/bin/env bash
# Set up, build (a warning-free release build, then one with AddressSanitizer and UBSan) and
# run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The fuzz_* tests run the libFuzzer targets, which need a clang build of their own
# (build-fuzz/, scripts/fuzz.sh); without clang with libFuzzer (exit 77) they are skipped.
fuzz_bin=
fuzz_rc=0
scripts/fuzz.sh --build || fuzz_rc=$?
if [ $fuzz_rc -eq 0 ]; then
  fuzz_bin=$PWD/build-fuzz/tests/fuzz
elif [ $fuzz_rc -ne 77 ]; then
  exit $fuzz_rc
fi
# gcc's flow warnings (maybe-uninitialized, ...) appear only with optimisation: the release
# build of capc, cap and libcaprt must be warning-free too (~25 s on 2 cores).
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCAPC_WERROR=ON -DCAPC_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)"
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DCAPC_SANITIZE=ON -DCAPC_WERROR=ON \
      -DCAPC_FUZZ_BIN_DIR="$fuzz_bin" >/dev/null
cmake --build build-test -j"$(nproc)"
cd build-test
ctest --output-on-failure -j"$(nproc)"
