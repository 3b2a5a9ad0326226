#!/usr/bin/env bash
# Builds the CUDA binary on a machine with no GPU and no CUDA toolkit, and fails loudly if it does
# not compile or link. Not part of CI (it downloads ~1.2 GB of CUDA wheels and takes minutes).
#
#   scripts/check-cuda-build.sh            # from the repository root; the recipe is ../shared/gpu
#
# The binary lands in target-cuda/release/atspeed (a target folder of its own, so the CPU build
# is left alone) and a gzipped copy in .gpu/atspeed.gz for the device call (scripts/device-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR="${ATSPEED_GPU_RECIPE:-../shared/gpu}"
if [ ! -f "$GPU_DIR/cuda-env.sh" ]; then
  echo "check-cuda-build: no $GPU_DIR/cuda-env.sh (set ATSPEED_GPU_RECIPE to the folder holding it)" >&2
  exit 1
fi
start=$(date +%s)
# shellcheck disable=SC1091
source "$GPU_DIR/cuda-env.sh" || { echo "check-cuda-build: the CUDA wheels did not install" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-cuda}"
if ! cargo build --release --features cuda --bin atspeed; then
  echo "check-cuda-build: FAILED to compile or link with --features cuda" >&2
  exit 1
fi
bin="$CARGO_TARGET_DIR/release/atspeed"
# It must link the CUDA libraries dynamically (the driver's libcuda at run time).
for lib in libcuda.so.1 libcublas.so; do
  if ! readelf -d "$bin" | grep -q "NEEDED.*$lib"; then
    echo "check-cuda-build: $bin does not link $lib" >&2
    exit 1
  fi
done
"$bin" --version >/dev/null 2>&1 || "$bin" --help >/dev/null 2>&1 || true
mkdir -p .gpu
gzip -c "$bin" > .gpu/atspeed.gz
cp "$GPU_DIR/device-preamble.sh" .gpu/ 2>/dev/null || true
echo "check-cuda-build: OK in $(( $(date +%s) - start )) s: $bin ($(du -h "$bin" | cut -f1)), .gpu/atspeed.gz ($(du -h .gpu/atspeed.gz | cut -f1))"
