#!/usr/bin/env bash
# What the profiler costs, in instructions (callgrind: repeatable whatever else the machine is
# doing): each Criterion workload given runs ITERATIONS times under Tally's `#[global_allocator]`
# (`criterion_once`) with `prof:false` and with `prof:true` at the default rate; the table gives
# instructions per iteration both ways, their ratio, the samples taken (calls of
# `tally_profiler::Profiler::on_sampled_alloc_keyed`, which records each), and the
# instructions the profiler added per sample (the difference of the whole runs over the
# samples: capture, tables, the sampled block's pages, its free, and the extra thread events).
# Then the same for C's malloc/free pairs (benches/programs/pairs.c under
# LD_PRELOAD=libtally.so). See docs/benchmarks.md.
#
# Under valgrind every mapping lies low in the address space, so the profiler finds no sampled
# region apart from Tally's other chunks and Rust's `dealloc` tests page alignment instead
# (`prof_hooks::SPECIAL_MASK`): the Rust rows with the profiler on count that fallback, not what a
# program outside valgrind runs (there only sampled blocks take the checked path; time it with
# benches/run-criterion.sh). The C rows are the same either way.
#
# With --suite, the benchmark suite's workloads instead (benches/run-suite.sh: its C programs,
# CPython and sqlite3, under LD_PRELOAD=libtally.so, with the suite's arguments): whole-run
# instructions with prof:false, with prof:true and with prof:true,lg_prof_sample:17, their ratios
# and samples, and the geometric means. The full set takes about half an hour (valgrind runs a
# program some 50 times slower); --quick uses the suite's tiny smoke-test arguments, whose runs
# are too short for the sampling rate to show.
#
# valgrind runs one thread at a time; with --fair-sched=yes it hands the CPU round in a fixed
# order, so a threaded workload (larson) counts the same instructions run after run. Without it,
# larson counted 7.440 billion instructions with the profiler off in one run and 7.743
# and 7.739 in two more: a 4% swing, four times the profiler's whole cost there. With it, two runs
# gave 7.7457 and 7.7448 billion.
#
# Usage: benches/run-prof-cost.sh [--conf OPTIONS] [WORKLOAD/PARAMETER ...]
#        benches/run-prof-cost.sh --suite [--quick] [WORKLOAD ...]
#   --conf OPTIONS   the profiler's setting (default prof:true), e.g. prof:true,lg_prof_sample:17
#   default workloads: alloc_free/16 alloc_free/1024 alloc_free/4096 alloc_free/32768 batch64/64 vec_string/1000
#   --suite          default workloads: all of the suite's
set -euo pipefail
cd "$(dirname "$0")/.."
conf="prof:true"
suite=
quick=
if [[ "${1:-}" == --conf ]]; then conf="$2"; shift 2; fi
if [[ "${1:-}" == --suite ]]; then suite=1; shift; fi
if [[ -n $suite && "${1:-}" == --quick ]]; then quick=--quick; shift; fi
benches=("$@")
[[ -n $suite ]] || ((${#benches[@]})) || benches=(alloc_free/16 alloc_free/1024 alloc_free/4096 alloc_free/32768 batch64/64 vec_string/1000)
command -v valgrind >/dev/null || { echo "run-prof-cost: needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
cargo build --release -p tally-alloc >&2
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
# Runs the command under callgrind with TALLY_CONF=$1 and LD_PRELOAD=$2 (if not empty), stdin
# from $STDIN (if set) and the words of $WENV (K=V ...) in its environment; prints "instructions
# samples". Fails, with the program's last lines, if the program did.
count() { # CONF PRELOAD COMMAND...
    local c=$1 preload=$2; shift 2
    # shellcheck disable=SC2086 # WENV is a list of K=V words
    if ! env -u MALLOC_CONF TALLY_CONF="$c" ${preload:+LD_PRELOAD=$preload} ${WENV:-} valgrind --tool=callgrind --fair-sched=yes \
        --compress-strings=no --compress-pos=no --callgrind-out-file="$work/out" "$@" \
        <"${STDIN:-/dev/null}" >"$work/log" 2>&1; then
        echo "run-prof-cost: $* failed under $c:" >&2
        tail -5 "$work/log" >&2
        return 1
    fi
    local total
    total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/log")
    echo "$total $(python3 benches/tools/callgrind_callees.py "$work/out" --into tally_profiler::Profiler::on_sampled_alloc_keyed | cut -d' ' -f1)"
}
if [[ -n $suite ]]; then
    cargo build --release -p tally-benches --no-default-features --bin suite >&2
    words=(--commands $quick --out "$work/suite")
    if ((${#benches[@]})); then words+=(--workloads "$(IFS=,; echo "${benches[*]}")"); fi
    "$target/release/suite" "${words[@]}" >"$work/commands"
    echo "The suite's workloads${quick:+ (--quick arguments)} under LD_PRELOAD=libtally.so: whole-run"
    echo "instructions (callgrind) with the profiler off, at the default rate (prof:true) and at"
    echo "lg_prof_sample:17, their ratios to off, and the samples taken."
    echo
    echo "| workload | off | prof:true | ratio | samples | lg_prof_sample:17 | ratio | samples |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    ratios=()
    # Fields are tab-separated, some empty: read them split at a non-blank byte instead, which
    # bash does not merge.
    while IFS=$'\037' read -r -a line; do
        name=${line[0]}
        STDIN=${line[1]} WENV=${line[2]}
        # valgrind follows no exec: run the interpreter itself, not a wrapper such as pyenv's.
        if [[ ${line[3]} == python3 ]]; then line[3]=$(python3 -c 'import sys; print(sys.executable)'); fi
        counts=()
        for c in prof:false prof:true prof:true,lg_prof_sample:17; do
            counts+=("$(count "$c" "$target/release/libtally.so" "${line[@]:3}")") || exit 1
        done
        read -r off _ <<<"${counts[0]}"
        read -r on s_on <<<"${counts[1]}"
        read -r on17 s_17 <<<"${counts[2]}"
        python3 -c "print(f'| $name | {$off:,} | {$on:,} | {$on / $off:.4f}x | $s_on | {$on17:,} | {$on17 / $off:.4f}x | $s_17 |')"
        ratios+=("$((on * 1000000 / off)),$((on17 * 1000000 / off))")
    done < <(tr '\t' '\037' <"$work/commands")
    python3 -c "
import math, sys
pairs = [tuple(int(x) / 1e6 for x in p.split(',')) for p in sys.argv[1:]]
g = [math.exp(sum(math.log(p[i]) for p in pairs) / len(pairs)) for i in (0, 1)]
print(f'| geometric mean | | | {g[0]:.4f}x | | | {g[1]:.4f}x | |')" "${ratios[@]}"
    exit 0
fi
cargo build --release -p tally-benches --no-default-features --features tally --bin criterion_once >&2
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
