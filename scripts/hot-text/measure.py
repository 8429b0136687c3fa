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

Two more checks. Functions a program runs that callgrind never sees run (valgrind runs one
thread at a time, so no lock is ever contended) are named in MUST_BE_HOT and must lie in the
window too. And `--windows FILE` gives what scripts/hot-text/windows.c printed for the program
run natively: the 64 KiB windows of each of the library's mappings that had a page mapped at
exit. The executable mapping and the read-only one at the file's start (the dynamic symbols
and relocations the loader reads, and the size-class tables `malloc` reads, which lie in the
same window when the relocations are packed: allocator/build.rs) must have one each.

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

# Run by programs, never under callgrind: the contended path of Tally's locks.
MUST_BE_HOT = ("tally_pal::sync::lock_contended",)


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


def symbol_addresses(lib, names):
    """{name: address} of the functions `names` in the library's symbol table."""
    out = subprocess.run(["nm", "-C", "--defined-only", lib], check=True, capture_output=True,
                         text=True).stdout
    found = {}
    for line in out.splitlines():
        f = line.split(" ", 2)
        if len(f) == 3 and f[2] in names:
            found.setdefault(f[2], int(f[0], 16))
    return found


def resident_windows(path):
    """[(perms, file offset, windows)] from windows.c's lines."""
    rows = []
    for line in open(path):
        f = line.split()
        if len(f) == 4 and f[0] == "window":
            rows.append((f[1], int(f[2], 16), int(f[3])))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("--windows", help="what scripts/hot-text/windows.c printed for a native run")
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
    hot = symbol_addresses(lib, MUST_BE_HOT)
    for name in MUST_BE_HOT:
        if name not in hot:
            fail(f"no function {name} in {lib}'s symbol table")
        if not 0 <= hot[name] - start < WINDOW:
            problems.append(f"{name} lies at {hot[name]:#x}, outside the first 64 KiB of the "
                            "code (mark it #[link_section = \".text.hot.tally\"])")
    if args.windows:
        rows = resident_windows(args.windows)
        code = [w for perms, _, w in rows if "x" in perms]
        head = [w for perms, offset, w in rows if perms.startswith("r--") and offset == 0]
        if len(code) != 1 or len(head) != 1:
            fail(f"no executable or first read-only mapping of the library in {args.windows}")
        print(f"check-hot-text: run natively, the program had {head[0]} window(s) of 64 KiB of the "
              f"library's first segment resident and {code[0]} of its code")
        if code[0] > 1:
            problems.append(f"natively the program made {code[0]} windows of the code resident: "
                            "a function it runs outside the first 64 KiB that callgrind did not "
                            "see (a contended lock? add it to MUST_BE_HOT and mark it)")
        if head[0] > 1:
            problems.append(f"natively the program made {head[0]} windows of the first read-only "
                            "segment resident: the data it reads there (the size-class tables) "
                            "lies past the first 64 KiB (are the relocations packed?)")
    report("check-hot-text", problems)


if __name__ == "__main__":
    main()
