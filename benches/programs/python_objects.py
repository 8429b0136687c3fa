"""Real-program workload: CPython doing ordinary object work with every object from malloc.

Run with PYTHONMALLOC=malloc so CPython's small-object arena is bypassed and each object, dict,
list and string goes through the malloc under test (the runner sets it for every allocator).
Builds records, serializes them to JSON and back, groups, sorts and formats them; prints one
line `workload=python_objects ops=<n> checksum=<hex>` that depends only on the arguments.
"""

import hashlib
import json
import sys


def records(rng_state, n):
    out = []
    for i in range(n):
        rng_state = (rng_state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(
            {
                "id": i,
                "name": "user-%d-%x" % (i, rng_state >> 40),
                "tags": ["t%d" % ((rng_state >> s) & 31) for s in range(0, 40, 8)],
                "score": (rng_state >> 20) % 1000,
                "group": (rng_state >> 50) % 97,
            }
        )
    return rng_state, out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    per_round = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    digest = hashlib.sha256()
    state = 12345
    keep = []
    ops = 0
    for r in range(rounds):
        state, recs = records(state, per_round)
        text = json.dumps(recs)
        back = json.loads(text)
        groups = {}
        for rec in back:
            groups.setdefault(rec["group"], []).append(rec)
        for g in sorted(groups):
            members = sorted(groups[g], key=lambda x: (-x["score"], x["name"]))
            line = ",".join("%s:%d" % (m["name"], m["score"]) for m in members[:5])
            digest.update(line.encode())
        # A few records survive each round, like a cache that keeps growing slowly.
        keep.extend(back[:: per_round // 50 or 1])
        if len(keep) > 2000:
            keep = keep[-1000:]
        ops += len(back)
    digest.update(str(len(keep)).encode())
    print("workload=python_objects ops=%d checksum=%s" % (ops, digest.hexdigest()[:16]))


main()
