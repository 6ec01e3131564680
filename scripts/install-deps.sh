#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install what asbb needs to build and to run its end-to-end tests, on Debian 12 as root.
#
# Idempotent and quick (a dpkg-query, well under a second) when everything is present;
# runs `apt-get update` only when something is missing. Never starts system services:
# a policy-rc.d that answers 101 ("action forbidden") is in place while apt installs, so
# the packages' postinst scripts (munge, slurm*, mariadb call `invoke-rc.d ... start`)
# neither start daemons nor fail in a machine without systemd. The tests start munged,
# slurmctld, slurmd, and (for accounting tests) slurmdbd and MariaDB themselves (tests/support/cluster/),
# and PostgreSQL for the shared-ledger tests (scripts/postgres-server.sh).
#
# At the end, if slurm-headers/fetch-source.sh exists it is run (it fetches the SLURM
# source tree whose internal headers the plugins need); its failure fails this script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

PACKAGES=(
  slurmctld slurmd slurm-client libslurm-dev munge   # SLURM 22.05 and its auth daemon
  slurmdbd mariadb-server                            # accounting (tests start their own, on loopback)
  libclang-dev clang                                 # bindgen over SLURM's headers
  dpkg-dev                                           # `apt-get source` unpacks with dpkg-source
  sqlite3                                            # inspecting ledgers in tests/debugging
  gcc libc6-dev pkg-config                           # rusqlite's bundled SQLite, linking
  libsqlite3-dev                                     # the plugins link the system SQLite (one copy in slurmctld)
  util-linux procps                                  # runuser (tests run jobs as users), pgrep/ps
  ca-certificates                                    # HTTPS package fetches
  chromium                                           # renders the HTML grant report in tests
  debootstrap                                        # chroots with newer SLURM releases (make test)
  postgresql                                         # the PostgreSQL ledger's tests (make test-postgres)
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (apt-get install)" >&2
  exit 1
fi
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: not a Debian system (no dpkg-query)" >&2
  exit 1
fi

# Which packages are not installed? `dpkg-query -W` prints "ii " for installed ones and
# fails (to stderr) for packages it has never heard of.
missing=()
status="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)"
for p in "${PACKAGES[@]}"; do
  if ! grep -q "^$p ii" <<<"$status"; then
    missing+=("$p")
  fi
done

did="all ${#PACKAGES[@]} packages already present"
if [ "${#missing[@]}" -gt 0 ]; then
  # Keep daemons from being started by postinst scripts while apt runs.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from asbb scripts/install-deps.sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    made_policy=1
  fi
  cleanup() { if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi; }
  trap cleanup EXIT

  export DEBIAN_FRONTEND=noninteractive
  log="$(mktemp /tmp/asbb-install-deps.XXXXXX.log)"
  apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
            --no-install-recommends)
  # Update only when the lists are missing or the install cannot find a package.
  if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
    apt-get update -q >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  fi
  if ! apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    apt-get install "${apt_opts[@]}" "${missing[@]}" >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  fi
  cleanup
  trap - EXIT
  rm -f "$log"
  did="installed ${#missing[@]} missing package(s): ${missing[*]}"
fi

# The munge key: munge's postinst creates it; make sure it is there (and owned right)
# even if the package was unpacked some other way.
if [ ! -s /etc/munge/munge.key ]; then
  runuser -u munge -- mungekey -c >/dev/null 2>&1 || mungekey -c -k /etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  did="$did; created /etc/munge/munge.key"
fi

echo "install-deps: $did"

# Its messages (and the source path it prints) go to stderr, so that this script's
# stdout stays the one line above.
if [ -f "$root/slurm-headers/fetch-source.sh" ]; then
  bash "$root/slurm-headers/fetch-source.sh" >&2
fi
