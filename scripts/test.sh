#!/usr/bin/env bash
# Every test: build libtally.so (the LD_PRELOAD tests load it), check its fast-path instruction
# budgets and that the code every program runs lies in one 64 KiB window, then the whole
# workspace's tests, then formatting and lints, then the packaging (crates, install.sh, the Debian
# package: scripts/test-packaging.sh). Tools the tests run (gcc, git, perl, python3, java, sort,
# valgrind) must be installed; .ci/run installs them from Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in cc c++ git perl python3 java javac sort jeprof objcopy objdump readelf go dot chromium sqlite3 valgrind node redis-server pkg-config dpkg-deb dpkg-shlibdeps lintian; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "scripts/test.sh: missing tools: ${missing[*]} (run .ci/run, or apt-get install -y build-essential binutils pkg-config dpkg-dev lintian git perl python3 openjdk-17-jdk-headless libjemalloc2 libjemalloc-dev libmimalloc2.0 libtcmalloc-minimal4 sqlite3 golang-go graphviz chromium valgrind libssl-dev nodejs redis-server)" >&2
    exit 1
fi
cargo build --release -p tally-alloc -p tally-jvm-agent
# The Criterion workloads in one program (Tally as its global allocator): the fast-path check
# counts its instructions, tests/prof_rust.rs runs it with the profiler off and on, and
# tests/rust_crates.rs against its twins under the other allocators; tests/micro_runner.rs runs
# the pair micro-benchmark's runner on two of its programs.
cargo build --release -p tally-benches --bin criterion_once --bin criterion_once_system \
    --bin criterion_once_mimalloc --bin criterion_once_jemalloc --bin criterion_once_stoolap \
    --bin micro_runner --bin micro_tally --bin micro_system
# The arena table's initializer is all zero bytes, so it lives in .bss and costs nothing until
# used; a non-zero field in an arena (a lock's rank, say) would move its 860 KB into .data and
# every process's RSS up by it.
data=$(size -A target/release/libtally.so | awk '$1 == ".data" { print $2 }')
if ((data > 65536)); then
    echo "scripts/test.sh: libtally.so has $data bytes of .data: something made the arena table non-zero" >&2
    exit 1
fi
# The instruction budgets written next to the malloc and free fast paths (and that wrong ones fail).
scripts/check-fast-paths.sh --lib target/release/libtally.so --self-test
# The code every program runs in one 64 KiB window of the library (allocator/hot-text.ld).
scripts/check-hot-text.sh --lib target/release/libtally.so
cargo test --workspace --release
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
# The API documentation builds without a broken link.
RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps --release
# The crates' packages, the SONAME, scripts/install.sh and the Debian package (installed and
# removed again with dpkg: needs root).
scripts/test-packaging.sh
