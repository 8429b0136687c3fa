#!/usr/bin/env bash
# Memory given back after a spike, under each allocator (see docs/benchmarks.md):
#   benches/run-rss.sh            # all allocators, default settings
# Needs: cc, and the peers from Debian (libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4),
# which it installs if missing and it runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=/usr/lib/x86_64-linux-gnu
if [[ ! -e $lib/libjemalloc.so.2 || ! -e $lib/libmimalloc.so.2 || ! -e $lib/libtcmalloc_minimal.so.4 ]]; then
    apt-get install -y -q libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 >/dev/null
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p tally-alloc >/dev/null
mkdir -p "$target/bench"
cc -O2 -o "$target/bench/rss" benches/rss/rss.c
declare -A preload=(
    [glibc]=""
    [tally]="$target/release/libtally.so"
    [jemalloc]="$lib/libjemalloc.so.2"
    [mimalloc]="$lib/libmimalloc.so.2"
    [tcmalloc]="$lib/libtcmalloc_minimal.so.4"
)
for mode in decay trim; do
    for a in glibc tally jemalloc mimalloc tcmalloc; do
        printf 'allocator=%s ' "$a"
        LD_PRELOAD="${preload[$a]}" "$target/bench/rss" "$mode"
    done
done
