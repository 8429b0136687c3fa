#!/usr/bin/env bash
# What each allocator does with the mistakes of benches/programs/mistakes.c (double frees,
# realloc of a freed block, frees of never-allocated or interior pointers), with a 100-byte and
# a 5000-byte block: the first line it printed, or how it died. Prints one block per allocator.
#
# Usage: benches/run-mistakes.sh   (glibc, target/release/libtally.so, and jemalloc, mimalloc,
# tcmalloc where Debian's packages are installed)
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tally-alloc >&2 || exit 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O0 -o "$work/mistakes" benches/programs/mistakes.c -lpthread || exit 2
lib=/usr/lib/x86_64-linux-gnu
for pair in glibc: tally:"$PWD/target/release/libtally.so" jemalloc:$lib/libjemalloc.so.2 \
    mimalloc:$lib/libmimalloc.so.2 tcmalloc:$lib/libtcmalloc_minimal.so.4; do
    name=${pair%%:*} so=${pair#*:}
    [[ -z "$so" || -f "$so" ]] || continue
    echo "== $name"
    for size in 100 5000; do
        for case in 0 1 2 3 4 5; do
            out=$(env -u TALLY_CONF -u MALLOC_CONF ${so:+LD_PRELOAD=$so} timeout 10 \
                "$work/mistakes" "$case" "$size" 2>&1 | head -1)
            rc=${PIPESTATUS[0]}
            ((rc > 128)) && out="$out [killed by signal $((rc - 128))]"
            printf '  case %s, %5s B: %s\n' "$case" "$size" "$out"
        done
    done
done
