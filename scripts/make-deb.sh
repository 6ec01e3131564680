#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the Debian package of asbb for one SLURM release from what `make build`
# (22.05, the host's) or scripts/test-release.sh (24.11) staged:
#
#   scripts/make-deb.sh 22.05|24.11     -> target/deb/asbb-slurm<release>_<version>_amd64.deb
#
# The package holds the three plugins (job_submit, jobcomp, prep) in Debian's SLURM PluginDir, asbb and asbb-admin
# in /usr/bin, the commented example config and the README under /usr/share/doc, a
# systemd unit for `asbb-admin serve` and a timer for `asbb-admin reconcile`. It
# depends on slurmctld of exactly the upstream release the plugins were built for
# (slurmctld refuses a plugin of any other release).
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: make-deb.sh 22.05|24.11" >&2; exit 2; }
release=$1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
die() { echo "make-deb.sh: error: $*" >&2; exit 1; }

case "$release" in
    22.05) plugins="$repo/target/plugins"; include=/usr/include ;;
    24.11) plugins="$repo/target/slurm-$release/plugins"; include="$(bash "$here/slurm-chroot.sh" "$release" include)" ;;
    *) die "unknown SLURM release '$release' (22.05 or 24.11)" ;;
esac
for f in "$plugins/job_submit_asbb.so" "$plugins/jobcomp_asbb.so" "$plugins/prep_asbb.so" target/release/asbb target/release/asbb-admin; do
    [ -f "$f" ] || die "$f is missing: run make build (and scripts/test-release.sh $release for 24.11) first"
done
# The exact upstream release, from the headers the plugins were built with.
num=$(sed -n 's/^#define SLURM_VERSION_NUMBER[[:space:]]*\(0x[0-9a-fA-F]*\).*/\1/p' "$include/slurm/slurm_version.h")
[ -n "$num" ] || die "no SLURM_VERSION_NUMBER in $include/slurm/slurm_version.h"
num=$((num))
major=$((num >> 16 & 255)); minor=$((num >> 8 & 255)); micro=$((num & 255))
slurm="$major.$(printf %02d "$minor").$micro"
next="$major.$(printf %02d "$minor").$((micro + 1))"
[ "$major.$(printf %02d "$minor")" = "$release" ] || die "the headers are SLURM $slurm, not $release"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
name="asbb-slurm$release"
plugindir=/usr/lib/x86_64-linux-gnu/slurm-wlm
out="$repo/target/deb"
root="$out/$name"
rm -rf "$root"
install -d "$root/DEBIAN" "$root$plugindir" "$root/usr/bin" "$root/usr/share/doc/$name" "$root/lib/systemd/system"
# install -s would strip the symbols slurmctld looks up; strip only the debug info.
install -m 0755 "$plugins/job_submit_asbb.so" "$plugins/jobcomp_asbb.so" "$plugins/prep_asbb.so" "$root$plugindir/"
install -m 0755 target/release/asbb target/release/asbb-admin "$root/usr/bin/"
strip --strip-debug "$root$plugindir"/*.so "$root/usr/bin/asbb" "$root/usr/bin/asbb-admin"
install -m 0644 etc/asbb.toml "$root/usr/share/doc/$name/asbb.toml.example"
install -m 0644 README.md "$root/usr/share/doc/$name/README.md"

cat >"$root/usr/share/doc/$name/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: asbb
Comment: The plugins are built against SLURM $slurm's public and internal headers
 (Debian's libslurm-dev and source package slurm-wlm); no SLURM source is shipped.

Files: *
Copyright: the asbb authors
License: GPL-2.0-or-later

License: GPL-2.0-or-later
 This program is free software; you can redistribute it and/or modify it under the
 terms of the GNU General Public License as published by the Free Software
 Foundation; either version 2 of the License, or (at your option) any later version.
 .
 On Debian systems, the complete text of the GNU General Public License version 2
 can be found in /usr/share/common-licenses/GPL-2.
EOF

cat >"$root/lib/systemd/system/asbb-serve.service" <<'EOF'
[Unit]
Description=asbb integration API (asbb-admin serve)
After=network.target

[Service]
# Run as SlurmUser (the ledger's owner); adjust to your site's SlurmUser.
User=slurm
ExecStart=/usr/bin/asbb-admin serve
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
cat >"$root/lib/systemd/system/asbb-reconcile.service" <<'EOF'
[Unit]
Description=asbb safety net: settle holds and runs the plugins missed

[Service]
Type=oneshot
User=slurm
ExecStart=/usr/bin/asbb-admin reconcile
EOF
cat >"$root/lib/systemd/system/asbb-reconcile.timer" <<'EOF'
[Unit]
Description=Run asbb-admin reconcile every 10 minutes

[Timer]
OnBootSec=5min
OnUnitActiveSec=10min

[Install]
WantedBy=timers.target
EOF

size_kb=$(du -sk "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: amd64
Maintainer: asbb developers <asbb@localhost>
Installed-Size: $size_kb
Depends: slurmctld (>= $slurm), slurmctld (<< $next), libsqlite3-0 (>= 3.31), libc6 (>= 2.36)
Recommends: ca-certificates
Suggests: default-mta | mail-transport-agent
Section: admin
Priority: optional
Description: money budgets for SLURM $release clusters that burst into AWS
 job_submit/asbb prices every job at submission and holds its estimated cost;
 jobcomp/asbb charges what each run used. asbb-admin manages accounts, grants and
 the ledger; asbb shows users their budgets. Built for SLURM $slurm only.
EOF
deb="$out/${name}_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
