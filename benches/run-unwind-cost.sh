#!/bin/sh
# Cost per frame of the profiler's stack walkers and of framehop (docs/unwinding.md), with the
# profiler's DWARF walker of an earlier commit built into the same binary as a baseline.
#
#   benches/run-unwind-cost.sh [BASE_COMMIT [RUNS]]     (defaults: 6622eb4, before mixed walks; 5)
#
# Builds `unwind_cost` with frame pointers forced (so that the frame-pointer walker has chains to
# follow through the Rust frames) and with BASE_COMMIT's profiler/src/cfi.rs as walker
# `cfi-base`; runs it RUNS times (each run: 7 rounds, the walkers' order rotated every round)
# and prints the medians over all rounds. Raw lines: target/bench/unwind/raw.tsv. With valgrind
# installed, also the instructions per capture of each walker on the `rust` and `jit` stacks
# (callgrind, 3000 captures less 1000: a count that other processes on the machine do not move).
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
base=${1:-6622eb4}
runs=${2:-5}
out=$root/target/bench/unwind
mkdir -p "$out"
git show "$base:profiler/src/cfi.rs" >"$out/cfi_base.rs"
RUSTFLAGS="-C force-frame-pointers=yes" TALLY_UNWIND_BASE=$out/cfi_base.rs \
    CARGO_TARGET_DIR=$root/target/unwind-cost \
    nice -n 10 cargo build --release -q -p tally-benches --no-default-features --bin unwind_cost
bin=$root/target/unwind-cost/release/unwind_cost
: >"$out/raw.tsv"
i=0
while [ "$i" -lt "$runs" ]; do
    nice -n 10 "$bin" --label "run$i" >>"$out/raw.tsv"
    i=$((i + 1))
done
grep -E '^(alloc|frames)	run0' "$out/raw.tsv" | cut -c1-200
"$bin" --summarize "$out/raw.tsv"

if command -v valgrind >/dev/null; then
    echo
    echo "| stack | walker | instructions per capture |"
    echo "| --- | --- | ---: |"
    for stack in rust jit; do
        for walker in fp libgcc cfi cfi-this cfi-base framehop; do
            count() {
                valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --count "$stack" "$walker" "$1" 2>&1 |
                    awk '/Collected/ { print $4 }'
            }
            a=$(count 1000)
            b=$(count 3000)
            echo "| $stack | $walker | $(((b - a) / 2000)) |"
        done
    done
fi
