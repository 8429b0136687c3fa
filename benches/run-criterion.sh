#!/usr/bin/env bash
# The Criterion benchmarks of the Rust GlobalAlloc path in one command (see docs/benchmarks.md):
#
#   benches/run-criterion.sh [criterion args]     e.g. --quick, alloc_free/16, --measurement-time 0.2
#
# Builds the bench targets of package tally-criterion (benches/criterion/), then runs the
# programs built one after the other, as
#   cargo bench -p tally-criterion --bench criterion_<variant> -- <criterion args>
# would but without building again (a source edited while it runs cannot reach a later variant)
# (system, tally, tally_prof, mimalloc, jemalloc, stoolap, stoolap_prof; tally_prof is
# criterion_tally again with prof:true added to TALLY_CONF; 23 benchmarks each at
# about 1.5 s, and the two heavy ones, btree_strings and vec_extend, at 2-6 s, each in a process
# of its own; ~6 minutes in all), then prints the table of what this run measured (median ns per
# iteration and the ratio to system, and the heavy benchmarks' peak RSS), also written to
# target/bench/criterion.md. Criterion keeps its own results in
# target/criterion/<variant>/<workload>/<parameter>/, the driver the peak RSS in
# target/criterion/peak_rss.tsv.
#
# Its columns are runs minutes apart. The records for issue 13's targets are interleaved:
# benches/run-rust-crates.sh (Tally against the crates) and benches/run-prof-rust.sh (the
# profiler's cost), on the same workloads without Criterion.
#
# TALLY_BENCH_TARGETS='system tally tally_prof' runs only those variants; TALLY_BENCH_CARGO_FLAGS
# goes to cargo, e.g. while Tally does not compile:
#   TALLY_BENCH_CARGO_FLAGS='--no-default-features --features mimalloc,jemalloc,stoolap' \
#   TALLY_BENCH_TARGETS='system mimalloc jemalloc stoolap stoolap_prof' benches/run-criterion.sh
set -euo pipefail
cd "$(dirname "$0")/.."

targets=${TALLY_BENCH_TARGETS:-system tally tally_prof mimalloc jemalloc stoolap stoolap_prof}
# shellcheck disable=SC2206 # the flags are words on purpose
cargo_flags=(${TALLY_BENCH_CARGO_FLAGS:-})
start=$(date +%s)

# Build everything first, so that a compile error stops the run before any measurement and no
# compiler runs while a benchmark does; then run the programs built, not `cargo bench` again,
# which would compile a source edited during the run into the variants after it.
# program VARIANT: the bench target that runs it. Tally's two variants are one program, run with
# and without prof:true in TALLY_CONF (below), so that their columns are the same code.
program() {
    case "$1" in
    tally_prof) echo criterion_tally ;;
    *) echo "criterion_$1" ;;
    esac
}
selected=()
for target in $targets; do
    selected+=(--bench "$(program "$target")")
done
built=$(cargo bench -p tally-criterion "${cargo_flags[@]}" "${selected[@]}" --no-run \
    --message-format=json-render-diagnostics)
cargo build --release -p tally-benches --no-default-features --bin criterion_table
# executable NAME: the path cargo reported for bench target NAME.
executable() {
    python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if (m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1]
            and "bench" in m["target"]["kind"] and m.get("executable")):
        print(m["executable"])
        break
' "$1" <<<"$built"
}
# Criterion's results and the heavy benchmarks' peak RSS go to $CARGO_TARGET_DIR/criterion, as
# under `cargo bench`.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

for target in $targets; do
    name=$(program "$target")
    exe=$(executable "$name")
    [[ -x "$exe" ]] || { echo "run-criterion.sh: cargo reported no program for $name" >&2; exit 2; }
    echo "run-criterion.sh: $target: $name ($exe)" >&2
    case "$target" in
    tally)
        # The program names its column after the profiler's state: with prof:true in the
        # environment this would be a second tally+prof run, not tally.
        if [[ "${TALLY_CONF:-},${MALLOC_CONF:-}" == *prof:true* ]]; then
            echo "run-criterion.sh: TALLY_CONF or MALLOC_CONF says prof:true; unset it for the tally variant" >&2
            exit 2
        fi
        "$exe" --bench "$@"
        ;;
    tally_prof) TALLY_CONF="${TALLY_CONF:+$TALLY_CONF,}prof:true" "$exe" --bench "$@" ;;
    *) "$exe" --bench "$@" ;;
    esac
done

exec "${CARGO_TARGET_DIR:-target}/release/criterion_table" --since "$start" --args "$*"
