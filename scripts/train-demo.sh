#!/usr/bin/env bash
# Rebuilds the shipped demo models in assets/models from assets/beauty with the project's own
# commands (the provenance recorded in assets/README.md). CPU, 2 cores: about two hours.
# RUNS=DIR keeps the intermediate runs (default /tmp/atspeed-runs).
set -euo pipefail
cd "$(dirname "$0")/.."
A=./target/release/atspeed
RUNS=${RUNS:-/tmp/atspeed-runs}
mkdir -p "$RUNS"
cargo build --release
export CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1}

# 1. The target: 8 layers x 128, 2 epochs over every sliding window of the training split.
$A train target --force --data assets/beauty --out "$RUNS/target" --layers 8 --hidden 128 --heads 4 --kv-heads 2 \
  --epochs 2 --batch-size 64 --lr 0.001 --valid-users 500 --seed 42
# 2. A 1-layer draft pre-trained on the ground truth only (every alignment run starts from it).
$A align --force --method sft --data assets/beauty --target "$RUNS/target" --out "$RUNS/sft-base" \
  --layers 1 --hidden 128 --heads 4 --kv-heads 2 --epochs 2 --valid-users 0 --patience 0 --seed 7
# 3. Teacher beams: the target's top-20 for the last training position of every user.
$A teacher --force --data assets/beauty --target "$RUNS/target" --k 20 --last-only --out "$RUNS/teacher.bin"
# 4. One epoch of each objective from the same start, on the same samples (alpha 0.7, K 20, T 1).
for m in sft wordkd tvdkd seqkd atspeed-s atspeed-r; do
  $A align --force --method "$m" --data assets/beauty --target "$RUNS/target" --teacher "$RUNS/teacher.bin" \
    --init "$RUNS/sft-base" --out "$RUNS/$m" --epochs 1 --last-only --valid-users 300 --seed 11
done
# 5. The shipped AtSpeed-S: one epoch on 5x the data, 50,000 sliding windows with their beams.
$A teacher --force --data assets/beauty --target "$RUNS/target" --k 20 --max-samples 50000 --out "$RUNS/teacher-sliding50k.bin"
$A align --force --method atspeed-s --data assets/beauty --target "$RUNS/target" --teacher "$RUNS/teacher-sliding50k.bin" \
  --init "$RUNS/sft" --out "$RUNS/atspeed-s-s50k" --epochs 1 --valid-users 300 --seed 11
for m in target sft atspeed-s-s50k atspeed-r; do
  name=${m%-s50k}
  mkdir -p "assets/models/$name"
  cp "$RUNS/$m"/{config.json,model.safetensors,tokenizer.json,train_report.json} "assets/models/$name/"
done
