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
window too. And each `--windows FILE` gives what scripts/hot-text/windows.c printed for a
program run natively: the 64 KiB windows of each of the library's mappings that had a page
mapped at exit. The executable mapping and the read-only one at the file's start (the dynamic
symbols and relocations the loader reads, and the data every program reads, allocator/src/hot.rs)
must have one each, and the read-only segment after the code (the rest of the read-only data and
the exception tables, allocator/hot-text.ld) none: a page of it read means a table or constant
the program reads is not in hot.rs's section.

And the functions of other objects the library calls must be in ALLOWED_CALLS. The same
fault-around maps the C library's code 64 KiB at a time: each function of it Tally calls that
the program would not (`sysconf`, `sched_getaffinity`, `clock_gettime`, `secure_getenv`,
`strlen`) may make a window of the C library's code resident that glibc's malloc would not have,
64 KiB each (pal/src/process.rs, `getenv`, says what Tally does instead).

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

# The functions of other objects the library may call in an ordinary program, by object: the
# memory system calls and what shares their window of the C library's code (`syscall`, for the
# CPU count and the clocks where there is no vDSO, as under valgrind; `getauxval`), the fork
# handlers' registration, the thread-exit key (beside `pthread_create`), the random key of the
# free mark (`getrandom`, beside `exit`'s code), `__cxa_finalize` at exit, the string functions
# every program uses, and the dynamic linker's TLS lookup.
ALLOWED_CALLS = {
    "libc.so.6": ("mmap", "munmap", "madvise", "mremap", "syscall", "getauxval",
                  "__register_atfork", "pthread_key_create", "pthread_setspecific", "getrandom",
                  "__cxa_finalize", "__memcpy_*", "__memmove_*", "__memset_*", "memcpy",
                  "memmove", "memset"),
    "ld-linux-x86-64.so.2": ("__tls_get_addr",),
}


def allowed_call(ob, fn):
    """Whether `fn` (callgrind's name, maybe with a symbol version) of the object `ob` is in
    ALLOWED_CALLS."""
    name = fn.split("@")[0]
    return any(name == a or (a.endswith("*") and name.startswith(a[:-1]))
               for a in ALLOWED_CALLS.get(ob, ()))


def fail(msg, status=2):
    print(f"check-hot-text: {msg}", file=sys.stderr)
    sys.exit(status)


def cold_segment(lib):
    """File offset of the read-only PT_LOAD after the executable one (allocator/hot-text.ld),
    rounded down to a page as its mapping's offset is; None if there is none."""
    out = subprocess.run(["readelf", "-lW", lib], check=True, capture_output=True,
                         text=True).stdout
    after_code = False
    for line in out.splitlines():
        f = line.split()
        if not f or f[0] != "LOAD":
            continue
        flags = "".join(f[6:-1])
        if "E" in flags:
            after_code = True
        elif after_code and "W" not in flags:
            return int(f[1], 16) & ~0xFFF
    return None


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
    ap.add_argument("--windows", action="append", default=[],
                    help="what scripts/hot-text/windows.c printed for a native run (repeatable)")
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
    calls_out = {}
    for path in args.profiles:
        cost, _, _, out = parse_callgrind(path, lib)
        for key, n in out.items():
            calls_out[key] = calls_out.get(key, 0) + n
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
    print(f"check-hot-text: calls into other objects: "
          + ", ".join(f"{fn.split('@')[0]} ({ob})" for ob, fn in sorted(calls_out)))
    for (ob, fn), n in sorted(calls_out.items()):
        if not allowed_call(ob, fn):
            problems.append(f"the library called {fn} of {ob} ({n} times): a function the "
                            "program may never call, whose page maps a 64 KiB window of that "
                            "object's code (do without it, or add it to ALLOWED_CALLS in "
                            "scripts/hot-text/measure.py and say why)")
    hot = symbol_addresses(lib, MUST_BE_HOT)
    for name in MUST_BE_HOT:
        if name not in hot:
            fail(f"no function {name} in {lib}'s symbol table")
        if not 0 <= hot[name] - start < WINDOW:
            problems.append(f"{name} lies at {hot[name]:#x}, outside the first 64 KiB of the "
                            "code (mark it #[link_section = \".text.hot.tally\"])")
    cold = cold_segment(lib)
    if cold is None:
        problems.append("no read-only segment after the code: the read-only data every program "
                        "leaves alone is back in the first segment (allocator/hot-text.ld)")
    for path in args.windows:
        rows = resident_windows(path)
        name = os.path.basename(path)
        code = [w for perms, _, w in rows if "x" in perms]
        head = [w for perms, offset, w in rows if perms.startswith("r--") and offset == 0]
        if len(code) != 1 or len(head) != 1:
            fail(f"no executable or first read-only mapping of the library in {path}")
        after = [w for perms, offset, w in rows if perms.startswith("r--") and offset == cold]
        print(f"check-hot-text: run natively ({name}), {head[0]} window(s) of 64 KiB of the "
              f"library's first segment resident, {code[0]} of its code, "
              f"{sum(after)} of the read-only segment after the code")
        if code[0] > 1:
            problems.append(f"natively ({name}) {code[0]} windows of the code were resident: "
                            "a function run outside the first 64 KiB that callgrind did not "
                            "see (a contended lock? add it to MUST_BE_HOT and mark it)")
        if head[0] > 1:
            problems.append(f"natively ({name}) {head[0]} windows of the first read-only "
                            "segment were resident: it outgrew 64 KiB (are the relocations "
                            "packed? allocator/build.rs, allocator/hot-text.ld)")
        if sum(after) > 0:
            problems.append(f"natively ({name}) {sum(after)} window(s) of the read-only segment "
                            "after the code were resident: the program read a table or constant "
                            "there (define it with hot_data!, allocator/src/hot.rs)")
    report("check-hot-text", problems)


if __name__ == "__main__":
    main()
