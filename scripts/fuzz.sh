#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang in build-fuzz/ and runs them:
#   scripts/fuzz.sh SECONDS [TARGET...]   run each target (default: all) for SECONDS
#   scripts/fuzz.sh --build               only configure and build them
# Each target starts from its committed seeds (tests/fuzz/corpus/NAME, never written) plus
# the inputs earlier runs found (build-fuzz/corpus/NAME); crash, leak and timeout inputs go
# to build-fuzz/findings/, logs to build-fuzz/logs/. One line per target: execs, exec/s,
# coverage (cov: edges, ft: features), corpus. Exit status: 0 no finding, 1 a finding or a
# failed build, 77 no clang with libFuzzer here (scripts/test.sh then skips the fuzz tests).
# CC picks the compiler (default clang). docs/reliability.md has the figures of past runs.
set -euo pipefail
cd "$(dirname "$0")/.."

targets_all=(frontend ir_parse safetensors coco karpathy flickr vocab jpeg png)
usage() { echo "usage: scripts/fuzz.sh SECONDS [TARGET...] | --build   (targets: ${targets_all[*]})" >&2; exit 2; }
[ $# -ge 1 ] || usage
build_only=0
if [ "$1" = --build ]; then
  build_only=1
  shift
else
  seconds=$1
  shift
  [[ "$seconds" =~ ^[1-9][0-9]*$ ]] || usage
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${targets_all[@]}")
for t in "${targets[@]}"; do
  [[ " ${targets_all[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t'" >&2; usage; }
done

cc=${CC:-clang}
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' \
  >"$probe_dir/probe.c"
if ! command -v "$cc" >/dev/null 2>&1 ||
   ! "$cc" -fsanitize=fuzzer,address,undefined "$probe_dir/probe.c" -o "$probe_dir/probe" >/dev/null 2>&1; then
  echo "fuzz: no $cc with libFuzzer here (Debian: apt-get install clang, or run scripts/setup.sh)" >&2
  exit 77
fi

# -O1 -g with assertions on (a Debug build type without -O0's slowness), as libFuzzer advises.
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER="$cc" -DCAPC_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_C_FLAGS_DEBUG="-g -O1" >/dev/null
# Only the targets asked for: one that does not build does not stop the others' runs.
build_targets=(fuzzers)
[ $build_only -eq 1 ] || build_targets=("${targets[@]/#/fuzz_}")
cmake --build build-fuzz --target "${build_targets[@]}" -j"$(nproc)" >/dev/null || {
  echo "fuzz: build failed (rerun: cmake --build build-fuzz --target ${build_targets[*]})" >&2
  exit 1
}
[ $build_only -eq 0 ] || { echo "fuzz: built ${targets_all[*]} in build-fuzz/tests/fuzz"; exit 0; }

failed=()
for t in "${targets[@]}"; do
  tests/fuzz/run_target.sh build-fuzz/tests/fuzz/fuzz_"$t" "$t" tests/fuzz/corpus/"$t" \
    build-fuzz "$seconds" || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]} (inputs in build-fuzz/findings/, logs in build-fuzz/logs/)"
  exit 1
fi
echo "fuzz: no findings in ${targets[*]}"
