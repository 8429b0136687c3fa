#!/bin/sh
# Cost per frame of the profiler's stack walkers and of framehop (docs/unwinding.md), with the
# profiler's DWARF walker of an earlier commit on the same stacks as a baseline.
#
#   benches/run-unwind-cost.sh [BASE_COMMIT [RUNS]]     (defaults: 6622eb4, before mixed walks; 5)
#
# Builds `unwind_cost` twice with frame pointers forced (so that the frame-pointer walker has
# chains to follow through the Rust frames): from this tree, and from a copy of it whose
# profiler/src/cfi.rs is BASE_COMMIT's. Then runs the two RUNS times each, alternately, and
# prints the medians over all rounds. Raw lines: target/bench/unwind/raw.tsv.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
base=${1:-6622eb4}
runs=${2:-5}
out=$root/target/bench/unwind
mkdir -p "$out"
export RUSTFLAGS="-C force-frame-pointers=yes"
build="nice -n 10 cargo build --release -q -p tally-benches --no-default-features --bin unwind_cost"

CARGO_TARGET_DIR=$root/target/unwind-cost $build
tree=$out/base-tree
rm -rf "$tree"
mkdir -p "$tree"
git ls-files -z | xargs -0 tar -cf - 2>/dev/null | tar -xf - -C "$tree"
git show "$base:profiler/src/cfi.rs" >"$tree/profiler/src/cfi.rs"
(cd "$tree" && CARGO_TARGET_DIR=$root/target/unwind-cost-base $build)

new=$root/target/unwind-cost/release/unwind_cost
old=$root/target/unwind-cost-base/release/unwind_cost
: >"$out/raw.tsv"
i=0
while [ "$i" -lt "$runs" ]; do
    nice -n 10 "$new" --label this >>"$out/raw.tsv"
    nice -n 10 "$old" --label "$base" >>"$out/raw.tsv"
    i=$((i + 1))
done
grep -E '^(alloc|frames)' "$out/raw.tsv" | grep -v "^frames.*	$base	" | sort -u | cut -c1-160
"$new" --summarize "$out/raw.tsv"
