#!/usr/bin/env bash
# Profiles the server during one workload, the way the figures in docs/benchmarks.md were
# explained: `perf record --call-graph dwarf` on a release `spool serve` while `spool-bench`
# runs against it, then a summary of where the server's CPU went (by thread and by part) and
# who calls malloc. Needs `perf` (linux-perf); bounded: the recording lasts SECONDS.
#
#   bash bench/profile.sh [steady|fill-drain] [SECONDS] [DELAY]
#
# DELAY (default 3 s) is how long the workload runs before the recording starts: for the drain
# phase of fill-drain, about the fill's duration (e.g. 14 for 1M messages).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-steady}"
SECONDS_RECORDED="${2:-2}"
DELAY="${3:-3}"
OUT="${OUT:-bench-results/profile-$MODE}"
PORT="${PORT:-50061}"
mkdir -p "$(dirname "$OUT")"

command -v perf >/dev/null || { echo "perf is not installed (apt install linux-perf)" >&2; exit 1; }
cargo build --release --workspace
DATA="$(mktemp -d "${TMPDIR:-/tmp}/spool-profile.XXXXXX")"
target/release/spool serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log warn &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 1

target/release/spool-bench --targets spool --spool "http://127.0.0.1:$PORT" --mode "$MODE" \
  -P 4 -C 4 -N 1000000 -S 256 -B 16 --max-seconds 120 >"$OUT.bench.txt" &
BENCH=$!
sleep "$DELAY"
perf record -e cpu-clock --call-graph dwarf,16384 -p "$SERVER" -o "$OUT.data" \
  -- sleep "$SECONDS_RECORDED"
wait $BENCH
perf script -i "$OUT.data" >"$OUT.txt" 2>/dev/null
python3 bench/profile_summary.py "$OUT.txt"
echo "workload: $OUT.bench.txt; samples: $OUT.txt"
