# Starting, checking and stopping the cluster's daemons. Each runs in its own
# session (setsid) with its log in $STATE_DIR/logs and its pid in $STATE_DIR/pids.
# shellcheck shell=bash

proc_start() { # proc_start NAME CMD...
  local name=$1; shift
  mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids" "$STATE_DIR/cmds"
  # Kept so `restart` can start it again exactly as `up` did.
  printf '%q ' "$@" > "$STATE_DIR/cmds/$name"
  # 9>&-: a component must not hold the cluster lock (see cluster_lock) for its lifetime.
  setsid "$@" >>"$STATE_DIR/logs/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$STATE_DIR/pids/$name.pid"
}

proc_alive() { # proc_alive NAME
  local f=$STATE_DIR/pids/$1.pid
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

proc_stop() { # proc_stop NAME: SIGTERM, then SIGKILL after 10s
  local f=$STATE_DIR/pids/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# wait_for DESCRIPTION SECONDS LOGNAME CMD...: polls CMD until it succeeds; on
# timeout shows the end of the component's log, which is where the reason is.
wait_for() {
  local what=$1 secs=$2 logname=$3; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$logname" ] && ! proc_alive "$logname"; then
      tail -n 30 "$STATE_DIR/logs/$logname.log" >&2 || true
      die "$logname exited while waiting for $what; its log is $STATE_DIR/logs/$logname.log (last lines above)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      [ -n "$logname" ] && tail -n 30 "$STATE_DIR/logs/$logname.log" >&2
      die "timed out after ${secs}s waiting for $what; see $STATE_DIR/logs/${logname:-*}.log"
    fi
    sleep 0.5
  done
}

port_free() { # port_free PORT WHO
  if ss -Hltn "sport = :$1" | grep . >/dev/null; then
    die "port $1 (needed by $2) is already taken by: $(ss -Hltnp "sport = :$1" | sed -n 's/.*users:((\(.*\)))/\1/p' | head -1). Stop that process, or run e2e/cluster/down if it is a stale cluster."
  fi
}
