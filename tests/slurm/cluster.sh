#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests, started as plain processes (no systemd).
#   cluster.sh install     Debian packages: munge, slurmctld, slurmd, slurm-client
#   cluster.sh up [DIR]    write DIR/slurm.conf, start munged (if none answers), slurmctld, slurmd;
#                          wait until the node is idle; print `export SLURM_CONF=...`
#   cluster.sh down [DIR]  cancel the jobs, stop exactly the processes `up` started (by PID),
#                          remove the /etc/slurm/slurm.conf link `up` made
# DIR defaults to $NNSTUDY_SLURM_DIR or /tmp/nnstudy-slurm. Clients need SLURM_CONF=DIR/slurm.conf.
set -euo pipefail

cmd=${1:?usage: cluster.sh install|up|down [DIR]}
dir=${2:-${NNSTUDY_SLURM_DIR:-/tmp/nnstudy-slurm}}
conf=$dir/slurm.conf

stop_pid() {  # TERM, then KILL after 10 s, the process whose PID is in file $1
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

case $cmd in
install)
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null
  fi
  ;;
up)
  mkdir -p "$dir/state" "$dir/spool"
  # munge: reuse one that answers, else start our own (and remember its PID to stop it).
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$dir/munged.pid"
    for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat > "$conf" <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=5
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost CPUs=4 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  # Job steps (srun inside a job) read the default path, not SLURM_CONF: link it there if free.
  if [ ! -e /etc/slurm/slurm.conf ]; then
    mkdir -p /etc/slurm && ln -s "$conf" /etc/slurm/slurm.conf && echo "$conf" > "$dir/linked"
  fi
  export SLURM_CONF=$conf
  slurmctld -f "$conf"
  slurmd -f "$conf" -N localhost
  for _ in $(seq 300); do
    [ "$(sinfo -h -n localhost -o %T 2>/dev/null)" = idle ] && { echo "export SLURM_CONF=$conf"; exit 0; }
    sleep 0.1
  done
  echo "cluster.sh: the node did not become idle; logs in $dir" >&2
  exit 1
  ;;
down)
  if [ -f "$conf" ] && [ -f "$dir/slurmctld.pid" ]; then
    export SLURM_CONF=$conf
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 150); do  # let slurmd end the job steps before it stops
      [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
  if [ -f "$dir/linked" ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$conf" ]; then
    rm -f /etc/slurm/slurm.conf "$dir/linked"
  fi
  ;;
*)
  echo "usage: cluster.sh install|up|down [DIR]" >&2
  exit 2
  ;;
esac
