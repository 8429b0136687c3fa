#!/usr/bin/env bash
# Checks that the code of libtally.so a program runs is in the first 64 KiB of its executable
# segment, one window of the kernel's fault-around (allocator/hot-text.ld says why): runs a small
# C program (scripts/hot-text/program.c) and CPython building a dict under callgrind with the
# library preloaded and lists any function that ran outside that window; then runs both
# natively and counts the 64 KiB windows of the library they made resident: one of the code,
# one of the first read-only segment, none of the read-only segment after the code (the data
# no program needs to read, allocator/src/hot.rs). Also fails when the library calls a function
# of another object (the C library) outside scripts/hot-text/measure.py's ALLOWED_CALLS: one
# the program may never call, which maps another 64 KiB window of that object's code. Prints a
# summary; exits 1 with one line per problem, 2 when it cannot measure.
#
# Usage: scripts/check-hot-text.sh [--lib PATH]
#   --lib PATH   check this libtally.so instead of building target/release/libtally.so
# Needs valgrind, readelf and nm (binutils), cc and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/preload-callgrind.sh
source scripts/preload-callgrind.sh

usage() { sed -n '13,14s/^# \{0,1\}//p' "$0"; }
lib=""
while (($#)); do
    case "$1" in
    --lib)
        (($# >= 2)) || { echo "check-hot-text: --lib needs a path" >&2; exit 2; }
        lib="$2"
        shift 2
        ;;
    -h | --help) usage; exit 0 ;;
    *) echo "check-hot-text: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

need_tools check-hot-text valgrind readelf cc python3
lib=$(library check-hot-text "$lib")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O1 -fno-builtin -pthread -o "$work/program" scripts/hot-text/program.c

profile() { # NAME COMMAND...
    local name=$1
    shift
    preloaded_callgrind check-hot-text "$lib" "$work/$name.out" "$@"
}
profile program "$work/program"
# The interpreter itself, not a wrapper script in front of it (pyenv's shims), which valgrind
# would run instead without following it.
python=$(python3 -c 'import sys; print(sys.executable)')
profile python "$python" -c 'd = {str(i): [i] * (i % 7) for i in range(20000)}; print(len(d))'

# The same program natively, with windows.c preloaded after the library: the windows of the
# library's file it made resident, fault-around and all.
cc -O2 -shared -fPIC -o "$work/windows.so" scripts/hot-text/windows.c
# First the library's pages leave the page cache, so that the program reads them from the file as
# it would an installed library. How a file came into the cache decides how much a fault maps:
# Linux maps a whole large folio around a fault (6.18 here), and a copy made with `cp` sits in
# large folios, so a fault in the first window mapped the second as well (a build that
# passes read from disk failed as a copy: "2 windows of the code"). The linker's output is in
# small folios; read back from the file, every copy is.
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$lib"
env -u TALLY_CONF -u MALLOC_CONF HOT_TEXT_LIB="$lib" LD_PRELOAD="$lib $work/windows.so" \
    "$work/program" >/dev/null 2>"$work/program-windows.txt"
env -u TALLY_CONF -u MALLOC_CONF HOT_TEXT_LIB="$lib" LD_PRELOAD="$lib $work/windows.so" \
    "$python" -c 'd = {str(i): [i] * (i % 7) for i in range(20000)}; print(len(d))' \
    >/dev/null 2>"$work/python-windows.txt"

python3 scripts/hot-text/measure.py --lib "$lib" --windows "$work/program-windows.txt" \
    --windows "$work/python-windows.txt" "$work/program.out" "$work/python.out"
