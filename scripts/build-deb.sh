#!/usr/bin/env bash
# Builds the Debian package of Tally with dpkg-deb: the files of scripts/install.sh under
# Debian's paths (the library in the multiarch directory, /usr/lib/<multiarch>/libtally.so.0),
# stripped of debug information, with the C library dependencies dpkg-shlibdeps finds and a
# trigger that refreshes the dynamic linker's cache on install and removal.
#
#   scripts/build-deb.sh [--out DIR]     (default: target/debian; prints the package's path)
#
# Needs dpkg-dev (dpkg-shlibdeps, dpkg-architecture) and binutils, and cargo for the build.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "scripts/build-deb.sh: $*" >&2; exit 1; }
out=target/debian
while (($#)); do
    case "$1" in
        --out) (($# > 1)) || die "--out needs a directory"; out=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture strip gzip; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y dpkg-dev binutils)"
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# The package's maintainer: Debian's DEBFULLNAME and DEBEMAIL, else the git identity, else the
# author of the commit built.
name=${DEBFULLNAME:-$(git config user.name || git log -1 --format=%an 2>/dev/null || true)}
email=${DEBEMAIL:-$(git config user.email || git log -1 --format=%ae 2>/dev/null || true)}
maintainer="$name <$email>"
[[ -n "$name" && "$email" == *@* ]] || die "no maintainer: set DEBFULLNAME and DEBEMAIL"
url=$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
debversion=$version-1
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
stage=$work/stage

scripts/install.sh --prefix /usr --libdir "lib/$multiarch" --destdir "$stage" >&2
libdir=$stage/usr/lib/$multiarch
# Stripped as dh_strip would (Debian ships debug information in separate -dbgsym packages).
# Profiles lose nothing: the allocator's own frames never appear in them, and the program's
# functions are named from the program's objects.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$libdir/libtally.so.$version" "$libdir/tally/libtally_jvm.so"
strip --remove-section=.comment --remove-section=.note "$stage/usr/bin/tally"

# Manual pages compressed, as Debian's are.
gzip -9n "$stage"/usr/share/man/man1/*.1

doc=$stage/usr/share/doc/tally
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: tally"
    echo "Source: $url"
    echo
    echo "Files: *"
    echo "Copyright: 2026 The Tally developers"
    echo "License: MIT or Apache-2.0"
    echo
    echo "License: MIT"
    sed -e 's/^$/./' -e 's/^/ /' LICENSE-MIT
    echo
    echo "License: Apache-2.0"
    echo " On Debian systems, the full text of the Apache License, Version 2.0, is in"
    echo " /usr/share/common-licenses/Apache-2.0."
} > "$doc/copyright"
# The upstream changelog's Debian name.
gzip -9n < "$doc/CHANGELOG.md" > "$doc/changelog.gz"
rm -- "$doc/CHANGELOG.md"
{
    echo "tally ($debversion) unstable; urgency=medium"
    echo
    echo "  * Packaged from the upstream release $version (see changelog.gz)."
    echo
    echo " -- $maintainer  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc"/*

# The C library versions the binaries need, as dpkg-shlibdeps reads them from their symbols.
mkdir -p "$work/debian"
printf 'Source: tally\n\nPackage: tally\nArchitecture: any\n' > "$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -l"$libdir" \
    -e"$libdir/libtally.so.$version" -e"$libdir/tally/libtally_jvm.so" -e"$stage/usr/bin/tally" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
[[ -n "$depends" ]] || die "dpkg-shlibdeps found no dependencies"

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: tally
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $depends
Suggests: graphviz
Section: devel
Priority: optional
Homepage: $url
Description: memory allocator with a built-in sampling heap profiler
 Tally replaces malloc in any program (LD_PRELOAD=libtally.so.0) or serves a
 C program linked with -ltally. Its heap profiler, turned on with
 TALLY_CONF=prof:true, records one allocation in every ~512 KiB with its stack,
 cheaply enough to leave on in production, and writes jemalloc-compatible
 heap profiles, or serves them over HTTP in pprof format.
 .
 The tally command turns the profiles into text, call graphs, flame graphs,
 pprof and diffs, names Java and JavaScript frames, and finds the stacks
 whose memory grows steadily.
CONTROL
# Other packages linking -ltally depend on this one.
echo "libtally 0 tally (>= $version)" > "$stage/DEBIAN/shlibs"
# The dynamic linker's cache, refreshed after install and removal.
echo "activate-noawait ldconfig" > "$stage/DEBIAN/triggers"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage"/DEBIAN/*

mkdir -p "$out"
deb=$out/tally_${debversion}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
