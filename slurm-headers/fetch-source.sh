#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Makes the SLURM source tree matching the installed SLURM available and prints its
# path on stdout (messages go to stderr). Only its internal headers are used
# (src/slurmctld/slurmctld.h and what it includes); nothing is configured or built.
#
# Order:
#   1. SLURM_SRC_DIR, if set (must hold src/slurmctld/slurmctld.h and match the
#      installed version).
#   2. A cached tree in ${ASBB_CACHE_DIR:-$HOME/.cache/asbb/slurm-src}.
#   3. Debian's source package slurm-wlm of exactly the installed libslurm-dev
#      version, fetched with a temporary deb-src list (the system's apt lists are
#      not touched), unpacked with dpkg-source so Debian's patches are applied.
# Idempotent: a second run prints the cached path without network access.
set -eu

die() { echo "fetch-source.sh: error: $*" >&2; exit 1; }
say() { echo "fetch-source.sh: $*" >&2; }

VERSION_H=${SLURM_INCLUDE_DIR:-/usr/include}/slurm/slurm_version.h
[ -r "$VERSION_H" ] || die "$VERSION_H not found: install libslurm-dev (the public SLURM headers)"
num=$(sed -n 's/^#define SLURM_VERSION_NUMBER[[:space:]]*\(0x[0-9a-fA-F]*\).*/\1/p' "$VERSION_H")
[ -n "$num" ] || die "no SLURM_VERSION_NUMBER in $VERSION_H"
num=$((num))
HDR_VERSION="$((num >> 16 & 255)).$(printf %02d $((num >> 8 & 255))).$((num & 255))"

# The upstream version (22.05.8) of a tree, from its META file.
tree_version() {
    meta="$1/META"
    [ -r "$meta" ] || { echo unknown; return; }
    maj=$(sed -n 's/^[[:space:]]*Major:[[:space:]]*//p' "$meta" | head -n1)
    min=$(sed -n 's/^[[:space:]]*Minor:[[:space:]]*//p' "$meta" | head -n1)
    mic=$(sed -n 's/^[[:space:]]*Micro:[[:space:]]*//p' "$meta" | head -n1)
    echo "$maj.$min.$mic"
}

check_tree() {
    [ -r "$1/src/slurmctld/slurmctld.h" ] || die "$1 is not a SLURM source tree (no src/slurmctld/slurmctld.h)"
    v=$(tree_version "$1")
    [ "$v" = "$HDR_VERSION" ] || die "SLURM source tree $1 is version $v but the installed headers ($VERSION_H) are $HDR_VERSION; a plugin built against other headers would be refused or crash slurmctld"
    # slurmctld.h includes config.h; an empty one gives the same struct layout as a
    # configured tree (see SLURM-NOTES.md).
    [ -e "$1/config.h" ] || : >"$1/config.h" 2>/dev/null || die "cannot create $1/config.h"
}

if [ -n "${SLURM_SRC_DIR:-}" ]; then
    check_tree "$SLURM_SRC_DIR"
    echo "$SLURM_SRC_DIR"
    exit 0
fi

command -v dpkg-query >/dev/null 2>&1 || die "no dpkg-query: not a Debian system; set SLURM_SRC_DIR to a SLURM $HDR_VERSION source tree"
DEB_VERSION=$(dpkg-query -W -f='${Version}' libslurm-dev 2>/dev/null) || DEB_VERSION=
[ -n "$DEB_VERSION" ] || die "libslurm-dev is not installed (apt-get install libslurm-dev), or set SLURM_SRC_DIR"
upstream=${DEB_VERSION#*:}
upstream=${upstream%%-*}
[ "$upstream" = "$HDR_VERSION" ] || die "installed libslurm-dev $DEB_VERSION does not match $VERSION_H ($HDR_VERSION)"

CACHE=${ASBB_CACHE_DIR:-$HOME/.cache/asbb/slurm-src}
TREE="$CACHE/slurm-wlm-$DEB_VERSION"
mkdir -p "$CACHE"
if [ -e "$TREE/.asbb-complete" ]; then
    check_tree "$TREE"
    echo "$TREE"
    exit 0
fi

# One fetch at a time (two cargo builds may run this together).
exec 9>"$CACHE/.lock"
flock 9
if [ -e "$TREE/.asbb-complete" ]; then
    check_tree "$TREE"
    echo "$TREE"
    exit 0
fi

say "fetching Debian source package slurm-wlm=$DEB_VERSION into $CACHE"
WORK=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/dl"
# The Debian release whose sources match the installed SLURM: this system's codename
# (bookworm on the host, trixie in the 24.11 chroot), or ASBB_DEB_SUITE.
SUITE=${ASBB_DEB_SUITE:-$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null)}
SUITE=${SUITE:-bookworm}
cat >"$WORK/src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Other suites can be given in ASBB_DEB_SRC_SUITES.
if [ -n "${ASBB_DEB_SRC_SUITES:-}" ]; then
    sed -i "s/^Suites: $SUITE $SUITE-updates$/Suites: $ASBB_DEB_SRC_SUITES/" "$WORK/src.sources"
fi
set -- -o "Dir::Etc::SourceList=$WORK/src.sources" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache" -o Debug::NoLocking=1 \
    -o APT::Sandbox::User=root
apt-get "$@" -qq update >&2 || die "apt-get update of the temporary deb-src list failed"
if ! (cd "$WORK/dl" && apt-get "$@" -qq source --download-only "slurm-wlm=$DEB_VERSION") >&2; then
    # A point-release or security revision (e.g. 24.11.5-4+deb13u1) whose Debian files
    # the mirror does not serve: its upstream tarball is shared by every revision of the
    # release. Fetch that alone; it is unpacked without Debian's patches, which do not
    # touch the structs the plugins read (the version is checked below).
    say "slurm-wlm=$DEB_VERSION is not fully served; fetching its upstream tarball alone"
    rm -f "$WORK"/dl/*
    uri=$(apt-get "$@" -qq source --print-uris "slurm-wlm=$DEB_VERSION" | sed -n "s/^'\([^']*\.orig\.tar\.[a-z0-9]*\)'.*/\1/p" | head -n1)
    [ -n "$uri" ] || die "no upstream tarball listed for slurm-wlm=$DEB_VERSION (set SLURM_SRC_DIR)"
    /usr/lib/apt/apt-helper -qq download-file "$uri" "$WORK/dl/${uri##*/}" >&2 ||
        die "cannot download $uri (set SLURM_SRC_DIR)"
fi
dsc=$(ls "$WORK"/dl/slurm-wlm_*.dsc 2>/dev/null | head -n1 || true)

if ! command -v dpkg-source >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing dpkg-dev for dpkg-source"
    apt-get install -y -qq dpkg-dev >&2 || say "could not install dpkg-dev"
fi
if [ -n "$dsc" ] && command -v dpkg-source >/dev/null 2>&1; then
    dpkg-source -x "$dsc" "$WORK/tree" >&2 || die "dpkg-source -x $dsc failed"
else
    [ -n "$dsc" ] && say "warning: no dpkg-source; unpacking the upstream tarball without Debian's patches"
    orig=$(ls "$WORK"/dl/slurm-wlm_*.orig.tar.* | head -n1)
    mkdir "$WORK/tree"
    tar -xf "$orig" -C "$WORK/tree" --strip-components=1 || die "cannot unpack $orig"
fi
got=$(tree_version "$WORK/tree")
[ "$got" = "$HDR_VERSION" ] || die "fetched slurm-wlm source is $got, installed SLURM is $HDR_VERSION"
check_tree "$WORK/tree"
echo "$DEB_VERSION" >"$WORK/tree/.asbb-complete"
rm -rf "$TREE"
mv "$WORK/tree" "$TREE"
say "SLURM $DEB_VERSION source ready"
echo "$TREE"
