#!/usr/bin/env bash
# Tally against the allocator crates on the Rust micro workloads (the Criterion workloads of the
# GlobalAlloc path) in one command (see docs/benchmarks.md):
#
#   benches/run-rust-crates.sh [rust_crates options]      e.g. --rounds 9, --filter alloc_free, --quick
#
# Builds criterion_once (Tally, run with TALLY_CONF=prof:false) and its twins under System,
# mimalloc, tikv-jemallocator and stoolap-jemalloc, then runs every workload in every program in
# interleaved rounds: each round every program one right after the other, the order rotated
# (Criterion's table, benches/run-criterion.sh, runs one program after the other, minutes apart).
# Writes the medians, Tally against the fastest crate and the heavy workloads' peak RSS to
# target/bench/rust-crates.md. About 15 minutes at the default 7 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tally-benches --bin criterion_once --bin criterion_once_system \
    --bin criterion_once_mimalloc --bin criterion_once_jemalloc --bin criterion_once_stoolap \
    --bin rust_crates >&2
target="${CARGO_TARGET_DIR:-$PWD/target}"
exec "$target/release/rust_crates" "$@"
