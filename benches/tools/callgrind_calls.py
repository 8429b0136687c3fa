"""Prints the calls into FUNCTION (from every caller) and their inclusive instruction count,
`calls instructions`, from a callgrind output file written with --compress-strings=no
--compress-pos=no. Used by benches/run-prof-cost.sh to count a run's samples (the calls of
tally::prof_hooks::alloc_sampled) and what they cost.

Usage: callgrind_calls.py FILE FUNCTION"""
import re, sys
path, wanted = sys.argv[1], sys.argv[2]
names = {}
def name_of(field):
    m = re.match(r'\((\d+)\)(?: (.*))?', field)
    if not m:
        return field
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), '?')
current = callee = None
pending = False
calls = total_calls = total_cost = 0
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('fn='):
        current = name_of(line[3:]); callee = None; pending = False
    elif line.startswith('cfn='):
        callee = name_of(line[4:])
    elif line.startswith(('fl=', 'fi=', 'fe=')):
        name_of(line[3:])
    elif line.startswith(('cfi=', 'cfl=', 'cob=')):
        name_of(line[4:])
    elif line.startswith('ob='):
        name_of(line[3:])
    elif line.startswith('calls='):
        calls = int(line[6:].split()[0]); pending = True
    elif pending:
        pending = False
        if callee == wanted and current != wanted:
            parts = line.split()
            total_calls += calls
            total_cost += int(parts[1]) if len(parts) > 1 else 0
print(total_calls, total_cost)
