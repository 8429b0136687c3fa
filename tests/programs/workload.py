"""Allocation-heavy Python workload for Tally's LD_PRELOAD test.

Builds dicts of strings, lists of tuples, sorts, JSON round trips and string
joins. The output is deterministic (no set/dict order that depends on string
hashing, no addresses, no timing): a few counts and a SHA-256 of everything.
"""

import hashlib
import json
import sys


def rng(seed):
    """xorshift64*: the same sequence on every run and platform."""
    state = (seed * 0x9E3779B97F4A7C15 | 1) & 0xFFFFFFFFFFFFFFFF
    while True:
        state ^= state >> 12
        state ^= (state << 25) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 27
        yield (state * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
         "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi"]


def make_record(r, i):
    n = next(r)
    name = "-".join(WORDS[(n >> (4 * k)) & 15] for k in range(1 + n % 5))
    return {
        "id": i,
        "name": name + str(i),
        "tags": [WORDS[(n >> s) & 15] for s in range(0, 40, 8)],
        "score": (n % 100000) / 7.0,
        "blob": "x" * (n % 300),
    }


def main():
    digest = hashlib.sha256()
    r = rng(12345)
    total_records = 0
    for round_no in range(12):
        records = [make_record(r, i) for i in range(25000)]
        total_records += len(records)
        by_name = {}
        for rec in records:
            by_name.setdefault(rec["name"].split("-")[0], []).append(rec)
        # Sort by key so the order never depends on hashing.
        summary = []
        for key in sorted(by_name):
            group = by_name[key]
            group.sort(key=lambda rec: (-rec["score"], rec["id"]))
            summary.append((key, len(group), group[0]["name"],
                            sum(len(rec["blob"]) for rec in group)))
        text = json.dumps(records, sort_keys=True)
        back = json.loads(text)
        if back != records:
            print("json round trip mismatch in round", round_no)
            return 1
        digest.update(text.encode())
        joined = "|".join(f"{k}:{n}:{top}:{blob}" for k, n, top, blob in summary)
        digest.update(joined.encode())
        # Many short-lived strings and a big string rebuilt piecewise.
        pieces = [str(i * i) for i in range(50000)]
        big = ",".join(pieces)
        if big.split(",") != pieces:
            print("split mismatch in round", round_no)
            return 1
        digest.update(big[-1000:].encode())
        counts = {}
        for word in text[:200000].split('"'):
            counts[word] = counts.get(word, 0) + 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        print(f"round {round_no}: groups={len(summary)} top={top[0][0]!r}x{top[0][1]}"
              f" json_bytes={len(text)}")
        del records, back, by_name, pieces, big, counts
    print(f"records={total_records}")
    print(f"sha256={digest.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
