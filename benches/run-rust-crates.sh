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
#
#   benches/run-rust-crates.sh --aligned-branches [rust_crates options]
#
# builds every program with LLVM's -x86-branches-within-32B-boundaries (no jump across or
# ending at a 32-byte boundary, where Intel's Skylake-family cores since the JCC-erratum
# microcode cannot cache its decoded instructions) into target/aligned-branches, and writes
# target/bench/rust-crates-aligned-branches.md. Each program is a separate build of the same
# workload code, and where its hot loops land is luck: btree_map/1000 ran 25.7 us in Tally's
# program and 15.1 in mimalloc's, 19.1-20.0 and 20.2-20.6 with the branches kept within
# boundaries (docs/benchmarks.md, thirty-eighth pass).
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
if [[ "${1:-}" == --aligned-branches ]]; then
    shift
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C llvm-args=-x86-branches-within-32B-boundaries"
    export CARGO_TARGET_DIR="$PWD/target/aligned-branches"
    extra=(--out "$PWD/target/bench/rust-crates-aligned-branches.md"
        --build-note "every program with RUSTFLAGS=\"$RUSTFLAGS\"")
fi
cargo build --release -p tally-benches --bin criterion_once --bin criterion_once_system \
    --bin criterion_once_mimalloc --bin criterion_once_jemalloc --bin criterion_once_stoolap \
    --bin rust_crates >&2
target="${CARGO_TARGET_DIR:-$PWD/target}"
exec "$target/release/rust_crates" "${extra[@]}" "$@"
