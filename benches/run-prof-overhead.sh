#!/usr/bin/env bash
# Profiling overhead: the malloc/free micro-benchmark under Tally with the profiler off, on at the
# default rate (lg_prof_sample:19) and at lg_prof_sample:17, interleaved over ROUNDS rounds;
# prints median ns per pair and the ratio to profiling off (see docs/benchmarks.md).
#   benches/run-prof-overhead.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-7}"
cargo build --release -p tally-benches --bin micro_tally >/dev/null
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/micro_tally"
raw=$(mktemp)
for ((r = 1; r <= rounds; r++)); do
    for conf in off prof:true prof:true,lg_prof_sample:17; do
        TALLY_CONF="$([[ $conf == off ]] && echo "" || echo "$conf")" "$bin" |
            awk -v c="$conf" '!/^#/ { print c "\t" $1 "\t" $2 }' >>"$raw"
    done
    echo "round $r/$rounds done" >&2
done
python3 - "$raw" <<'PY'
import statistics, sys, collections
cells = collections.defaultdict(list)
for line in open(sys.argv[1]):
    conf, work, ns = line.rstrip("\n").split("\t")
    cells[(conf, work)].append(float(ns))
confs = ["off", "prof:true", "prof:true,lg_prof_sample:17"]
works = sorted({w for _, w in cells}, key=lambda w: list(dict.fromkeys(w2 for _, w2 in cells)).index(w))
print("| workload | off (ns/pair) | prof:true (19) | ratio | lg_prof_sample:17 | ratio |")
print("|---|---:|---:|---:|---:|---:|")
logs = {c: [] for c in confs[1:]}
import math
for w in works:
    m = [statistics.median(cells[(c, w)]) for c in confs]
    row = f"| {w} | {m[0]:.2f} |"
    for c, v in zip(confs[1:], m[1:]):
        row += f" {v:.2f} | {v / m[0]:.3f}× |"
        logs[c].append(math.log(v / m[0]))
    print(row)
print("| geometric mean | | | " + " | | ".join(f"{math.exp(sum(v) / len(v)):.3f}×" for v in logs.values()) + " |")
PY
rm -f "$raw"
