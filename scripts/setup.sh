#!/usr/bin/env bash
# Installs the Debian packages capc needs that are missing (run as root on Debian 12 or newer).
# The CUDA toolkit is not a Debian package here: capc uses the one at /usr/local/cuda when it
# is there (NVRTC compile checks) and works without it.
set -euo pipefail

# python3 runs scripts/param_counts.py for the models_* tests (a fresh Debian image has no
# python3; without it CMake turns those tests off). libclang-dev is required: capc reads the
# C sources of custom functions with it (docs/custom-ops.md). clang brings libFuzzer
# (compiler-rt) for the fuzz targets (tests/fuzz, scripts/fuzz.sh); without it the fuzz tests
# are reported as skipped.
# libopenmpi-dev and openmpi-bin: data-parallel `mpirun -np N cap train` and its test
# (docs/distributed.md); without them cap trains in one process.
packages=(build-essential cmake pkg-config libcjson-dev libcmocka-dev libopenblas-dev
          libjpeg-dev libpng-dev python3 libclang-dev clang libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all Debian packages present"
fi
if [ -x /usr/local/cuda/bin/nvcc ] || [ -e /usr/local/cuda/lib64/libnvrtc.so ]; then
  echo "setup: CUDA toolkit found at /usr/local/cuda (NVRTC checks on)"
else
  echo "setup: no CUDA toolkit at /usr/local/cuda (NVRTC checks off; everything else works)"
fi
