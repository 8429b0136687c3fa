"""Reads a callgrind output file (written with --compress-strings=no --compress-pos=no).

callgrind_callees.py FILE CALLER
    prints each function CALLER calls with the number of calls and their inclusive instruction
    count: `name calls instructions` per line, most called first. Used by
    benches/run-pair-cost.sh to split a malloc/free pair into its two calls.
callgrind_callees.py FILE --into FUNCTION
    prints the calls into FUNCTION from every other function and their inclusive instruction
    count: `calls instructions`. Used by benches/run-prof-cost.sh to count a run's samples (the
    calls of tally_profiler::Profiler::on_sampled_alloc_keyed, which records each)."""
import re, sys


def calls(path):
    """Yields (caller, callee, calls, inclusive instructions) for every call record."""
    names = {}

    def name_of(field):
        m = re.match(r'\((\d+)\)(?: (.*))?', field)
        if not m:
            return field
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), '?')

    current = callee = None
    count = 0
    pending = False
    for line in open(path):
        line = line.rstrip('\n')
        if line.startswith('fn='):
            current = name_of(line[3:]); callee = None; pending = False
        elif line.startswith('cfn='):
            callee = name_of(line[4:])
        elif line.startswith(('cfi=', 'cfl=', 'cob=')):
            name_of(line[4:])
        elif line.startswith(('fl=', 'fi=', 'fe=', 'ob=')):
            name_of(line[3:])
        elif line.startswith('calls='):
            count = int(line[6:].split()[0]); pending = True
        elif pending:
            pending = False
            if callee is not None:
                parts = line.split()
                yield current, callee, count, int(parts[1]) if len(parts) > 1 else 0


try:
    if len(sys.argv) == 4 and sys.argv[2] == '--into':
        wanted = sys.argv[3]
        n = cost = 0
        for caller, callee, c, i in calls(sys.argv[1]):
            if callee == wanted and caller != wanted:
                n += c; cost += i
        print(n, cost)
    else:
        path, caller_wanted = sys.argv[1], sys.argv[2]
        out = {}
        for caller, callee, c, i in calls(path):
            if caller == caller_wanted:
                c0, i0 = out.get(callee, (0, 0))
                out[callee] = (c0 + c, i0 + i)
        for name, (c, i) in sorted(out.items(), key=lambda kv: -kv[1][0]):
            print(name, c, i)
except BrokenPipeError:
    pass
