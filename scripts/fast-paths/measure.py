#!/usr/bin/env python3
"""Compares the fast-path budgets written in the source with what the library does.

Called by scripts/check-fast-paths.sh with two pairs of callgrind profiles (`--dump-instr=yes
--dump-line=no`) of scripts/fast-paths/driver.c: in one pair, one run makes DELTA more
malloc/free pairs than the other; in the other pair (`driver N realloc`), 2 DELTA more reallocs
of a small block to another small class. With `--rust-bin`, a third pair: that program (a Rust
one with Tally as its `#[global_allocator]`, `criterion_once alloc_free/16 N`) making DELTA more
`alloc`/`dealloc` pairs of 16 bytes. For each exported symbol with a budget (malloc, free,
realloc; rust_alloc and rust_dealloc, Rust's `__rust_alloc` and `__rust_dealloc`, which call
`Tally`'s `GlobalAlloc` methods inlined):

- the hit path is the set of the symbol's instructions that ran on at least half of the extra
  calls (a miss runs at most a few times in DELTA calls: the event countdown every 64 KiB);
- its instruction count is the instructions executed per extra call on those addresses, which is
  the number of addresses for a straight-line path;
- its branches are the conditional branches among those addresses, read from `objdump -d`;
- a call on the hit path is an error (its callee's instructions would not be counted), but for
  realloc's call of the C library's memcpy, its copy (callgrind counts it apart: the table's
  Ir/call column includes it).

Budgets are comment lines anywhere under the source directory:

    // fast-path budget: malloc 25 instructions, 4 branches

Exit status: 0 when every budget matches, 1 when one differs or is missing, 2 on a broken
measurement.
"""

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict

SYMBOLS = ("malloc", "free", "realloc")
# The Rust entry points a program with Tally as its global allocator calls, by the budget's
# name: the symbol. Recent compilers mangle it (`__rustc::__rust_alloc`, in v0 a name ending
# in `___rust_alloc`), older ones leave it plain; callgrind demangles it, and objdump is given
# the name `nm` finds.
RUST_SYMBOLS = {"rust_alloc": "__rust_alloc", "rust_dealloc": "__rust_dealloc"}
# The calls a symbol's hit path may make: the C library's copy, for realloc.
ALLOWED_CALLS = {"realloc": ("memcpy",)}
MARKER = "fast-path budget:"
MARKER_RE = re.compile(
    r"fast-path budget: (?P<sym>[A-Za-z_][A-Za-z0-9_]*) (?P<instr>\d+) instructions?, "
    r"(?P<branches>\d+) branch(?:es)?\b"
)
NAME_RE = re.compile(r"^\((\d+)\)(?: (.*))?$")


def fail(msg, status=2):
    print(f"check-fast-paths: {msg}", file=sys.stderr)
    sys.exit(status)


def parse_callgrind(path, lib):
    """Per function of `lib`: {address: self Ir}, the inclusive Ir of the calls it makes, and
    the calls made into it; and {(object, function): calls} of the calls `lib`'s functions make
    into other objects (the object by its file's name)."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    space = {
        "ob": "ob", "cob": "ob",
        "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl",
        "fn": "fn", "cfn": "fn",
    }
    lib = os.path.realpath(lib)
    cost = defaultdict(lambda: defaultdict(int))
    callee_cost = defaultdict(int)
    calls_into = defaultdict(int)
    calls_out = defaultdict(int)
    ob = fn = call_ob = call_fn = None
    pending_calls = None
    pos = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            head = line[0]
            if head.isdigit() or head in "+-*":
                fields = line.split()
                p = fields[0]
                if p == "*":
                    pass
                elif p[0] in "+-":
                    pos += int(p, 0)
                else:
                    pos = int(p, 0)
                ir = int(fields[1]) if len(fields) > 1 else 0
                if pending_calls is not None:
                    # The inclusive cost of a call: not the caller's own instructions.
                    if ob == lib:
                        callee_cost[fn] += ir
                    target_ob = call_ob if call_ob is not None else ob
                    if target_ob == lib:
                        calls_into[call_fn] += pending_calls
                    elif ob == lib:
                        calls_out[(os.path.basename(target_ob), call_fn)] += pending_calls
                    pending_calls = None
                    call_ob = None
                elif ob == lib:
                    cost[fn][pos] += ir
                continue
            key, eq, value = line.partition("=")
            if not eq:
                continue  # a header line ("events: Ir", "summary: ...")
            if key == "calls":
                pending_calls = int(value.split()[0])
                continue
            if key not in space:
                continue
            m = NAME_RE.match(value)
            if m:
                table = names[space[key]]
                if m.group(2) is not None:
                    table[m.group(1)] = m.group(2)
                name = table.get(m.group(1), "?")
            else:
                name = value
            if space[key] == "ob":
                name = os.path.realpath(name) if name.startswith("/") else name
            if key == "ob":
                ob = name
            elif key == "fn":
                fn = name
            elif key == "cob":
                call_ob = name
            elif key == "cfn":
                call_fn = name
    return cost, callee_cost, calls_into, calls_out


def disassemble(lib, sym):
    """{address: (mnemonic, operands, comment)} of the instructions of `sym` in `lib`."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--disassemble={sym}", lib],
        check=True, capture_output=True, text=True,
    ).stdout
    insns = {}
    inside = False
    for line in out.splitlines():
        if re.match(r"^[0-9a-f]+ <", line):
            inside = line.rstrip().endswith(f"<{sym}>:")
            continue
        m = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if inside and m:
            # objdump's comment names a call's target: `# 128fa8 <memcpy@GLIBC_2.14>`.
            parts = re.split(r"\s+(?:#|//)", m.group(3), maxsplit=1)
            comment = parts[1].strip() if len(parts) > 1 else ""
            insns[int(m.group(1), 16)] = (m.group(2), parts[0].strip(), comment)
    if not insns:
        fail(f"objdump finds no symbol {sym} in {lib}")
    return insns


def is_conditional_branch(mnemonic):
    if mnemonic.startswith("b.") or mnemonic in ("cbz", "cbnz", "tbz", "tbnz"):  # aarch64
        return True
    return mnemonic.startswith("j") and not mnemonic.startswith("jmp")  # x86: j* but jmp


# A load of one byte at the address `free` was given (its first argument, still in its register):
# x86's byte compare with memory (`cmp %al,(%rdi)`, `cmpb $1,(%rdi)`) or zero-extending load
# (`movzbl (%rdi),%eax`), aarch64's `ldrb w1, [x0]`. The page map's byte is read elsewhere.
BYTE_LOAD_RE = re.compile(r"^(?:cmp|test)\s+%(?:[abcd]l|sil|dil|r\d+b),\(%rdi\)$|^cmpb\s+\S+,\(%rdi\)$|"
                          r"^movzb[lqw]\s+\(%rdi\),|^ldrb\s+w\d+,\s*\[x0\]")


def is_byte_load(mnemonic, operands):
    return bool(BYTE_LOAD_RE.match(f"{mnemonic} {operands}"))


def is_call(mnemonic):
    return mnemonic.startswith("call") or mnemonic in ("bl", "blr")


def is_allowed_call(sym, operands, comment):
    """Whether a call on `sym`'s hit path is one it may make: objdump names the target
    (`<memcpy@GLIBC_2.14>`, `<memcpy@plt>`) in the operands or the comment."""
    target = f"{operands} {comment}"
    return any(re.search(rf"<{name}(?:@[^>]*)?>", target) for name in ALLOWED_CALLS.get(sym, ()))


def rust_symbol(binary, name):
    """Callgrind's and objdump's names of Rust's `name` (`__rust_alloc`) in `binary`: plain, or
    mangled under `__rustc` (the one symbol `nm` lists that ends in `_` and the name)."""
    out = subprocess.run(["nm", binary], check=True, capture_output=True, text=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.split()}
    if name in symbols:
        return name, name
    mangled = sorted(s for s in symbols if s.endswith("_" + name))
    if len(mangled) != 1:
        fail(f"{binary}: expected the symbol {name}, or one mangled name ending in _{name}; "
             f"found {mangled or 'none'}")
    return f"__rustc::{name}", mangled[0]


def measure(paths):
    """`paths`: per symbol, (the object it is in, callgrind's name for it, objdump's name for
    it, shorter profile, longer profile, extra calls in the longer)."""
    parsed = {}
    results = {}
    for sym, (obj, fn, objdump_name, small, large, delta) in paths.items():
        for path in (small, large):
            if (path, obj) not in parsed:
                parsed[(path, obj)] = parse_callgrind(path, obj)
        small_cost, small_callee, small_calls, _ = parsed[(small, obj)]
        large_cost, large_callee, large_calls, _ = parsed[(large, obj)]
        calls = large_calls[fn] - small_calls[fn]
        if calls != delta:
            fail(f"{sym}: the longer run made {calls} more calls than the shorter, expected {delta}"
                 " (is the driver built with -fno-builtin, did LD_PRELOAD take effect, and is"
                 " Rust's entry point still a function of its own?)")
        diffs = {a: large_cost[fn][a] - small_cost[fn].get(a, 0) for a in large_cost[fn]}
        hit = sorted(a for a, d in diffs.items() if d * 2 >= delta)
        if not hit:
            fail(f"{sym}: no instruction ran on the hit path")
        insns = disassemble(obj, objdump_name)
        unknown = [a for a in hit if a not in insns]
        if unknown:
            fail(f"{sym}: callgrind's address {unknown[0]:#x} is not an instruction of {sym} in "
                 f"objdump's listing")
        executed = round(sum(diffs[a] for a in hit) / delta)
        amortized = (sum(diffs.values()) + large_callee[fn] - small_callee[fn]) / delta
        results[sym] = {
            "object": obj,
            "instructions": executed,
            "addresses": len(hit),
            "branches": sum(is_conditional_branch(insns[a][0]) for a in hit),
            "calls": [a for a in hit if is_call(insns[a][0]) and not is_allowed_call(sym, *insns[a][1:])],
            "byte_loads": sum(is_byte_load(*insns[a][:2]) for a in hit),
            "amortized": amortized,
        }
    return results


def read_budgets(src, root):
    budgets = {}
    problems = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    if MARKER not in line:
                        continue
                    where = f"{os.path.relpath(path, root)}:{lineno}"
                    m = MARKER_RE.search(line)
                    if not m:
                        problems.append(f"{where}: malformed budget (write `// {MARKER} SYMBOL N "
                                        f"instructions, M branches`): {line.strip()}")
                        continue
                    sym = m.group("sym")
                    if sym in budgets:
                        problems.append(f"{where}: second budget for {sym} (first at "
                                        f"{budgets[sym]['where']})")
                        continue
                    budgets[sym] = {
                        "instructions": int(m.group("instr")),
                        "branches": int(m.group("branches")),
                        "where": where,
                    }
    return budgets, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("--src", required=True, help="directory searched for budget comments")
    ap.add_argument("--root", default=".", help="paths in messages are relative to this")
    ap.add_argument("--small", required=True, help="callgrind profile of the shorter run")
    ap.add_argument("--large", required=True, help="callgrind profile of the longer run")
    ap.add_argument("--delta", required=True, type=int, help="extra malloc/free pairs in --large")
    ap.add_argument("--realloc-small", required=True,
                    help="callgrind profile of the shorter realloc run (`driver N realloc`)")
    ap.add_argument("--realloc-large", required=True,
                    help="callgrind profile of the longer realloc run, DELTA more rounds")
    ap.add_argument("--rust-bin", help="the Rust program of --rust-small and --rust-large")
    ap.add_argument("--rust-small", help="callgrind profile of its shorter run")
    ap.add_argument("--rust-large", help="callgrind profile of its longer run, DELTA more pairs")
    args = ap.parse_args()
    rust = (args.rust_bin, args.rust_small, args.rust_large)
    if any(rust) and not all(rust):
        fail("--rust-bin, --rust-small and --rust-large go together")

    pairs = (args.small, args.large, args.delta)
    paths = {sym: (args.lib, sym, sym, *pairs) for sym in SYMBOLS}
    # Two reallocs a round: to the other class and back.
    paths["realloc"] = (args.lib, "realloc", "realloc", args.realloc_small, args.realloc_large,
                        2 * args.delta)
    if args.rust_bin:
        binary = os.path.realpath(args.rust_bin)
        for sym, name in RUST_SYMBOLS.items():
            paths[sym] = (binary, *rust_symbol(binary, name), args.rust_small, args.rust_large,
                          args.delta)
    measured = measure(paths)
    budgets, problems = read_budgets(args.src, args.root)
    for sym in budgets:
        if sym not in measured and not (sym in RUST_SYMBOLS and not args.rust_bin):
            problems.append(f"{budgets[sym]['where']}: budget for {sym}, which the check does not "
                            f"measure (it measures {', '.join(measured)})")

    print(f"{'fast path':<12} {'measured':>20} {'written':>20}  {'Ir/call':>8}  where")
    for sym in measured:
        got = measured[sym]
        b = budgets.get(sym)
        got_text = f"{got['instructions']} instr, {got['branches']} br"
        want_text = f"{b['instructions']} instr, {b['branches']} br" if b else "(no budget)"
        where = b["where"] if b else "-"
        print(f"{sym:<12} {got_text:>20} {want_text:>20}  {got['amortized']:8.2f}  {where}")
        if got["instructions"] != got["addresses"]:
            problems.append(f"{sym}: the hit path executes {got['instructions']} instructions but "
                            f"has {got['addresses']} distinct ones (a loop?); the budget counts "
                            "executed instructions")
        if sym in ("free", "rust_dealloc") and got["byte_loads"] == 0:
            problems.append(f"{sym}: the hit path loads no single byte: the free mark's compare "
                            "must read the block's first byte before its word (allocator/src/"
                            "freed.rs, \"Why a byte first\")")
        if got["calls"]:
            problems.append(f"{sym}: the hit path makes a call (at {got['calls'][0]:#x} in "
                            f"{os.path.basename(got['object'])}), whose instructions are not "
                            "counted")
        if b is None:
            problems.append(f"{sym}: no budget comment under {os.path.relpath(args.src, args.root)}"
                            f" (add `// {MARKER} {sym} {got['instructions']} instructions, "
                            f"{got['branches']} branches` next to its fast path)")
        elif (b["instructions"], b["branches"]) != (got["instructions"], got["branches"]):
            problems.append(f"{sym}: measured {got['instructions']} instructions, "
                            f"{got['branches']} branches on the hit path; {b['where']} says "
                            f"{b['instructions']} instructions, {b['branches']} branches")
    print("(instr: executed on a thread-cache hit; br: conditional branches among them; "
          "Ir/call: average over all calls, misses and realloc's copy included)")
    report("check-fast-paths", problems)


def report(tool, problems):
    """Prints each problem as a line `TOOL: FAIL: ...` and exits 1 if there is any, else 0."""
    for p in problems:
        print(f"{tool}: FAIL: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
