#!/usr/bin/env bash
# Instructions per malloc/free pair, and per malloc and per free, counted by callgrind
# (repeatable, whatever else the machine is doing): benches/programs/pairs.c runs N and N+100000
# pairs of one size under each allocator; the difference over 100000 is the cost of one pair on a
# thread-cache hit, the loop's own instructions included (about 10), and of each call (through
# the PLT). Prints a Markdown table.
#
# Usage: benches/run-pair-cost.sh [--alt-so PATH] [--sizes "16 48 100 1000"] [--live N | --batch B]
#   --alt-so PATH  also count another build of libtally.so (column `tally-alt`)
#   --live N       keep N blocks alive in a ring, freeing the oldest before each malloc (a
#                  working set: no page empties on each free); default 0, the block just
#                  allocated is freed
#   --batch B      allocate B blocks, then free them in the order allocated (Criterion's
#                  `batch64` with B = 64), over and over
# Allocators: glibc, tally (target/release/libtally.so, built here), tally-alt, and jemalloc,
# mimalloc and tcmalloc where Debian's packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
alt=""
sizes="16 48 100 1000 20000"
live=0
batch=0
while (($#)); do
    case "$1" in
    --alt-so) alt="$(realpath "$2")"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --live) live="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    *) echo "run-pair-cost: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ "$live" =~ ^[0-9]+$ && "$batch" =~ ^[0-9]+$ ]] && ! ((live && batch)) ||
    { echo "run-pair-cost: --live and --batch take a count, and only one of them" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "run-pair-cost: needs valgrind (apt-get install -y valgrind)" >&2; exit 2; }
cargo build --release -p tally-alloc >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O1 -fno-builtin -o "$work/pairs" benches/programs/pairs.c
lib=/usr/lib/x86_64-linux-gnu
names=(glibc tally)
libs=("" "$PWD/target/release/libtally.so")
if [[ -n "$alt" ]]; then names+=(tally-alt); libs+=("$alt"); fi
for pair in jemalloc:libjemalloc.so.2 mimalloc:libmimalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4; do
    if [[ -f "$lib/${pair#*:}" ]]; then names+=("${pair%%:*}"); libs+=("$lib/${pair#*:}"); fi
done
# Runs PAIRS pairs under callgrind; prints "pair malloc free": the program's whole count, and the
# inclusive counts of main's calls to malloc and to free (by their callgrind names; an allocator
# may name them mi_malloc, tc_free, ...: the callee with "free" in its name is free).
count() { # LIB PAIRS SIZE
    env -u TALLY_CONF -u MALLOC_CONF ${1:+LD_PRELOAD=$1} valgrind --tool=callgrind \
        --compress-strings=no --compress-pos=no \
        --callgrind-out-file="$work/out" "$work/pairs" "$2" "$3" "$live" "$batch" >"$work/log" 2>&1
    total=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/log")
    python3 benches/tools/callgrind_callees.py "$work/out" main | awk -v n="$2" -v t="$total" '
        $2 >= n && $1 ~ /free/ { f = $3 }
        $2 >= n && $1 !~ /free/ && m == "" { m = $3 }
        END { print t, m, f }'
}
printf '| size |'; for n in "${names[@]}"; do printf ' %s |' "$n"; done; echo
printf '|---|'; for _ in "${names[@]}"; do printf -- '---|'; done; echo
# The two runs' pairs: 20000 and 100000 more, rounded up to whole batches.
step=$((batch > 0 ? batch : 1))
first=$(((20000 + step - 1) / step * step))
more=$(((100000 + step - 1) / step * step))
for size in $sizes; do
    printf '| %s |' "$size"
    for i in "${!names[@]}"; do
        read -r a am af <<<"$(count "${libs[$i]}" "$first" "$size")"
        read -r b bm bf <<<"$(count "${libs[$i]}" $((first + more)) "$size")"
        printf ' %s |' "$(python3 -c "d = $more
print(f'{($b - $a) / d:.1f} ({($bm - $am) / d:.1f} + {($bf - $af) / d:.1f})')")"
    done
    echo
done
echo
# Which builds the Tally columns counted, as the suite's report says (a stale or identical
# alternate shows by its time or its hash).
for i in "${!names[@]}"; do
    [[ "${names[$i]}" == tally* ]] || continue
    printf '%s: %s, %s, sha256 %s\n' "${names[$i]}" "${libs[$i]}" \
        "$(date -u -r "${libs[$i]}" '+written %Y-%m-%d %H:%M UTC')" "$(sha256sum "${libs[$i]}" | cut -c1-16)"
done
if [[ -n "$alt" ]] && cmp -s "$alt" "$PWD/target/release/libtally.so"; then
    echo "warning: tally-alt is the same bytes as tally, so its column counts a build against itself"
fi
echo
if ((batch)); then
    echo "Each cell: instructions per pair, the loop's own included (in parentheses: per malloc + per free); in batches of $batch."
else
    echo "Each cell: instructions per pair, the loop's own included (in parentheses: per malloc + per free); $live blocks kept live."
fi
