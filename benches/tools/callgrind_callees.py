"""Prints, for the function CALLER in a callgrind output file (written with
--compress-strings=no --compress-pos=no), each function it calls with the number of calls and
their inclusive instruction count: `name calls instructions` per line, most called first.
Used by benches/run-pair-cost.sh to split a malloc/free pair into its two calls.

Usage: callgrind_callees.py FILE CALLER"""
import re, sys
path, caller = sys.argv[1], sys.argv[2]
names = {}
def name_of(field):
    m = re.match(r'\((\d+)\)(?: (.*))?', field)
    if not m:
        return field
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), '?')
current = None
callee = None
calls = 0
pending = False
out = {}
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('fn='):
        current = name_of(line[3:]); callee = None; pending = False
    elif line.startswith('cfn='):
        callee = name_of(line[4:])
    elif line.startswith(('cfi=', 'cfl=', 'fl=', 'fi=', 'fe=', 'ob=', 'cob=')):
        if line.startswith(('fl=', 'fi=', 'fe=')):
            name_of(line[3:])
        elif line.startswith(('cfi=', 'cfl=', 'cob=')):
            name_of(line[4:])
        else:
            name_of(line[3:])
    elif line.startswith('calls='):
        calls = int(line[6:].split()[0]); pending = True
    elif pending:
        pending = False
        if current == caller and callee is not None:
            parts = line.split()
            cost = int(parts[1]) if len(parts) > 1 else 0
            c, i = out.get(callee, (0, 0))
            out[callee] = (c + calls, i + cost)
try:
    for name, (c, i) in sorted(out.items(), key=lambda kv: -kv[1][0]):
        print(name, c, i)
except BrokenPipeError:
    pass
