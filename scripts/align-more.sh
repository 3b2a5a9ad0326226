#!/usr/bin/env bash
# The follow-up alignment runs of results/table1.md's last rows: more epochs on the same
# last-only samples, and one epoch on 50,000 sliding-window samples (5x the data; the shipped
# atspeed-s is the AtSpeed-S run of this kind, see scripts/train-demo.sh). Every run starts from
# the shipped SFT draft. CPU, one thread each: about 1 h 10 min in all.
# RUNS=DIR keeps the runs (default /tmp/atspeed-runs); the benches land in results/.
set -euo pipefail
cd "$(dirname "$0")/.."
A=./target/release/atspeed
RUNS=${RUNS:-/tmp/atspeed-runs}
mkdir -p "$RUNS"
cargo build --release
export CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1}
common=(--data assets/beauty --target assets/models/target --init assets/models/sft --valid-users 300 --seed 11)

# 1. Four epochs instead of one, on the reference's last-only samples.
[ -f "$RUNS/teacher.bin" ] || $A teacher --force --data assets/beauty --target assets/models/target --k 20 --last-only --out "$RUNS/teacher.bin"
$A align --force --method atspeed-s "${common[@]}" --teacher "$RUNS/teacher.bin" --out "$RUNS/atspeed-s-e4" \
  --epochs 4 --last-only --patience 2

# 2. One epoch on 50,000 of the 102,858 sliding windows of the training split.
$A teacher --force --data assets/beauty --target assets/models/target --k 20 --max-samples 50000 \
  --out "$RUNS/teacher-sliding50k.bin"
for m in seqkd atspeed-s; do
  $A align --force --method $m "${common[@]}" --teacher "$RUNS/teacher-sliding50k.bin" --out "$RUNS/$m-s50k" --epochs 1
done

for run in atspeed-s-e4 seqkd-s50k atspeed-s-s50k; do
  $A bench --draft "$RUNS/$run" --mode strict --k 1,3,5,10,20 --n 40 --gamma 3 --users 500 \
    --json "results/bench-strict-$run.json" > "results/bench-strict-$run.txt"
done
