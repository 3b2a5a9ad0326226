#!/usr/bin/env bash
# Captures the explorer's screens as a new user sees them, in tmux, into results/explorer-*.txt:
#   explorer-auto-120x40.txt       the first command, then `a` (auto-run) for AUTO_SECONDS
#   explorer-rejected-120x40.txt   stepping users with space until a rejected strict depth shows
#                                  the target beams the draft missed, with their draft rank
#   explorer-relaxed-120x40.txt    a relaxed round (shipped session): u and p/q per drafted beam
#   explorer-rejected-80x24.txt    the same rejected depth at 80x24 (tabs, caption line)
#   explorer-results-80x24.txt     the results tab at 80x24 after an auto-run
# Usage: scripts/capture-explorer.sh [AUTO_SECONDS]   (default 120; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
auto=${1:-120}
cargo build --release --quiet
bin=./target/release/atspeed
out=results
mkdir -p "$out"
session=atspeed-capture-$$

cleanup() { tmux kill-session -t "$session" 2>/dev/null || true; }
trap cleanup EXIT

start() { # start WIDTH HEIGHT ARGS...
  local w=$1 h=$2
  shift 2
  cleanup
  tmux new-session -d -s "$session" -x "$w" -y "$h" "$bin $*"
}
keys() { tmux send-keys -t "$session" "$@"; }
screen() { tmux capture-pane -p -t "$session"; }
# Waits until the header no longer says the shape is being tuned (at most 180 s).
wait_tuned() {
  for _ in $(seq 1 180); do
    if screen | head -2 | grep -q "tuned for\|set by hand\|paper preset ·"; then return 0; fi
    sleep 1
  done
}
# Steps users (n, then space through draft, verify, accept) until a rejected depth shows.
find_rejected() {
  for _ in $(seq 1 40); do
    keys n
    sleep 1.5
    for _ in 1 2 3; do keys " "; sleep 0.3; done
    sleep 0.5
    if screen | grep -q "missed <"; then return 0; fi
  done
  return 1
}

# 1. The first command, then `a`.
start 120 40
sleep 3
wait_tuned
keys a
sleep "$auto"
screen > "$out/explorer-auto-120x40.txt"
keys a
sleep 1

# 2. A rejected depth, stepping with space.
find_rejected
screen > "$out/explorer-rejected-120x40.txt"

# 3. At 80x24 (same explorer, resized): the decode tab at a rejected depth, then the results.
tmux resize-window -t "$session" -x 80 -y 24 2>/dev/null || true
sleep 1
keys 1
sleep 0.5
screen > "$out/explorer-rejected-80x24.txt"
keys 3
sleep 0.5
screen > "$out/explorer-results-80x24.txt"

# 4. A relaxed round from the shipped session: draft 1-3, verify, accept.
start 120 40 replay sessions/relaxed-demo.json
sleep 2
for _ in 1 2 3 4 5; do keys " "; sleep 0.3; done
sleep 0.5
screen > "$out/explorer-relaxed-120x40.txt"

ls -l "$out"/explorer-*.txt
