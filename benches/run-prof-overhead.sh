#!/usr/bin/env bash
# Profiling overhead: the malloc/free micro-benchmark under Tally with the profiler off, on at the
# default rate (lg_prof_sample:19) and at lg_prof_sample:17, interleaved over ROUNDS rounds with
# the order rotated each round; median ns per pair and the ratio to profiling off, written to
# target/bench/prof-overhead.md (see docs/benchmarks.md). micro_runner does the runs and the table.
#   benches/run-prof-overhead.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-7}"
cargo build --release -p tally-benches --no-default-features --features tally \
    --bin micro_tally --bin micro_runner >/dev/null
target="${CARGO_TARGET_DIR:-$PWD/target}"
# The column `tally` must run with the profiler off whatever the caller's environment says.
exec env -u TALLY_CONF "$target/release/micro_runner" --rounds "$rounds" --baseline tally \
    --allocators tally,tally+prof,tally+prof17 --out "$target/bench/prof-overhead.md"
