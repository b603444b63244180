#!/usr/bin/env bash
# Runs one libFuzzer target for a fixed time and prints one summary line:
#   run_target.sh BINARY NAME SEED_CORPUS WORK_DIR SECONDS
# The seed corpus is only read; new inputs go to WORK_DIR/corpus/NAME, crash/leak/timeout
# inputs to WORK_DIR/findings/, the full log to WORK_DIR/logs/NAME.log.
# Exit status: 0 no finding, 1 a finding (or the target failed to run), 77 no binary
# (ctest reports the test as skipped: a build without clang/libFuzzer).
set -uo pipefail
bin=$1 name=$2 seeds=$3 work=$4 seconds=$5

if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "fuzz $name: skipped: no fuzz binary${bin:+ at $bin} (needs clang with libFuzzer:" \
       "scripts/fuzz.sh builds one in build-fuzz/)"
  exit 77
fi
mkdir -p "$work/corpus/$name" "$work/findings" "$work/logs"
log="$work/logs/$name.log"
start="$work/logs/$name.start"
touch "$start" # findings of this run are the files newer than this

# -error_exitcode/-timeout_exitcode: libFuzzer's default error code is 77, ctest's skip code.
# -timeout: one input taking longer than this is a finding (a hang or an unbounded input).
# -rss_limit_mb: memory over this is a finding (libFuzzer's default, said explicitly).
"$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
       -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$work/findings/$name-" \
       "$work/corpus/$name" "$seeds" >"$log" 2>&1
rc=$?

# libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/SIZE ..." (or the last
# "#N ... cov:" line when it stopped at a finding).
status=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -n 1)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
[ -n "$execs" ] || execs=$(printf '%s\n' "$status" | sed -n 's/^#\([0-9]*\).*/\1/p')
cov=$(printf '%s\n' "$status" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
ft=$(printf '%s\n' "$status" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
corp=$(printf '%s\n' "$status" | sed -n 's/.*corp: \([^ ]*\).*/\1/p')
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
echo "fuzz $name: ${execs:-?} execs in ${seconds} s (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}," \
     "corpus ${corp:-?}"
if [ $rc -ne 0 ]; then
  echo "fuzz $name: FINDING (exit $rc); log $log; inputs:"
  find "$work/findings" -name "$name-*" -newer "$start" | sed 's/^/  /'
  grep -E 'ERROR: |SUMMARY: |runtime error|fuzz check failed|==ERROR' "$log" | head -n 5 | \
    sed 's/^/  /'
  exit 1
fi
echo "fuzz $name: no finding"
