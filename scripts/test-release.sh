#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the plugins against one newer SLURM release and runs the end-to-end plugin
# suites against it, inside that release's Debian chroot (scripts/slurm-chroot.sh).
#
#   scripts/test-release.sh 24.11|26.05 [--build-only | --bench]
#
# --build-only stops after building the plugins; --bench then runs the sbatch
# throughput bench (benches/slurm_throughput.rs) against the release instead of the
# tests.
#
# Then it builds the release's Debian package (scripts/make-deb.sh), installs it with
# apt in the chroot, runs part of the plugin suite against the installed files, and
# removes it again.
#
# The plugins are built on the host with the release's own headers into
# target/slurm-RELEASE/ (plugin_version and every struct layout come from them). The
# test binaries and the CLIs are the host's (Rust links glibc dynamically; the
# chroots' glibc is newer); they run inside the chroot, where slurmctld, slurmd,
# munged and the SLURM clients are the release's own.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: test-release.sh 24.11|26.05 [--build-only | --bench]" >&2; exit 2; }
release=$1
mode=${2:-test}
case "$mode" in
    test | --build-only | --bench) ;;
    *) echo "test-release.sh: unknown option '$mode' (--build-only or --bench)" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
chroot_sh=(bash "$here/slurm-chroot.sh" "$release")
cargo=${CARGO:-cargo}

started=$(date +%s)
"${chroot_sh[@]}" ensure >/dev/null
src=$("${chroot_sh[@]}" src)
include=$("${chroot_sh[@]}" include)
trap '"${chroot_sh[@]}" umount' EXIT

target="$repo/target/slurm-$release"
echo "test-release: building the plugins against SLURM $release ($src)"
SLURM_INCLUDE_DIR="$include" SLURM_SRC_DIR="$src" \
    "$cargo" build --release -p job_submit_asbb -p jobcomp_asbb -p prep_asbb --target-dir "$target"
mkdir -p "$target/plugins"
for p in job_submit jobcomp prep; do
    install -m 0755 "$target/release/lib${p}_asbb.so" "$target/plugins/${p}_asbb.so"
done
[ "$mode" = --build-only ] && exit 0

# The host's CLIs and end-to-end test binaries (the same ones `make test` runs).
"$cargo" build --release --bins
if [ "$mode" = --bench ]; then
    bench=$("$cargo" bench --no-run --bench slurm_throughput --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p')
    [ -x "$bench" ] || { echo "test-release: no slurm_throughput bench binary" >&2; exit 1; }
    echo "test-release: SLURM $release: sbatch throughput bench"
    "${chroot_sh[@]}" run env ASBB_PLUGIN_DIR="$target/plugins" ${ASBB_BENCH_SUBMISSIONS:+ASBB_BENCH_SUBMISSIONS=$ASBB_BENCH_SUBMISSIONS} \
        "$bench" --bench
    exit
fi
mapfile -t tests < <("$cargo" test --release --no-run --test e2e_plugins --test e2e_faults --test e2e_prep --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\/deps\/[^"]*\)".*/\1/p')
[ "${#tests[@]}" -eq 3 ] || { echo "test-release: expected 3 test binaries, got: ${tests[*]}" >&2; exit 1; }

status=0
for t in "${tests[@]}"; do
    name=$(basename "$t")
    echo "test-release: SLURM $release: ${name%-*}"
    "${chroot_sh[@]}" run env ASBB_E2E=1 ASBB_PLUGIN_DIR="$target/plugins" ASBB_BIN_DIR="$repo/target/release" \
        "$t" --test-threads=2 || status=1
done
# The Debian package, installed with apt the way an admin would, then tested from
# its installed files (PluginDir, /usr/bin) and removed (it would shadow the plugins
# under test in later runs).
deb=$(bash "$here/make-deb.sh" "$release")
name=$(basename "$deb" | cut -d_ -f1)
echo "test-release: SLURM $release: installing $(basename "$deb") in the chroot"
cp "$deb" "$("${chroot_sh[@]}" ensure)/tmp/"
if "${chroot_sh[@]}" run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")" >/dev/null; then
    plugin_tests=$(printf '%s\n' "${tests[@]}" | grep '/e2e_plugins-')
    prep_tests=$(printf '%s\n' "${tests[@]}" | grep '/e2e_prep-')
    "${chroot_sh[@]}" run env ASBB_E2E=1 ASBB_PLUGIN_DIR=/usr/lib/x86_64-linux-gnu/slurm-wlm ASBB_BIN_DIR=/usr/bin \
        "$plugin_tests" --test-threads=2 accepted_job refusals every_terminal_state || status=1
    "${chroot_sh[@]}" run env ASBB_E2E=1 ASBB_PLUGIN_DIR=/usr/lib/x86_64-linux-gnu/slurm-wlm ASBB_BIN_DIR=/usr/bin \
        "$prep_tests" --test-threads=2 every_terminal_state || status=1
else
    echo "test-release: apt-get install of $(basename "$deb") failed" >&2
    status=1
fi
"${chroot_sh[@]}" run apt-get remove -y -q "$name" >/dev/null || status=1

echo "test-release: SLURM $release: $([ $status = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - started )) s"
exit $status
