#!/usr/bin/env bash
# What the profiler costs, in instructions (callgrind: repeatable whatever else the machine is
# doing): each Criterion workload given runs ITERATIONS times under Tally's `#[global_allocator]`
# (`criterion_once`) with `prof:false` and with `prof:true` at the default rate; the table gives
# instructions per iteration both ways, their ratio, the samples taken (calls of
# `prof_hooks::alloc_sampled`), and the instructions the profiler added per sample (the
# difference of the whole runs over the samples: capture, tables, the sampled block's pages, its
# free, and the extra thread events). Then the same for C's malloc/free pairs
# (benches/programs/pairs.c under LD_PRELOAD=libtally.so). See docs/benchmarks.md.
#
# Under valgrind every mapping lies low in the address space, so the profiler finds no sampled
# region apart from Tally's other chunks and Rust's `dealloc` tests page alignment instead
# (`prof_hooks::SPECIAL_MASK`): the Rust rows with the profiler on count that fallback, not what a
# program outside valgrind runs (there only sampled blocks take the checked path; time it with
# benches/run-criterion.sh). The C rows are the same either way.
#
# Usage: benches/run-prof-cost.sh [--conf OPTIONS] [WORKLOAD/PARAMETER ...]
#   --conf OPTIONS   the profiler's setting (default prof:true), e.g. prof:true,lg_prof_sample:17
#   default workloads: alloc_free/16 alloc_free/1024 alloc_free/4096 alloc_free/32768 batch64/64 vec_string/1000
set -euo pipefail
cd "$(dirname "$0")/.."
conf="prof:true"
if [[ "${1:-}" == --conf ]]; then conf="$2"; shift 2; fi
benches=("$@")
((${#benches[@]})) || benches=(alloc_free/16 alloc_free/1024 alloc_free/4096 alloc_free/32768 batch64/64 vec_string/1000)
command -v valgrind >/dev/null || { echo "run-prof-cost: needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
cargo build --release -p tally-alloc >&2
cargo build --release -p tally-benches --no-default-features --features tally --bin criterion_once >&2
target="${CARGO_TARGET_DIR:-$PWD/target}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O1 -fno-builtin -o "$work/pairs" benches/programs/pairs.c
# Bytes each run allocates: about 4 GiB of blocks (some 8000 samples at the default rate), at
# most 4 million iterations.
iterations() { # WORKLOAD/PARAMETER
    local w=${1%/*} p=${1#*/}
    case $w in
    alloc_free) echo $(( (1 << 32) / p < 4000000 ? (1 << 32) / p : 4000000 )) ;;
    batch64) echo $(( (1 << 32) / (64 * p) < 100000 ? (1 << 32) / (64 * p) : 100000 )) ;;
    *) echo 20000 ;;
    esac
}
# Runs the command under callgrind with TALLY_CONF=$1 and LD_PRELOAD=$2 (if not empty); prints
# "instructions samples".
count() { # CONF PRELOAD COMMAND...
    local c=$1 preload=$2; shift 2
    env -u MALLOC_CONF TALLY_CONF="$c" ${preload:+LD_PRELOAD=$preload} valgrind --tool=callgrind --compress-strings=no \
        --compress-pos=no --callgrind-out-file="$work/out" "$@" >"$work/log" 2>&1
    local total
    total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/log")
    echo "$total $(python3 benches/tools/callgrind_callees.py "$work/out" --into tally::prof_hooks::alloc_sampled | cut -d' ' -f1)"
}
row() { # NAME ITERATIONS PRELOAD COMMAND...
    local name=$1 n=$2 preload=$3; shift 3
    read -r off _ <<<"$(count prof:false "$preload" "$@")"
    read -r on samples <<<"$(count "$conf" "$preload" "$@")"
    python3 -c "
off, on, n, s = $off, $on, $n, $samples
print(f'| $name | {n} | {off / n:.1f} | {on / n:.1f} | {on / off:.3f}x | {s} | ' + (f'{(on - off) / s:.0f} |' if s else '- |'))"
}
echo "Profiler: $conf against prof:false; instructions counted by callgrind."
echo
echo "| workload | iterations | off, per iteration | on, per iteration | ratio | samples | added per sample |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for b in "${benches[@]}"; do
    n=$(iterations "$b")
    row "$b" "$n" "" "$target/release/criterion_once" "$b" "$n"
done
for size in 1024 4096; do
    n=$(( (1 << 32) / size < 4000000 ? (1 << 32) / size : 4000000 ))
    row "C malloc/free $size B" "$n" "$target/release/libtally.so" "$work/pairs" "$n" "$size"
done
