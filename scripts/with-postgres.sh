#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs a command beside a private PostgreSQL server (scripts/postgres-server.sh) and
# stops the server afterwards, whatever the command did. The command sees
#   ASBB_TEST_POSTGRES      the server's superuser URL (tests make their databases;
#                           a test that kills its server starts one of its own)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d /tmp/asbb-postgres.XXXXXX)"
stop() {
  bash "$here/postgres-server.sh" stop "$dir" || true
  rm -rf "$dir"
}
trap stop EXIT
port="$(bash "$here/postgres-server.sh" start "$dir")"
export ASBB_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port/postgres"
"$@"
