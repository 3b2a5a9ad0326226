#!/usr/bin/env bash
# The results table of the training issue (the paper's Table 1 for our models): every draft,
# strict and relaxed, K in {1,3,5,10,20}, N = 40, gamma = 3, on USERS Beauty test users (default
# 500). Drafts come from RUNS (scripts/train-demo.sh) or, for the shipped ones, assets/models.
# CPU, 2 cores: about 3 minutes per draft and mode. Output: results/table1.md and the JSON reports.
set -euo pipefail
cd "$(dirname "$0")/.."
A=./target/release/atspeed
RUNS=${RUNS:-/tmp/atspeed-runs}
USERS=${USERS:-500}
OUTDIR=${OUTDIR:-results}
mkdir -p "$OUTDIR"
cargo build --release
specs=()
for mode in strict relaxed; do
  for m in sft wordkd tvdkd seqkd atspeed-s atspeed-r; do
    dir="$RUNS/$m"; [ -d "$dir" ] || dir="assets/models/$m"
    [ -d "$dir" ] || { echo "skipping $m: no checkpoint" >&2; continue; }
    json="$OUTDIR/bench-$mode-$m.json"
    $A bench --data assets/beauty --target assets/models/target --draft "$dir" --mode "$mode" \
      --k 1,3,5,10,20 --n 40 --gamma 3 --users "$USERS" --json "$json" > "$OUTDIR/bench-$mode-$m.txt"
    specs+=("$m=$json")
  done
done
$A report "${specs[@]}" | tee "$OUTDIR/table1.md"
