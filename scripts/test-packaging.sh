#!/usr/bin/env bash
# The ways Tally reaches a user, each tried as a user would (run by scripts/test.sh):
#   1. the crates: `cargo package --workspace` builds every published crate from its package,
#      and each package holds what a user needs, nothing more;
#   2. the library's SONAME;
#   3. scripts/install.sh into a temporary prefix: a C program built with
#      `pkg-config --cflags --libs tally` runs on Tally, `tally run` finds the library, and
#      --uninstall leaves the prefix empty;
#   4. the Debian package: no lintian errors; installed with dpkg -i, `tally --version`, a preloaded python3 with
#      stats_print:true and a profile through `tally run` work from any directory; dpkg -r
#      leaves none of its files behind.
# Step 4 installs a package system-wide: it needs root and refuses to touch a `tally` package
# that was installed before it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

fail() { echo "scripts/test-packaging.sh: FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
tmp=$(mktemp -d)
cleanup() {
    if [[ -n "${deb_installed:-}" ]]; then dpkg -r tally >/dev/null 2>&1 || true; fi
    rm -rf -- "$tmp"
}
trap cleanup EXIT

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

step "1. cargo package --workspace"
# Every member, but those marked `publish = false` (the benchmarks, the acceptance tests, the JVM
# agent): `cargo package` does not skip them as `cargo publish --workspace` does, and they are
# not meant to build outside the workspace.
published=(tally-pal tally-format tally-profiler tally-alloc tally-report)
mapfile -t unpublished < <(cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["publish"] == []:
        print(p["name"])')
((${#unpublished[@]} == 4)) || fail "expected 4 publish = false members, found: ${unpublished[*]}"
excludes=()
for name in "${unpublished[@]}"; do excludes+=(--exclude "$name"); done
# Cargo extracts the packages it verifies into $CARGO_HOME/registry/src/-<hash of this
# checkout's package directory>/ and reuses an extraction that is there, so a second run from a
# checkout at the same path would build the first run's sources (a new function in tally-pal
# then "cannot be found" from tally-alloc). Ours go first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/tally-{pal,format,profiler,alloc,report}-"$version"
cargo package --workspace "${excludes[@]}" --locked --allow-dirty >"$tmp/package.log" 2>&1 \
    || { tail -n 40 "$tmp/package.log" >&2; fail "cargo package --workspace failed"; }
packaged=$(grep -c '^ *Packaged ' "$tmp/package.log")
((packaged == ${#published[@]})) || fail "cargo package made $packaged packages, not ${#published[@]}"
for crate in "${published[@]}"; do
    file=${CARGO_TARGET_DIR:-target}/package/$crate-$version.crate
    [[ -f "$file" ]] || fail "cargo package wrote no $file"
    size=$(stat -c %s "$file")
    ((size < 1024 * 1024)) || fail "$crate's package is $size bytes (test data or build outputs in it?)"
    list=$(tar -tzf "$file" | sed "s|^$crate-$version/||")
    for needed in Cargo.toml README.md LICENSE-MIT LICENSE-APACHE src/lib.rs; do
        grep -qx "$needed" <<<"$list" || fail "$crate's package lacks $needed"
    done
    if grep -E '^(tests|benches|target|docs|demo)/|\.heap$|\.so$' <<<"$list"; then
        fail "$crate's package holds the files above, which no user of the crate needs"
    fi
    echo "$crate: $(wc -l <<<"$list") files, $size bytes"
done

step "2. SONAME"
cargo build --release --locked -p tally-alloc -p tally-jvm-agent -p tally-report
soname=$(readelf -d target/release/libtally.so | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$soname" == libtally.so.0 ]] || fail "libtally.so's SONAME is '$soname', not libtally.so.0"

# A C program that is on Tally when it says so: jemalloc's `version` control names Tally.
cat > "$tmp/uses_tally.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tally.h>
int main(void) {
    const char *version = NULL;
    size_t len = sizeof version;
    if (mallctl("version", &version, &len, NULL, 0) != 0) return 2;
    void *p = mallocx(100, MALLOCX_ZERO);
    if (p == NULL || ((char *)p)[99] != 0 || sallocx(p, 0) < 100) return 3;
    dallocx(p, 0);
    printf("%s\n", version);
    return 0;
}
C
printf 'int main(void) { return 0; }\n' > "$tmp/hello.c"
cat > "$tmp/leak.c" <<'C'
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) void *leak_for_the_packaging_test(size_t n) { void *p = malloc(n); memset(p, 1, n); return p; }
int main(void) { for (int i = 0; i < 4096; i++) leak_for_the_packaging_test(4096); return 0; }
C
cc -O1 -g -fno-omit-frame-pointer -o "$tmp/leak" "$tmp/leak.c"

step "3. scripts/install.sh --prefix"
prefix=$tmp/prefix
scripts/install.sh --prefix "$prefix"
for f in lib/libtally.so.$version lib/libtally.so.0 lib/libtally.so lib/tally/libtally_jvm.so include/tally.h \
    lib/pkgconfig/tally.pc bin/tally share/doc/tally/options.md share/man/man1/tally.1 share/man/man1/tally-run.1; do
    [[ -e "$prefix/$f" ]] || fail "install.sh did not install $f"
done
[[ $(readlink "$prefix/lib/libtally.so.0") == libtally.so.$version ]] || fail "libtally.so.0 does not point at libtally.so.$version"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[[ $(pkg-config --modversion tally) == "$version" ]] || fail "pkg-config --modversion tally is not $version"
# shellcheck disable=SC2046 # pkg-config's output is words
cc -o "$tmp/uses_tally" "$tmp/uses_tally.c" $(pkg-config --cflags --libs tally) || fail "the C program did not build with pkg-config"
unset PKG_CONFIG_PATH
# (Each listing is read whole before grep looks at it: `producer | grep -q` under pipefail fails
# whenever grep finds its line and exits while the producer is still writing, which then dies of
# SIGPIPE; `ldconfig -p` did so on a fresh CI machine.)
grep -q 'NEEDED.*\[libtally.so.0\]' <<<"$(readelf -d "$tmp/uses_tally")" || fail "the program does not record libtally.so.0"
out=$(cd / && LD_LIBRARY_PATH=$prefix/lib "$tmp/uses_tally") || fail "the program linked with -ltally failed"
[[ "$out" == *tally* ]] || fail "the program's mallctl(\"version\") says '$out', not Tally"
[[ $(cd / && "$prefix/bin/tally" --version) == "tally $version" ]] || fail "installed tally --version"
report=$(cd "$tmp" && "$prefix/bin/tally" run --out "$tmp/run1" -- "$tmp/leak") || fail "installed tally run failed"
grep -q leak_for_the_packaging_test <<<"$report" || fail "installed tally run's report lacks the leak: $report"
# Installed again over itself (an upgrade): the library is a new file renamed into place (a
# process that has the old one mapped keeps it whole), and a program running on it through the
# upgrade is unharmed. Then removed: nothing of either stays.
inode=$(stat -c %i "$prefix/lib/libtally.so.$version")
LD_PRELOAD=$prefix/lib/libtally.so.0 python3 -c '
import time
end = time.time() + 2
while time.time() < end:
    x = [bytearray(64) for _ in range(1000)]' &
running=$!
scripts/install.sh --prefix "$prefix" --no-build >/dev/null
wait "$running" || fail "a program on the installed library died while it was installed again"
[[ $(stat -c %i "$prefix/lib/libtally.so.$version") != "$inode" ]] \
    || fail "installing again rewrote libtally.so.$version in place instead of replacing it"
scripts/install.sh --prefix "$prefix" --uninstall
left=$(find "$prefix" -mindepth 1 2>/dev/null || true)
[[ -z "$left" ]] || fail "install.sh --uninstall left: $left"
if err=$(scripts/install.sh --prefix "$prefix" --uninstall 2>&1); then fail "a second --uninstall succeeded"; fi
[[ $(wc -l <<<"$err") == 1 && "$err" == *"nothing to uninstall"* ]] || fail "a second --uninstall said: $err"

step "4. the Debian package"
[[ $(id -u) == 0 ]] || fail "installing the Debian package needs root (CI runs as root)"
if grep -q 'installed' <<<"$(dpkg-query -W -f '${Status}' tally 2>/dev/null)"; then
    fail "a tally package is installed already; remove it (dpkg -r tally) to run this test"
fi
deb=$(scripts/build-deb.sh --out "$tmp/deb" | tail -n 1)
[[ -f "$deb" ]] || fail "build-deb.sh made no package"
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's|^\./|/|')
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
for f in "/usr/lib/$multiarch/libtally.so.0" "/usr/lib/$multiarch/libtally.so.$version" /usr/bin/tally \
    /usr/include/tally.h "/usr/lib/$multiarch/pkgconfig/tally.pc" /usr/share/doc/tally/copyright \
    /usr/share/man/man1/tally.1.gz /usr/share/man/man1/tally-report.1.gz; do
    grep -qx "$f" <<<"$files" || fail "the package lacks $f"
done
# Debian's own checks: no errors. (Its warnings stay, each a decision: one package rather than
# libtally0 + libtally-dev + tally, so the development symlink and a library package name that
# does not follow the SONAME.)
lint=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'root privileges' || true)
if grep '^E: ' <<<"$lint"; then fail "lintian finds the errors above in the package"; fi
dpkg -i "$deb"
deb_installed=1
cd /
[[ $(tally --version) == "tally $version" ]] || fail "tally --version after dpkg -i"
[[ $(man -w tally-run) == /usr/share/man/man1/tally-run.1.gz ]] || fail "man finds no page for tally-run"
grep -q -- '--conf <OPTS>' <<<"$(MANWIDTH=80 man tally-run 2>/dev/null)" || fail "man tally-run does not show --conf"
# (/lib/<multiarch> or /usr/lib/<multiarch>: on a merged-/usr system they are one directory.)
grep -q "libtally.so.0 (.*) => .*/lib/$multiarch/libtally.so.0\$" <<<"$(ldconfig -p)" \
    || fail "the dynamic linker's cache does not list libtally.so.0: $(ldconfig -p | grep tally)"
# shellcheck disable=SC2046 # pkg-config's output is words
cc -o "$tmp/uses_tally_deb" "$tmp/uses_tally.c" $(pkg-config --cflags --libs tally) \
    || fail "the C program did not build against the package with pkg-config"
[[ $("$tmp/uses_tally_deb") == *tally* ]] || fail "the program linked with the package's -ltally is not on Tally"
stats=$(TALLY_CONF=stats_print:true LD_PRELOAD=libtally.so.0 python3 -c 'print(sum(len(str(i)) for i in range(100000)))' 2>&1 >/dev/null)
grep -q '^tally: stats: ' <<<"$stats" || fail "python3 under LD_PRELOAD=libtally.so.0 printed no Tally statistics: $stats"
report=$(cd "$tmp" && tally run --out "$tmp/run2" -- "$tmp/leak") || fail "tally run from the package failed"
grep -q leak_for_the_packaging_test <<<"$report" || fail "tally run's report lacks the leak: $report"
# 80 MiB of bytearrays kept alive through the interpreter's finalization (a reference leaked the
# way a C extension would), so that the dump at exit holds them.
report=$(cd "$tmp" && tally run --out "$tmp/run3" -- python3 -c 'import ctypes
for _ in range(20000): ctypes.pythonapi.Py_IncRef(ctypes.py_object(bytearray(4096)))') \
    || fail "tally run python3 from the package failed"
grep -q 'PyByteArray' <<<"$report" || fail "tally run python3's report does not name PyByteArray: $report"
cd "$root"
dpkg -r tally
deb_installed=
left=()
while read -r f; do
    if [[ -e "$f" || -L "$f" ]]; then left+=("$f"); fi
done <<<"$files"
((${#left[@]} == 0)) || fail "dpkg -r left: ${left[*]}"
[[ ! -d /usr/share/doc/tally ]] || fail "dpkg -r left /usr/share/doc/tally"
if grep -q 'libtally.so.0 ' <<<"$(ldconfig -p)"; then fail "the linker's cache still lists libtally.so.0 after dpkg -r"; fi
echo "packaging: all checks passed"
