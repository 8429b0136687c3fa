#!/usr/bin/env bash
# The malloc/free pair micro-benchmark in one command (see docs/benchmarks.md):
#
#   benches/run-micro.sh [micro_runner options]      e.g. --quick, --rounds 3, --filter pair/1t
#
# Builds the allocator binaries (profile release) and runs micro_runner on exactly the binaries
# this build produced, so a stale binary left by an earlier build with other features never runs.
# To leave an allocator out of the build (e.g. while Tally does not compile):
#
#   TALLY_BENCH_CARGO_FLAGS='--no-default-features --features mimalloc,jemalloc,stoolap' \
#       benches/run-micro.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck disable=SC2086 # the flags are words on purpose
if ! build_log=$(cargo build --release -p tally-benches --bins --message-format=json-render-diagnostics \
        ${TALLY_BENCH_CARGO_FLAGS:-}); then
    echo "run-micro.sh: build failed. Without Tally:" >&2
    echo "  TALLY_BENCH_CARGO_FLAGS='--no-default-features --features mimalloc,jemalloc,stoolap' $0 $*" >&2
    exit 1
fi

built=$(grep -o '"executable":"[^"]*/micro_[a-z]*"' <<<"$build_log" | sed 's/.*\/micro_//; s/"$//' || true)
runner=$(grep -o '"executable":"[^"]*/micro_runner"' <<<"$build_log" | sed 's/^"executable":"//; s/"$//' || true)
allocators=$(grep -vx runner <<<"$built" | paste -sd, - || true)
[[ -n $runner && -n $allocators ]] || { echo "run-micro.sh: no binaries in the build output" >&2; exit 1; }

exec "$runner" --allocators "$allocators" "$@"
