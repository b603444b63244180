#!/bin/sh
# compile_time.sh — capc's compile time, cold and warm, with the kernel cache (issue 14).
#
#   bench/compile_time.sh [CAPC] [MODEL ...]
#
# For each model (default models/captioner_tiny.json models/captioner.json), with the default
# target (cpu, plus cuda when NVRTC is here), times:
#   cold    an empty cache (a fresh --cache-dir)
#   warm    the same compile again
#   lr      the same with -D lr=0.00042 (only the tables change)
#   nocache --no-cache (what every compile cost before the cache)
# and prints the wall seconds of each plus capc -v's unit counts. CAPC defaults to
# build/capc. Run from the source tree, with nothing else running: cold compiles use every
# core. Not a test: tests/codegen/test_kernel_cache.c checks the behaviour.
set -u
capc=${1:-build/capc}
[ $# -gt 0 ] && shift
models=${*:-models/captioner_tiny.json models/captioner.json}
if [ ! -x "$capc" ]; then
    echo "compile_time.sh: no capc at '$capc' (build first, or give its path)" >&2
    exit 2
fi
work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
# run LABEL ARGS...: one compile into $work/out.so, its wall time and -v summary lines
run() {
    label=$1
    shift
    t0=$(now)
    if ! "$capc" "$@" -o "$work/out.so" -v > "$work/log" 2>&1; then
        echo "compile_time.sh: capc failed:" >&2
        tail -5 "$work/log" >&2
        exit 1
    fi
    t1=$(now)
    units=$(grep -E '^capc: (NVRTC|cc) ' "$work/log" | sed 's/^capc: //' | tr '\n' ';')
    printf '  %-8s %7.2f s   %s\n' "$label" "$(awk "BEGIN { print $t1 - $t0 }")" "$units"
}
echo "capc compile times ($(nproc) cores, $(uname -m); NVRTC: $(ls /usr/local/cuda/lib64/libnvrtc.so 2>/dev/null || echo none))"
for model in $models; do
    echo "$model"
    cache="$work/cache-$(basename "$model" .json)"
    run cold "$model" --cache-dir "$cache"
    run warm "$model" --cache-dir "$cache"
    run lr "$model" --cache-dir "$cache" -D lr=0.00042
    run nocache "$model" --no-cache
done
