# shellcheck shell=bash
# Helpers shared by the e2e scenarios (e2e/e2e.sh, e2e/e2e-node.sh); sourced, not run.
#
# The caller defines die() and `declare -A PIDS=()`. Processes started with spawn are recorded
# by name -> pid and stopped by pid only; wait_until polls a condition (no fixed sleeps) and
# fails at once, naming the process, when one of them exits meanwhile.

# spawn NAME LOGFILE CMD...: start CMD in its own session, output to LOGFILE.
spawn() {
  local name="$1" logf="$2"
  shift 2
  setsid "$@" >"$logf" 2>&1 &
  # shellcheck disable=SC2004 # PIDS is an associative array (declared by the caller)
  PIDS[$name]=$!
}

# stop NAME [SIGNAL]: send SIGNAL (default TERM), wait up to 10 s, then KILL.
stop() {
  local pid="${PIDS[$1]:-}" _
  [[ -n "$pid" ]] || return 0
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]"
}

# wait_until TIMEOUT_SECONDS DESCRIPTION CMD...: poll CMD (output discarded) until it succeeds.
wait_until() {
  local timeout="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout)) n
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for: $what"
    for n in "${!PIDS[@]}"; do # a dead helper process explains the wait: say so at once
      kill -0 "${PIDS[$n]}" 2>/dev/null || die "$n (pid ${PIDS[$n]}) exited while waiting for: $what"
    done
    sleep 0.5 # poll interval
  done
}
