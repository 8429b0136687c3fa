#!/usr/bin/env bash
# The benchmark suite (see docs/benchmarks.md): every workload under glibc, Tally, Tally with the
# profiler at the default rate and at lg_prof_sample:17, jemalloc, mimalloc and tcmalloc,
# interleaved, several rounds; median time and peak RSS as Markdown and SVG in target/bench/.
#   benches/run-suite.sh                 # 5 rounds, about 25 minutes on 2 cores
#   benches/run-suite.sh --quick         # smoke run, tiny arguments, 1 round, under a minute
#   benches/run-suite.sh --rounds 3 --workloads larson,sqlite --allocators glibc,tally
# Installs the peers (libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4) and sqlite3 from
# Debian when missing and run as root. The runner is the binary `suite` (benches/src/suite.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
lib=/usr/lib/x86_64-linux-gnu
need=()
[[ -e $lib/libjemalloc.so.2 ]] || need+=(libjemalloc2)
[[ -e $lib/libmimalloc.so.2 ]] || need+=(libmimalloc2.0)
[[ -e $lib/libtcmalloc_minimal.so.4 ]] || need+=(libtcmalloc-minimal4)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(build-essential)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "run-suite: missing Debian packages: ${need[*]} (apt-get install -y ${need[*]})" >&2
        exit 2
    fi
    apt-get install -y -q "${need[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi
cargo build --release -p tally-alloc
# The runner needs none of the Rust allocators the micro-benchmarks link in.
cargo build --release -p tally-benches --no-default-features --bin suite
target="${CARGO_TARGET_DIR:-$PWD/target}"
exec "$target/release/suite" --tally-so "$target/release/libtally.so" "$@"
