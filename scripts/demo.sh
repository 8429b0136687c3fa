#!/usr/bin/env bash
# The main job: build libtally.so, run the bundled leaking demo under it, print what Tally saw.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p tally
mkdir -p "$target/demo"
cc -O1 -g -o "$target/demo/leaky" demo/leaky.c
echo "== demo/leaky.c under LD_PRELOAD=$target/release/libtally.so"
LD_PRELOAD="$target/release/libtally.so" TALLY_CONF="stats_print:true${TALLY_CONF:+,$TALLY_CONF}" \
    "$target/demo/leaky" "${1:-50000}"
