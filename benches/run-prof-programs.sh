#!/usr/bin/env bash
# Profiling overhead on real programs under LD_PRELOAD=libtally.so: wall time with the profiler
# off, at the default rate and at lg_prof_sample:17, interleaved over ROUNDS rounds; medians.
#   benches/run-prof-programs.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p tally >/dev/null
so="$target/release/libtally.so"
py=$(python3 -c 'import sys; print(sys.executable)')
work=$(mktemp -d)
cp tests/programs/compiled.c "$work/"
declare -A cmd=(
    [python]="$py tests/programs/workload.py"
    [gcc]="gcc -O2 -c -o $work/out.o $work/compiled.c"
    [sort]="sort -o $work/sorted $work/lines"
)
seq 1 400000 | awk '{ print (($1 * 7919) % 1000003) " line " $1 }' >"$work/lines"
raw="$work/raw"
for ((r = 1; r <= rounds; r++)); do
    for prog in python gcc sort; do
        for conf in off prof:true prof:true,lg_prof_sample:17; do
            c=$([[ $conf == off ]] && echo "" || echo "$conf,prof_prefix:$work/p")
            start=$(date +%s.%N)
            for i in 1 2 3; do
                LD_PRELOAD="$so" TALLY_CONF="$c" ${cmd[$prog]} >/dev/null
            done
            end=$(date +%s.%N)
            echo "$prog $conf $(echo "$end - $start" | bc)" >>"$raw"
        done
    done
    echo "round $r/$rounds" >&2
done
python3 - "$raw" <<'PY'
import collections, math, statistics, sys
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    prog, conf, s = line.split()
    t[(prog, conf)].append(float(s))
confs = ["off", "prof:true", "prof:true,lg_prof_sample:17"]
print("| program (3 runs) | off (s) | prof:true | ratio | lg_prof_sample:17 | ratio |")
print("|---|---:|---:|---:|---:|---:|")
for prog in ["python", "gcc", "sort"]:
    m = [statistics.median(t[(prog, c)]) for c in confs]
    print(f"| {prog} | {m[0]:.3f} | {m[1]:.3f} | {m[1]/m[0]:.3f}× | {m[2]:.3f} | {m[2]/m[0]:.3f}× |")
PY
rm -rf "$work"
