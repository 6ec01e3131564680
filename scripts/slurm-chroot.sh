#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A Debian chroot with a newer SLURM release, for building and testing the plugins
# against it on a Debian 12 host (a newer SLURM cannot be installed on the host
# without replacing its libc). Run as root.
#
#   slurm-chroot.sh RELEASE ensure    create (or reuse) the chroot; print its path
#   slurm-chroot.sh RELEASE src       the SLURM source tree matching the chroot's SLURM
#                                     (host path; fetched inside the chroot on first use)
#   slurm-chroot.sh RELEASE include   the chroot's public SLURM headers (host path)
#   slurm-chroot.sh RELEASE run CMD   run CMD in the chroot, with /proc, /sys, /dev and
#                                     this repository (at the same path) mounted
#   slurm-chroot.sh RELEASE umount    unmount all of that again
#
# RELEASE: 24.11 (Debian trixie) or 26.05 (Debian sid). The chroot lives in
# ${ASBB_CACHE_DIR:-$HOME/.cache/asbb}/chroot/RELEASE and is reused between runs; it is
# rebuilt when this script changes what it installs (see STAMP). debootstrap takes
# about 20 s, the packages about 10 s.
set -euo pipefail

die() { echo "slurm-chroot.sh: error: $*" >&2; exit 1; }
say() { echo "slurm-chroot.sh: $*" >&2; }

[ $# -ge 2 ] || die "usage: slurm-chroot.sh 24.11|26.05 ensure|src|include|run CMD..."
release=$1
action=$2
shift 2
case "$release" in
    24.11) suite=trixie; apt_extra=() ;;
    # sid's index served here can be past its Valid-Until date.
    26.05) suite=sid; apt_extra=(-o Acquire::Check-Valid-Until=false) ;;
    *) die "unknown SLURM release '$release' (24.11 or 26.05; 22.05 is the host's own)" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount)"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache=${ASBB_CACHE_DIR:-$HOME/.cache/asbb}
root="$cache/chroot/$release"
# What the chroot holds; a change here rebuilds it.
PACKAGES="slurmctld slurmd slurm-client libslurm-dev munge libsqlite3-0 procps util-linux dpkg-dev ca-certificates e2fsprogs"
STAMP="$suite: $PACKAGES"

mounted() { mountpoint -q "$root$1"; }

mount_all() {
    # The host's names (its hostname is the test node's): without /etc/hosts every
    # lookup, e.g. slurmctld's of a client address, waits for an unreachable DNS.
    cp /etc/hosts "$root/etc/hosts"
    mounted /proc || mount -t proc proc "$root/proc"
    mounted /sys || mount --rbind /sys "$root/sys"
    mounted /dev || mount --rbind /dev "$root/dev"
    mkdir -p "$root$repo"
    mounted "$repo" || mount --bind "$repo" "$root$repo"
}

# Everything mounted under the chroot, deepest first.
umount_all() {
    local m
    for m in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    ! awk -v r="$root/" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/mounts
}

in_chroot() {
    mount_all
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

ensure() {
    if [ -e "$root/.asbb-ready" ] && [ "$(cat "$root/.asbb-ready")" = "$STAMP" ]; then
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    mkdir -p "$cache/chroot"
    exec 9>"$cache/chroot/.lock-$release"
    flock 9
    if [ -e "$root/.asbb-ready" ] && [ "$(cat "$root/.asbb-ready")" = "$STAMP" ]; then
        return
    fi
    log=$(mktemp /tmp/asbb-debootstrap.XXXXXX.log)
    if [ -e "$root/.asbb-ready" ] && [ "$(cut -d: -f1 "$root/.asbb-ready")" = "$suite" ]; then
        say "updating the packages of the Debian $suite chroot in $root"
    else
        say "creating a Debian $suite chroot for SLURM $release in $root"
        # Never remove a tree with this repository (or /dev) still mounted inside it.
        umount_all || die "cannot unmount everything under $root; not removing it"
        rm -rf "$root"
        debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian >"$log" 2>&1 ||
            { tail -n 30 "$log" >&2; die "debootstrap $suite failed (log above)"; }
    fi
    # No daemons from postinst scripts; the tests start their own.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    in_chroot apt-get "${apt_extra[@]}" -q update >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "apt-get update in the chroot failed"; }
    # shellcheck disable=SC2086
    in_chroot env DEBIAN_FRONTEND=noninteractive apt-get "${apt_extra[@]}" -y -q --no-install-recommends install $PACKAGES \
        >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "installing SLURM in the chroot failed"; }
    [ -s "$root/etc/munge/munge.key" ] || in_chroot mungekey -c -k /etc/munge/munge.key >/dev/null 2>&1 || true
    in_chroot chown munge:munge /etc/munge/munge.key
    in_chroot chmod 0400 /etc/munge/munge.key
    rm -f "$log"
    echo "$STAMP" >"$root/.asbb-ready"
    say "SLURM $(in_chroot dpkg-query -W -f='${Version}' slurmctld) ready in $root"
}

case "$action" in
    ensure)
        ensure
        echo "$root"
        ;;
    include)
        ensure
        echo "$root/usr/include"
        ;;
    src)
        ensure
        # 26.05: the archive serves no source for sid's slurm-wlm (measured Dec 2026:
        # the .dsc and .orig.tar.gz answer 404), so this fails with fetch-source.sh's
        # message. Headers of another 26.05 micro release are no substitute: 26.05.5's
        # job_record_t is 8 bytes longer than 26.05.4's before `burst_buffer`.
        tree=$(in_chroot sh "$repo/slurm-headers/fetch-source.sh")
        echo "$root$tree"
        ;;
    run)
        ensure
        in_chroot "$@"
        ;;
    umount)
        umount_all || die "something is still mounted under $root"
        ;;
    *) die "unknown action '$action'" ;;
esac
