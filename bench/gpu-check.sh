#!/usr/bin/env bash
# bench/gpu-check.sh — the one script for a GPU machine (docs/gpu.md). From the repo root:
#
#   bench/gpu-check.sh             build, then the checks; log in $OUT/gpu-check.log
#   bench/gpu-check.sh --prepare   (on a build machine) build Release into build-gpu-full,
#                                  with the shared libraries the binaries need (libs/) and the
#                                  tiny captioner (batch 2 and 16, --target=all; models/), all
#                                  packed into build-gpu/prebuilt.tar.gz, so a GPU machine
#                                  without cJSON / OpenBLAS / CMocka dev packages runs it all
#                                  prebuilt (carry build-gpu along; it unpacks there).
#
# Steps: build (cmake Release, no sanitizers, -j16; without cmake a plain cc build, below; with
# neither, the prebuilt build-gpu), nvidia-smi, test_cuda_kernels, test_cuda_backend, the tiny
# captioner (-D batch=2 -D dropout=0 --target=all) `cap loss` on cuda vs the PyTorch golden and
# vs cpu in eval and train mode, train_step timings on cuda and cpu at batch 16 and 2 (median
# of 20 after 2 warm-up runs), and PyTorch's train step of the same model on the GPU.
# Every step runs under `timeout`; the whole script stays under 6 minutes. Without a GPU the
# cuda steps say "no GPU: cuda checks skipped" and the script still succeeds.
set -u
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/gpucheck}
B=${GPU_BUILD_DIR:-build-gpu}
JOBS=${JOBS:-16}
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
: >"$LOG"
START=$(date +%s)
FAILS=0

say() { echo "$*" | tee -a "$LOG"; }
# run NAME SECONDS CMD...: full output to the log, a one-line verdict to stdout
run() {
    local name=$1 t=$2
    shift 2
    echo "---- $name: $*" >>"$LOG"
    timeout "$t" "$@" >>"$LOG" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then say "[ ok ] $name"
    elif [ $rc -eq 124 ]; then say "[FAIL] $name: timed out after ${t}s"; FAILS=$((FAILS + 1))
    else say "[FAIL] $name (exit $rc; see $LOG)"; FAILS=$((FAILS + 1)); fi
    return $rc
}
have_pkg() { pkg-config --exists "$1" 2>/dev/null; }

# ---- build ----------------------------------------------------------------------------------
cmake_build() {
    local tests=ON
    have_pkg cmocka || { say "note: libcmocka not found: cmocka tests not built"; tests=OFF; }
    run "configure (cmake Release)" 120 cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release \
        -DCAPC_SANITIZE=OFF -DCAPC_WERROR=OFF -DCAPC_TESTS=$tests || return 1
    local targets="capc cap cap_bench_step"
    [ $tests = ON ] && targets="$targets test_cuda_kernels test_cuda_backend"
    # shellcheck disable=SC2086
    run "build ($targets)" 300 cmake --build "$B" -j"$JOBS" --target $targets
}

# Without cmake: the same sources with the system cc (tests are not built this way):
#   cc -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -DCAPC_VERSION='"0.1.0"' -I{ir,frontend,passes,
#      codegen,driver,support,runtime/abi} ir/*.c frontend/*.c passes/*.c codegen/*.c support/*.c
#      driver/*.c $B/cap_artifact_text.c -lcjson -lclang -lm -ldl -lpthread -o $B/capc
#   cc ... -shared -fPIC runtime/{core,data,caption}/*.c support/*.c -o $B/libcaprt.so
#      -lcjson -ljpeg -lpng -lm -ldl -lpthread;  cc runtime/cli/*.c -> $B/cap; bench/bench_step.c
cc_build() {
    mkdir -p "$B"
    local cflags=(-std=c11 -O2 -D_POSIX_C_SOURCE=200809L "-DCAPC_VERSION=\"0.1.0\"" -Iir -Ifrontend
                  -Ipasses -Icodegen -Idriver -Isupport -Iruntime/abi -Iruntime/core -Iruntime/data
                  -Iruntime/caption -Iruntime/cli)
    local clang_inc
    clang_inc=$(ls -d /usr/lib/llvm-*/include 2>/dev/null | tail -1)
    { echo 'const char capc_artifact_header_text[] = {'
      od -An -v -tx1 runtime/abi/cap_artifact.h | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'
      echo '0x00};'; } >"$B/cap_artifact_text.c"
    run "cc build capc" 300 cc "${cflags[@]}" -I"$clang_inc" ir/*.c frontend/*.c passes/*.c \
        codegen/*.c support/*.c driver/*.c "$B/cap_artifact_text.c" \
        -L"${clang_inc%/include}/lib" -lclang -lcjson -lm -ldl -lpthread -o "$B/capc" || return 1
    run "cc build libcaprt" 300 cc "${cflags[@]}" -shared -fPIC runtime/core/*.c runtime/data/*.c \
        runtime/caption/*.c support/*.c -o "$B/libcaprt.so" \
        -lcjson -ljpeg -lpng -lm -ldl -lpthread || return 1
    run "cc build cap" 120 cc "${cflags[@]}" runtime/cli/*.c -o "$B/cap" \
        -L"$B" -lcaprt -Wl,-rpath,"$PWD/$B" -lcjson -lm || return 1
    run "cc build cap_bench_step" 60 cc "${cflags[@]}" bench/bench_step.c -o "$B/cap_bench_step" \
        -L"$B" -lcaprt -Wl,-rpath,"$PWD/$B"
}

build() {
    # Carried from another machine (--prepare there): cmake's cache names that machine's
    # paths, so use the binaries as they are.
    if [ -f "$B/.prepared" ] && [ "$(cat "$B/.prepared")" != "$PWD" ] && [ -x "$B/capc" ]; then
        say "note: using the prebuilt binaries in $B (prepared in $(cat "$B/.prepared"))"
        return 0
    fi
    local missing=""
    for p in libcjson openblas libpng libjpeg; do have_pkg $p || missing="$missing $p"; done
    command -v cc >/dev/null || missing="$missing cc"
    if [ -n "$missing" ]; then
        say "note: missing to build here:$missing"
    elif command -v cmake >/dev/null; then
        cmake_build && return 0
    else
        say "note: no cmake: plain cc build"
        cc_build && return 0
    fi
    if [ -x "$B/capc" ] && [ -x "$B/cap" ]; then
        say "note: using the prebuilt binaries in $B (bench/gpu-check.sh --prepare)"
        return 0
    fi
    say "[FAIL] no build and no prebuilt $B: run bench/gpu-check.sh --prepare on a build machine"
    return 1
}

# Copies the non-system shared libraries the binaries need into $B/libs.
copy_libs() {
    mkdir -p "$B/libs"
    cp -Lu "$B"/libcaprt.so "$B/libs/" # the build tree's rpath names this machine's path
    for bin in "$B"/capc "$B"/cap "$B"/libcaprt.so "$B"/cap_bench_step "$B"/tests/*/test_cuda_* \
        "$B"/models/*.so; do
        [ -f "$bin" ] || continue
        ldd "$bin" 2>/dev/null | awk '/=> \//{print $3}' |
            grep -E 'cjson|cmocka|openblas|gfortran|quadmath|png|jpeg|gomp' |
            while read -r l; do cp -Lu "$l" "$B/libs/"; done
    done
}

compile_model() { # NAME BATCH -> $B/models/NAME.so
    mkdir -p "$B/models"
    run "capc captioner_tiny -D batch=$2 --target=all" 300 "$B/capc" models/captioner_tiny.json \
        -D batch="$2" -D dropout=0 --target=all -o "$B/models/$1.so"
}

# --prepare: builds in $B-full, then packs what a GPU machine needs into $B/prebuilt.tar.gz
# (~12 MB: OpenBLAS alone is 35 MB unpacked, and a call may carry 64 MiB in all).
if [ "${1:-}" = "--prepare" ]; then
    CARRY=$B
    B=$B-full
    build || exit 1
    compile_model tiny_b2 2
    compile_model tiny_b16 16
    copy_libs # the binaries' and the models' libraries (OpenBLAS, libgomp, ...)
    echo "$PWD" >"$B/.prepared"
    rm -rf "$CARRY" && mkdir -p "$CARRY"
    (cd "$B" && tar -czf "../$CARRY/prebuilt.tar.gz" .prepared capc cap cap_bench_step \
        libcaprt.so libs models $(ls tests/codegen/test_cuda_kernels \
        tests/runtime/test_cuda_backend tests/runtime/libfake_cuda.so 2>/dev/null))
    du -sh "$CARRY" | tee -a "$LOG"
    say "prepared $CARRY/prebuilt.tar.gz: carry $CARRY to the GPU machine, run bench/gpu-check.sh"
    exit $FAILS
fi
if [ -f "$B/prebuilt.tar.gz" ] && [ ! -x "$B/capc" ]; then
    tar -xzf "$B/prebuilt.tar.gz" -C "$B" || say "[FAIL] cannot unpack $B/prebuilt.tar.gz"
fi

say "gpu-check $(date -u +%FT%TZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null)"
build || exit 1
[ -d "$B/libs" ] && export LD_LIBRARY_PATH="$PWD/$B/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CAPC_SOURCE_DIR=$PWD CAPC_BIN=$PWD/$B/capc

# ---- the GPU --------------------------------------------------------------------------------
GPU=0
if command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi >>"$LOG" 2>&1; then
    say "$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
fi
if [ -f "$B/models/tiny_b2.so" ] || compile_model tiny_b2 2; then
    CUDA_LINE=$("$B/cap" info "$B/models/tiny_b2.so" 2>&1 | grep '^backends:')
    say "$CUDA_LINE"
    case "$CUDA_LINE" in *"cuda: available"*) GPU=1 ;; esac
fi
[ $GPU = 1 ] || say "no GPU: cuda checks skipped"

# ---- tests ----------------------------------------------------------------------------------
export CAP_TINY_SO=$PWD/$B/models/tiny_b2.so
for t in codegen/test_cuda_kernels runtime/test_cuda_backend; do
    if [ -x "$B/tests/$t" ]; then
        n=$(wc -l <"$LOG")
        FAKE_CUDA_DRIVER=$(ls "$PWD/$B"/tests/runtime/libfake_cuda.so 2>/dev/null) \
            run "$(basename $t)" 240 "$B/tests/$t"
        tail -n +"$((n + 1))" "$LOG" | grep -E 'PASSED|FAILED|SKIPPED TEST|GPU|worst mixed|loss cpu|PyTorch|differs' | head -12
    else
        say "note: $t not built (no cmocka): skipped"
    fi
done

# ---- cap loss: cuda vs golden vs cpu --------------------------------------------------------
W=tests/golden/tiny_weights.safetensors
BT=tests/golden/tiny_batch.safetensors
if [ -f "$CAP_TINY_SO" ]; then
    GOLD_EVAL=6.7813611325330792 GOLD_TRAIN=6.9691887917448163
    for mode in eval train; do
        for be in cpu cuda; do
            [ $be = cuda ] && [ $GPU = 0 ] && continue
            L=$(timeout 120 "$B/cap" loss "$CAP_TINY_SO" --weights $W --batch $BT --mode $mode \
                --backend $be 2>>"$LOG" | awk '/^loss:/{print $2}')
            eval "LOSS_${mode}_${be}=${L:-nan}"
        done
        g=$([ $mode = eval ] && echo $GOLD_EVAL || echo $GOLD_TRAIN)
        c=$(eval echo "\$LOSS_${mode}_cpu")
        u=$(eval echo "\${LOSS_${mode}_cuda:-skipped}")
        say "$(python3 - "$mode" "$g" "$c" "$u" <<'EOF'
import sys
mode, g, c, u = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
line = f"loss {mode}: golden {g:.7f}  cpu {c:.7f} (rel {abs(c-g)/g:.2e})"
if u != "skipped":
    u = float(u)
    ok = abs(u - g) <= 1e-4 * g and abs(u - c) <= 1e-4 * abs(c)
    line += f"  cuda {u:.7f} (rel golden {abs(u-g)/g:.2e}, rel cpu {abs(u-c)/abs(c):.2e}) {'OK' if ok else 'MISMATCH'}"
else:
    line += "  cuda skipped"
print(line)
EOF
)"
    done
fi

# ---- timings --------------------------------------------------------------------------------
[ -f "$B/models/tiny_b16.so" ] || compile_model tiny_b16 16
for b in 16 2; do
    so=$B/models/tiny_b$b.so
    [ -f "$so" ] || continue
    say "batch $b: $("$B/cap" info "$so" | grep -m1 '^  train_step:' | sed 's/^ *//')"
    for be in cuda cpu; do
        [ $be = cuda ] && [ $GPU = 0 ] && continue
        iters=20
        [ $be = cpu ] && [ $b = 16 ] && iters=5 # the cpu step at batch 16 takes seconds
        line=$(timeout 150 "$B/cap_bench_step" "$so" $be train_step $iters 2 2>&1 | tail -1)
        say "batch $b: $line"
    done
done
if [ $GPU = 1 ] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    for b in 16 2; do
        say "batch $b: $(timeout 120 python3 bench/torch_step.py --batch $b 2>>"$LOG" | tail -1)"
    done
else
    say "pytorch timing skipped (no GPU or no torch)"
fi

say "done in $(( $(date +%s) - START ))s, $FAILS failed step(s); full log: $LOG"
exit $FAILS
