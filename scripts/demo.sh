#!/usr/bin/env bash
# The main job: build libtally.so and the tally command, run the bundled leaking demo under Tally
# with the profiler on, and print the report of where its live memory was allocated.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p tally-alloc -p tally-report -p tally-jvm-agent
mkdir -p "$target/demo"
cc -O1 -g -o "$target/demo/leaky" demo/leaky.c
echo "== tally run -- demo/leaky.c (profiles in $target/demo)"
TALLY_SO="$target/release/libtally.so" "$target/release/tally" run --out "$target/demo" --lines --top 10 \
    --conf "prof_leak:true${TALLY_CONF:+,$TALLY_CONF}" -- "$target/demo/leaky" "${1:-50000}"
