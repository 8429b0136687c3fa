#!/usr/bin/env bash
# Builds Tally once and installs it:
#   PREFIX/lib/libtally.so.VERSION, with libtally.so.0 (its SONAME) and libtally.so linked to it
#   PREFIX/lib/tally/libtally_jvm.so   the JVMTI agent `tally run -- java` loads
#   PREFIX/include/tally.h, PREFIX/lib/pkgconfig/tally.pc
#   PREFIX/bin/tally                   (it finds the library in ../lib)
#   PREFIX/share/man/man1/             tally.1 and tally-<command>.1
#   PREFIX/share/doc/tally/            the options and the other user documentation
#   PREFIX/share/tally/installed       what was installed, for --uninstall
#
#   scripts/install.sh [--prefix DIR] [--uninstall]     (default prefix: /usr/local)
#
# --uninstall removes exactly the files the list names (and the directories the installation
# made, when empty). Packaging (scripts/build-deb.sh) uses --destdir STAGE --libdir DIR
# --no-build: the files go under STAGE, the library into PREFIX/DIR, and no list is written
# (the package manager keeps its own).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/install.sh: $*" >&2; exit 1; }
prefix=/usr/local
libdir=
destdir=
uninstall=false
build=true
while (($#)); do
    case "$1" in
        --prefix) (($# > 1)) || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --libdir) (($# > 1)) || die "--libdir needs a directory"; libdir=$2; shift 2 ;;
        --destdir) (($# > 1)) || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
        --uninstall) uninstall=true; shift ;;
        --no-build) build=false; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$prefix" == /* ]] || prefix=$(realpath -m -- "$prefix")
prefix=${prefix%/}
libdir=$prefix/${libdir:-lib}
manifest=$prefix/share/tally/installed

# The dynamic linker's cache, so that LD_PRELOAD=libtally.so.0 (no path) finds the library (and
# no longer does once uninstalled), when the directory is one it searches (as /usr/local/lib is
# on Debian).
refresh_linker_cache() {
    if [[ $(id -u) == 0 ]] && command -v ldconfig >/dev/null \
        && grep -q "^$libdir:" <<<"$(ldconfig -v -N 2>/dev/null)"; then
        ldconfig
    fi
}

if $uninstall; then
    [[ -z "$destdir" ]] || die "--uninstall takes no --destdir"
    [[ -f "$manifest" ]] || die "nothing to uninstall: $manifest does not exist"
    # Files and symlinks first (the list itself among them), then the directories the
    # installation made, deepest first (those still holding something else stay).
    mapfile -t entries < "$manifest"
    for entry in "${entries[@]}"; do
        [[ "$entry" != "file "* ]] || rm -f -- "${entry#file }"
    done
    for entry in "${entries[@]}"; do
        [[ "$entry" != "dir "* ]] || echo "${entry#dir }"
    done | sort -r | while read -r dir; do
        rmdir -- "$dir" 2>/dev/null || true
    done
    rmdir -- "$prefix/share/tally" 2>/dev/null || true
    refresh_linker_cache
    echo "uninstalled Tally from $prefix"
    exit 0
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
url=$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n "$version" ]] || die "no version in Cargo.toml"
soname=libtally.so.0
if $build; then
    cargo build --release --locked -p tally-alloc -p tally-jvm-agent -p tally-report
fi
target=${CARGO_TARGET_DIR:-target}/release
for built in libtally.so libtally_jvm.so tally; do
    [[ -f "$target/$built" ]] || die "$target/$built is missing (run without --no-build)"
done
got=$(readelf -d "$target/libtally.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$got" == "$soname" ]] || die "$target/libtally.so has SONAME '$got', not $soname"

# The list of what this installation made: directories it created, then every file.
list=()
made_dir() {
    local dir=$1 missing=()
    while [[ "$dir" != / && ! -d "$destdir$dir" ]]; do missing=("$dir" "${missing[@]}"); dir=$(dirname "$dir"); done
    mkdir -p -- "$destdir$1"
    local d
    for d in "${missing[@]}"; do list+=("dir $d"); done
}
put() { # put MODE SOURCE DESTINATION
    made_dir "$(dirname "$3")"
    # A new file renamed over the old one, never the old one rewritten: `install` alone truncates
    # and rewrites in place, and a process with the library (or the command) mapped would fault
    # on the pages cut away.
    install -m "$1" -- "$2" "$destdir$3.new-$$"
    mv -f -- "$destdir$3.new-$$" "$destdir$3"
    list+=("file $3")
}
link() { # link TARGET NAME
    made_dir "$(dirname "$2")"
    ln -sfn -- "$1" "$destdir$2"
    list+=("file $2")
}

put 0644 "$target/libtally.so" "$libdir/libtally.so.$version"
link "libtally.so.$version" "$libdir/$soname"
link "$soname" "$libdir/libtally.so"
put 0644 "$target/libtally_jvm.so" "$libdir/tally/libtally_jvm.so"
put 0644 allocator/include/tally.h "$prefix/include/tally.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@VERSION@|$version|" -e "s|@URL@|$url|" \
    packaging/tally.pc.in > "$target/tally.pc"
put 0644 "$target/tally.pc" "$libdir/pkgconfig/tally.pc"
put 0755 "$target/tally" "$prefix/bin/tally"
rm -rf -- "$target/man1"
"$target/tally" generate-man "$target/man1"
for page in "$target"/man1/*.1; do
    put 0644 "$page" "$prefix/share/man/man1/$(basename "$page")"
done
for doc in README.md CHANGELOG.md docs/options.md docs/report.md docs/jemalloc-api.md \
    docs/continuous-profiling.md docs/guard.md; do
    put 0644 "$doc" "$prefix/share/doc/tally/$(basename "$doc")"
done

if [[ -n "$destdir" ]]; then
    echo "staged Tally $version for $prefix in $destdir"
    exit 0
fi
made_dir "$prefix/share/tally"
list+=("file $manifest")
# Installed over an earlier installation: its list is kept too (the directories it made, an
# older version's library file), so that --uninstall still removes all of it.
{
    printf '%s\n' "${list[@]}"
    [[ ! -f "$manifest" ]] || cat -- "$manifest"
} | sort -u > "$manifest.new"
mv -f -- "$manifest.new" "$manifest"
refresh_linker_cache
echo "installed Tally $version into $prefix"
echo "  LD_PRELOAD=$libdir/$soname program        # or: $prefix/bin/tally run -- program"
