#!/usr/bin/env bash
# The one prepared GPU check (issue: real GPU inference). Run on the device machine from the
# repository root, with the gzipped CUDA binary and the preamble carried in .gpu/:
#
#   here:   source ../shared/gpu/cuda-env.sh && CARGO_TARGET_DIR=/root/cuda-target cargo build --release --features cuda
#           mkdir -p .gpu && gzip -c /root/cuda-target/release/atspeed > .gpu/atspeed.gz
#           cp ../shared/gpu/device-preamble.sh ../shared/gpu/nvcache-h100-*.tgz .gpu/
#   device: carry [".gpu"], command "bash scripts/device-check.sh", timeout_s 540
#   then:   command "STAGE=large bash scripts/device-check.sh", timeout_s 300 (same carry)
#
# STAGE=large (a second call): a random LLaMA-shaped target of about 1B parameters in bf16, written
# on the device by `new-model` (15 s), loaded and timed: selftest-free, a strict bench at K = 1, 5
# on 20 users with N and gamma tuned on 5, against a 2x512 random draft of the same vocabulary.
#
# Writes everything under $OUT (selftest JSON, bench JSON and tables, nvidia-smi) so the numbers
# come back even if a later step times out. Budget: about 6 minutes on an H100; the step caps
# (100 + 130 + 150 + 130 s) keep the whole script inside one 540 s call.
set -uo pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
gunzip -kf .gpu/atspeed.gz && chmod +x .gpu/atspeed
# shellcheck disable=SC1091
source .gpu/device-preamble.sh
BIN=.gpu/atspeed
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
export RUST_LOG=warn
if [ "${STAGE:-small}" = large ]; then
  {
    echo "== 1B-class bf16 target (22x2048, GQA 32/4, intermediate 5632) and a 2x512 draft"
    timeout 60 $BIN new-model --layers 22 --hidden 2048 --heads 32 --kv-heads 4 --intermediate 5632 \
      --dtype bf16 --out /tmp/llama1b
    timeout 30 $BIN new-model --layers 2 --hidden 512 --heads 8 --kv-heads 4 --dtype bf16 --out /tmp/draft512
    echo "== bench strict, bf16, K 1,5, 20 users, N and gamma tuned on 5"
    RUST_LOG=info timeout 200 $BIN bench --device cuda --dtype bf16 --target /tmp/llama1b --draft /tmp/draft512 \
      --k 1,5 --users 20 --warmup 3 --tune-n 5 --tune-gamma --max-n 40 --json "$OUT/bench-1b-bf16.json"
    echo "bench exit $?"
  } 2>&1 | tee "$OUT/device-check-large.log"
  exit 0
fi
{
  echo "== selftest (cuda, f32)"
  timeout 100 $BIN selftest --device cuda --users 200 --bench-users 50 --json "$OUT/selftest.json"
  echo "selftest exit $?"
  for mode in strict relaxed; do
    draft=assets/models/atspeed-s
    [ "$mode" = relaxed ] && draft=assets/models/atspeed-r
    echo "== bench $mode ($draft) on cuda, 500 users"
    timeout 130 $BIN bench --device cuda --mode $mode --draft $draft --k 1,3,5,10,20 --n 40 --gamma 3 \
      --users 500 --warmup 20 --json "$OUT/bench-$mode.json"
    echo "bench exit $?"
    if [ "$mode" = strict ]; then
      # The paper's N = 40 above; here the width this device runs fastest at, per K.
      echo "== bench strict ($draft) on cuda, N and gamma tuned per K on 25 validation users"
      # 34 widths x 3 depths on 25 users: about 2,600 tuning decodes before the 500 measured users.
      timeout 150 $BIN bench --device cuda --mode strict --draft $draft --k 1,3,5,10,20 --tune-n 25 --tune-gamma \
        --gamma 3 --users 500 --warmup 20 --json "$OUT/bench-strict-tuned.json"
      echo "bench exit $?"
    fi
  done
} 2>&1 | tee "$OUT/device-check.log"
