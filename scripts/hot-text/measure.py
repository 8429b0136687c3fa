#!/usr/bin/env python3
"""Checks that the code of libtally.so a program runs lies in one 64 KiB window.

Called by scripts/check-hot-text.sh with callgrind profiles (`--dump-instr=yes`) of programs
run under `LD_PRELOAD=libtally.so`. The kernel maps a library's code in windows of 64 KiB
around each page a program touches (fault-around), every page of the window counting in the
program's resident memory; libtally.so's executable segment starts at a 64 KiB boundary
(allocator/build.rs links it with max-page-size 64 KiB and separate-code, and glibc maps such a
library at an address aligned likewise), and allocator/hot-text.ld puts the functions marked
`#[link_section = ".text.hot.tally"]` at its start. So every instruction the programs run must
be in the segment's first 64 KiB; a function outside it needs the mark.

Exit status: 0 when it holds, 1 when it does not (one line per function outside, and where it
is), 2 on a broken measurement.
"""

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fast-paths"))
from measure import parse_callgrind, report  # noqa: E402  (the fast-path check's helpers)

WINDOW = 0x10000


def fail(msg, status=2):
    print(f"check-hot-text: {msg}", file=sys.stderr)
    sys.exit(status)


def executable_segment(lib):
    """(vaddr, memsz, align) of the library's one executable PT_LOAD."""
    out = subprocess.run(["readelf", "-lW", lib], check=True, capture_output=True,
                         text=True).stdout
    segs = []
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            segs.append((int(f[2], 16), int(f[5], 16), int(f[-1], 16)))
    if len(segs) != 1:
        fail(f"{lib} has {len(segs)} executable segments, expected 1")
    return segs[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("profiles", nargs="+", help="callgrind profiles of programs run on --lib")
    args = ap.parse_args()
    lib = os.path.realpath(args.lib)

    start, size, align = executable_segment(lib)
    problems = []
    if align < WINDOW or start % WINDOW:
        problems.append(f"the executable segment is at {start:#x} aligned to {align:#x}: it must "
                        f"start at a multiple of {WINDOW:#x} and say so in its alignment (the "
                        "link arguments in allocator/build.rs)")

    # Every function of the library that ran, with the addresses it ran at.
    ran = {}
    for path in args.profiles:
        cost, _, _ = parse_callgrind(path, lib)
        for fn, addrs in cost.items():
            hit = {a for a, ir in addrs.items() if ir > 0}
            if hit:
                ran.setdefault(fn, set()).update(hit)
    if not ran:
        fail("no instruction of the library ran (did LD_PRELOAD take effect?)")
    addrs = sorted(a for hit in ran.values() for a in hit)
    if addrs[0] < start or addrs[-1] >= start + size:
        fail(f"an executed address ({addrs[0]:#x}..{addrs[-1]:#x}) lies outside the executable "
             f"segment {start:#x}..{start + size:#x}: callgrind's addresses are not the library's")

    windows = sorted({(a - start) // WINDOW for a in addrs})
    span = addrs[-1] - start + 1
    print(f"check-hot-text: {len(ran)} functions of {os.path.basename(lib)} ran, "
          f"{len(addrs)} distinct instructions, within the first {span / 1024:.1f} KiB of its "
          f"{size / 1024:.0f} KiB of code; windows of 64 KiB touched: {len(windows)}")
    for fn in sorted(ran, key=lambda f: min(ran[f])):
        outside = [a for a in ran[fn] if a - start >= WINDOW]
        if outside:
            problems.append(f"{fn} ran at {min(outside):#x}, {(min(outside) - start) / 1024:.0f} "
                            "KiB into the code: outside its first 64 KiB (mark it "
                            "#[link_section = \".text.hot.tally\"], or, if the marked code "
                            "outgrew the window, take the least run function out)")
    report("check-hot-text", problems)


if __name__ == "__main__":
    main()
