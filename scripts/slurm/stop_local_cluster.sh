#!/usr/bin/env bash
# Stop the cluster that start_local_cluster.sh started: cancel its jobs, then stop slurmd, slurmctld and
# munged by the pids in their pid files (never by process name). Safe to run when nothing is running.
#
#   scripts/slurm/stop_local_cluster.sh
#
# Environment: ADAMERGEX_SLURM_DIR (state directory, default /tmp/adamergex-slurm), as for the start script.
# The packages and /etc/slurm/slurm.conf stay; the next start rewrites the configuration.
set -euo pipefail

STATE=${ADAMERGEX_SLURM_DIR:-/tmp/adamergex-slurm}
LOCK=/tmp/adamergex-slurm.lock

log() { echo "[stop_local_cluster $(date +%T)] $*"; }
# A pid counts as running unless it is gone or a zombie (this sandbox's PID 1 reaps zombies late).
running() { local s; s=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }

if [ -z "${ADAMERGEX_SLURM_LOCKED:-}" ] && [ -w "$(dirname "$LOCK")" ]; then
  exec 9>"$LOCK"
  flock -w 300 9 || { echo "[stop_local_cluster] ERROR: could not take $LOCK" >&2; exit 1; }
fi

# 1. cancel every job first, so that no slurmstepd outlives slurmd
if [ -s "$STATE/run/slurmctld.pid" ] && running "$(cat "$STATE/run/slurmctld.pid")"; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # one argument per job id
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break; sleep 0.2; done
  fi
fi

# 2. stop each daemon by its pid, after checking that the pid still belongs to that program
stop() {  # program pidfile
  local prog=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if ! running "$pid" || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$prog" ]; then
    log "$prog: pid $pid is not running (stale pid file removed)"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 150); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then
    log "$prog: pid $pid ignored SIGTERM for 15 s, sending SIGKILL"
    kill -KILL "$pid"
  fi
  rm -f "$pidfile"
  log "$prog (pid $pid) stopped"
}
stop slurmd "$STATE/run/slurmd.pid"
stop slurmctld "$STATE/run/slurmctld.pid"
stop munged "$STATE/run/munged.pid"
rm -f "$STATE/munge/munged.pid"

# 3. report (not kill: they are not ours by pid file) job step daemons that are still alive
stepds() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] && running "${p#/proc/}" && echo "${p#/proc/}"
  done
  return 0
}
left=""
for _ in $(seq 50); do left=$(stepds); [ -z "$left" ] && break; sleep 0.1; done
[ -z "$left" ] || log "WARNING: slurmstepd processes still alive: $(echo "$left" | tr '\n' ' ')"
exit 0
