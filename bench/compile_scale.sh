#!/bin/sh
# compile_scale.sh — capc's compile time and memory against model depth (issue 16).
#
#   bench/compile_scale.sh [CAPC] [N ...]
#
# Runs `CAPC --check -D enc_layers=N models/captioner_tiny.json` for each N (default
# 100 200 400 1000 5000; CAPC defaults to build/capc) and prints one line per N: the wall
# time and the peak resident memory (GNU time's %e and %M). A run that fails or passes
# CAPC_BENCH_LIMIT seconds (default 120) is reported as such and the larger N are skipped.
# Run from the source tree. Not a test: tests/passes/test_compile_scale.c checks the growth
# by counted work units instead of time.
set -u
capc=${1:-build/capc}
[ $# -gt 0 ] && shift
sizes=${*:-100 200 400 1000 5000}
limit=${CAPC_BENCH_LIMIT:-120}
model=models/captioner_tiny.json
if [ ! -x "$capc" ]; then
    echo "compile_scale.sh: no capc at '$capc' (build first, or give its path)" >&2
    exit 2
fi
if [ ! -x /usr/bin/time ]; then
    echo "compile_scale.sh: needs GNU time (/usr/bin/time; apt-get install time)" >&2
    exit 2
fi
tmp=$(mktemp) || exit 2
trap 'rm -f "$tmp"' EXIT
echo "capc --check -D enc_layers=N $model ($(nproc) cores, $(uname -m))"
printf '%8s %10s %12s\n' N seconds peak_MiB
for n in $sizes; do
    timeout "$limit" /usr/bin/time -f '%e %M' -o "$tmp" \
        "$capc" --check -D enc_layers="$n" "$model" > /dev/null 2>&1
    rc=$?
    if [ $rc -eq 124 ]; then
        printf '%8s %10s %12s\n' "$n" ">$limit" "-"
        break
    elif [ $rc -ne 0 ]; then
        printf '%8s %10s %12s\n' "$n" "failed($rc)" "-"
        break
    fi
    read -r secs kib < "$tmp"
    printf '%8s %10s %12s\n' "$n" "$secs" "$((kib / 1024))"
done
