#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `make demo`: a throwaway single-node SLURM cluster with both asbb plugins and a
# seeded ledger. Submits jobs that are accepted, held and refused, waits for them,
# prints balances and the journal, then stops the cluster and removes everything.
#
# Needs root on Debian 12 and `make build` (make demo does both). Set
# ASBB_KEEP_DEMO=1 to keep the folder for a look afterwards.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/target/release"
plugins="$root/target/plugins"
for f in "$bin/asbb-admin" "$bin/asbb" "$plugins/job_submit_asbb.so" "$plugins/jobcomp_asbb.so"; do
  [ -e "$f" ] || { echo "demo: $f is missing; run 'make build' first" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it starts slurmctld and slurmd)" >&2; exit 1; }

demo="$(mktemp -d /tmp/asbb-demo.XXXXXX)"
chmod 0755 "$demo"
mkdir -p "$demo"/{etc,state,spool,log,work}
chmod 1777 "$demo/work"
ctld_pid="" slurmd_pid=""
cleanup() {
  for pid in $slurmd_pid $ctld_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in $slurmd_pid $ctld_pid; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "${ASBB_KEEP_DEMO:-0}" = 1 ]; then echo "demo: kept $demo"; else rm -rf "$demo"; fi
}
trap cleanup EXIT

# A free pair of ports.
port=$(( 30000 + RANDOM % 10000 ))
while (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/$((port + 1))) 2>/dev/null; do
  port=$((port + 2))
done

node_line="$(slurmd -C | head -n1)"
node="$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node_line")"
cat >"$demo/etc/slurm.conf" <<EOF
ClusterName=asbbdemo
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$demo/state
SlurmdSpoolDir=$demo/spool
SlurmctldPidFile=$demo/slurmctld.pid
SlurmdPidFile=$demo/slurmd.pid
SlurmctldLogFile=$demo/log/slurmctld.log
SlurmdLogFile=$demo/log/slurmd.log
PluginDir=/usr/lib/x86_64-linux-gnu/slurm-wlm:$plugins
JobSubmitPlugins=asbb
JobCompType=jobcomp/asbb
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=2
MailProg=/bin/true
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# The example config, with the ledger inside the demo folder.
sed "s|^ledger = .*|ledger = \"$demo/ledger.db\"|" "$root/etc/asbb.toml" >"$demo/etc/asbb.toml"
export SLURM_CONF="$demo/etc/slurm.conf" ASBB_CONFIG="$demo/etc/asbb.toml"
unset ASBB_LEDGER ASBB_NOW

id asbbdemo >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin asbbdemo
pgrep -x munged >/dev/null || { mkdir -p /run/munge; chown munge:munge /run/munge; runuser -u munge -- /usr/sbin/munged; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }
as_user() { runuser -u asbbdemo -- env SLURM_CONF="$SLURM_CONF" ASBB_CONFIG="$ASBB_CONFIG" "$@"; }

say "Seeding the ledger"
run "$bin/asbb-admin" account create chem --limit 25 --start 2020-01-01
run "$bin/asbb-admin" account create physics --limit 0.50 --start 2020-01-01
run "$bin/asbb-admin" deposit physics 100 --valid-from "$(date -u -d '+5 days' +%F)" --memo "next quarter"
run "$bin/asbb-admin" account list

say "Starting slurmctld and slurmd (ports $port, $((port + 1)))"
(cd "$demo" && exec slurmctld -D -f "$SLURM_CONF" >/dev/null 2>&1) & ctld_pid=$!
(cd "$demo" && exec slurmd -D -f "$SLURM_CONF" >/dev/null 2>&1) & slurmd_pid=$!
for _ in $(seq 100); do
  [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
  sleep 0.2
done
sinfo

say "What would a 2-hour, 2-CPU job cost chem?"
run "$bin/asbb" quick-check -A chem -p debug --cpus 2 -t 2h

cd "$demo/work"
say "Accepted: funds are held, the token goes into the job's AdminComment"
printf '$ sbatch -A chem -t 2:00:00 -n 2 --wrap "sleep 3"\n'
accepted=$(as_user sbatch --parsable -A chem -t 2:00:00 -n 2 --wrap "sleep 3")
scontrol show job "$accepted" | grep -E "JobState|AdminComment" | sed 's/^ */  /'

say "Held: physics is short now but money arrives in 5 days (low_balance_hold_days)"
printf '$ sbatch -A physics -t 2-00:00:00 --wrap true\n'
held=$(as_user sbatch --parsable -A physics -t 2-00:00:00 --wrap true)
scontrol show job "$held" | grep -E "JobState|Priority|Comment" | sed 's/^ */  /'
printf '$ scontrol release %s   # by its owner: re-checked, refused\n' "$held"
as_user scontrol release "$held" || true

say "Refused: more than chem has"
printf '$ sbatch -A chem -t 30-00:00:00 -n 2 --wrap true\n'
as_user sbatch -A chem -t 30-00:00:00 -n 2 --wrap true || true

say "Waiting for the accepted job to finish"
for _ in $(seq 100); do
  state=$(scontrol show job "$accepted" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  [ "$state" = COMPLETED ] && break
  sleep 0.3
done
sleep 1
scontrol show job "$accepted" | grep -E "JobState|RunTime" | sed 's/^ */  /'
scancel "$held"
sleep 1

say "Balances after the jobs"
run "$bin/asbb-admin" account show chem
say "chem's journal: hold at submit, charge and release at the end"
run "$bin/asbb-admin" transactions chem
say "Every balance re-derived from the journal"
run "$bin/asbb-admin" verify
say "What the plugins logged"
grep -E "job_submit/asbb|jobcomp/asbb" "$demo/log/slurmctld.log" | sed 's/^/  /'
