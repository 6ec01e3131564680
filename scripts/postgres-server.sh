#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A private PostgreSQL server for asbb's tests, from Debian's packages: its own data
# folder, on loopback at a free port, started and stopped by pg_ctl (no systemd).
#
#   postgres-server.sh start DIR    initdb (first time) and start; prints the port
#   postgres-server.sh restart DIR  start again after a stop or a crash; prints the port
#   postgres-server.sh stop DIR     stop at once (immediate), if running
#
# The superuser `postgres` connects without a password (trust, on loopback and the
# socket in DIR); every other role needs its password (scram-sha-256). As root, the
# server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

cmd="${1:?usage: postgres-server.sh start|restart|stop DIR}"
dir="${2:?usage: postgres-server.sh start|restart|stop DIR}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bin" ]; then
  echo "postgres-server: PostgreSQL is not installed (apt-get install postgresql, or make deps)" >&2
  exit 1
fi
as_server() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    chmod 0700 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
    as_server "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    # A free port: one nothing answers on (bash's /dev/tcp; no other tool needed).
    port=""
    for _ in $(seq 1 50); do
      candidate=$((20000 + RANDOM % 40000))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port="$candidate"
        break
      fi
    done
    if [ -z "$port" ]; then
      echo "postgres-server: no free port found" >&2
      exit 1
    fi
    as_server tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
CONF
    as_server tee "$dir/data/pg_hba.conf" >/dev/null <<HBA
local all postgres              trust
host  all postgres 127.0.0.1/32 trust
local all all                   scram-sha-256
host  all all      127.0.0.1/32 scram-sha-256
HBA
    ;&
  restart)
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
      tail -20 "$dir/server.log" >&2
      exit 1
    }
    sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/data/postgresql.conf" | tail -1
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_server "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: postgres-server.sh start|restart|stop DIR" >&2
    exit 2
    ;;
esac
