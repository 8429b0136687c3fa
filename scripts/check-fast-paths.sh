#!/usr/bin/env bash
# Checks the fast-path budgets written in the source (`// fast-path budget: malloc 25
# instructions, 4 branches`, found anywhere under allocator/src) against libtally.so: callgrind
# counts the instructions one malloc and one free execute on a thread-cache hit, and one realloc
# moving a small block to another small class (hits for the new block and the old; its copy,
# a call of the C library's memcpy, not counted), objdump says which of them are conditional
# branches. The same for Rust's `__rust_alloc` and `__rust_dealloc` (budgets `rust_alloc` and
# `rust_dealloc`) with Tally as the global allocator: `criterion_once alloc_free/16`, 16-byte
# blocks allocated and freed by their layout. Prints a table; exits 1 with one line per
# difference (measured vs written, and where the comment is) or missing budget.
#
# Usage: scripts/check-fast-paths.sh [--lib PATH] [--rust-bin PATH] [--self-test]
#   --lib PATH       check this libtally.so instead of building target/release/libtally.so
#   --rust-bin PATH  this criterion_once instead of building target/release/criterion_once
#   --self-test      also check that wrong budgets fail: the measurement against copies of the
#                    source with a budget off by one instruction, off by one branch, and missing
# Needs valgrind, objdump and nm (binutils), cc and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/preload-callgrind.sh
source scripts/preload-callgrind.sh

usage() { sed -n '11,16s/^# \{0,1\}//p' "$0"; }
lib=""
rust_bin=""
self_test=0
while (($#)); do
    case "$1" in
    --lib)
        (($# >= 2)) || { echo "check-fast-paths: --lib needs a path" >&2; exit 2; }
        lib="$2"
        shift 2
        ;;
    --rust-bin)
        (($# >= 2)) || { echo "check-fast-paths: --rust-bin needs a path" >&2; exit 2; }
        rust_bin="$2"
        shift 2
        ;;
    --self-test) self_test=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "check-fast-paths: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

need_tools check-fast-paths valgrind objdump nm cc python3
lib=$(library check-fast-paths "$lib")
if [[ -z "$rust_bin" ]]; then
    cargo build --release -p tally-benches --bin criterion_once >&2
    rust_bin=target/release/criterion_once
fi
[[ -x "$rust_bin" ]] || { echo "check-fast-paths: no program at $rust_bin" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cc -O1 -fno-builtin -o "$work/driver" scripts/fast-paths/driver.c

# Two runs differing only in the number of malloc/free pairs: subtracting one from the other
# leaves the hit path (start-up, the warm-up miss and the exit handlers cancel out).
short=20000
delta=100000
profile() { # ITERATIONS OUT [realloc]
    preloaded_callgrind check-fast-paths "$lib" "$2" "$work/driver" "$1" ${3:+"$3"}
}
profile "$short" "$work/short.out"
profile $((short + delta)) "$work/long.out"
profile "$short" "$work/realloc-short.out" realloc
profile $((short + delta)) "$work/realloc-long.out" realloc
# The Rust program links Tally itself: nothing to preload.
callgrind_profile check-fast-paths "$work/rust-short.out" "$rust_bin" alloc_free/16 "$short"
callgrind_profile check-fast-paths "$work/rust-long.out" "$rust_bin" alloc_free/16 \
    $((short + delta))

compare() { # SOURCE-DIR ROOT (messages name files relative to ROOT)
    python3 scripts/fast-paths/measure.py --lib "$lib" --src "$1" --root "$2" \
        --small "$work/short.out" --large "$work/long.out" --delta "$delta" \
        --realloc-small "$work/realloc-short.out" --realloc-large "$work/realloc-long.out" \
        --rust-bin "$rust_bin" --rust-small "$work/rust-short.out" \
        --rust-large "$work/rust-long.out"
}

status=0
compare allocator/src "$PWD" || status=$?
if ((status != 0)); then
    echo "check-fast-paths: budgets do not match ${lib#"$PWD"/} (fix the code or the comment; docs/architecture.md, \"The fast paths\", quotes the numbers)" >&2
    exit "$status"
fi
echo "check-fast-paths: budgets match"
((self_test)) || exit 0

# Self-test: each of these copies of the source is wrong in one way and must fail with exit 1
# and a line naming the symbol.
mutate() { # NAME PERL-PROGRAM (run on each line of every source file) EXPECTED-MESSAGE
    rm -rf "$work/copy"
    mkdir -p "$work/copy/allocator"
    cp -r allocator/src "$work/copy/allocator/src"
    find "$work/copy" -name '*.rs' -exec perl -ni -e "$2" {} +
    local out rc=0
    out=$(compare "$work/copy/allocator/src" "$work/copy" 2>&1) || rc=$?
    if ((rc != 1)) || ! grep -q "FAIL: .*$3" <<<"$out"; then
        echo "$out" >&2
        echo "check-fast-paths: self-test '$1' should have failed with exit 1 and '$3' (exit $rc)" >&2
        exit 1
    fi
    echo "self-test '$1': rejected: $(grep -m1 'FAIL' <<<"$out" | sed 's/^check-fast-paths: FAIL: //')"
}
mutate "malloc budget one instruction short" \
    's/(fast-path budget: malloc )(\d+)/$1 . ($2 - 1)/e; print' "malloc: measured"
mutate "free budget one branch more" \
    's/(fast-path budget: free \d+ instructions?, )(\d+)/$1 . ($2 + 1)/e; print' "free: measured"
mutate "free budget missing" 'print unless /fast-path budget: free /' "free: no budget comment"
mutate "realloc budget one instruction more" \
    's/(fast-path budget: realloc )(\d+)/$1 . ($2 + 1)/e; print' "realloc: measured"
mutate "rust_dealloc budget one instruction short" \
    's/(fast-path budget: rust_dealloc )(\d+)/$1 . ($2 - 1)/e; print' "rust_dealloc: measured"
mutate "rust_alloc budget missing" 'print unless /fast-path budget: rust_alloc /' \
    "rust_alloc: no budget comment"
echo "check-fast-paths: self-test passed"
