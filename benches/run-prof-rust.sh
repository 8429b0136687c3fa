#!/usr/bin/env bash
# What Tally's profiler costs the Rust micro workloads (the Criterion workloads of the
# GlobalAlloc path) in one command (see docs/benchmarks.md):
#
#   benches/run-prof-rust.sh [prof_rust options]      e.g. --rounds 9, --filter alloc_free, --quick
#
# Builds criterion_once (Tally as the global allocator) and prof_rust, then runs every workload
# in criterion_once with TALLY_CONF=prof:false and prof:true in interleaved rounds: the same
# program both ways, each round both settings one right after the other (Criterion's tally and
# tally+prof columns are runs minutes apart). Writes the table of median ns an iteration and
# ratios to target/bench/prof-rust.md. About 4 minutes at the default 7 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tally-benches --bin criterion_once --bin prof_rust >&2
target="${CARGO_TARGET_DIR:-$PWD/target}"
exec "$target/release/prof_rust" "$@"
