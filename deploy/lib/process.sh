# Background processes named by pid files, for the scripts that start and stop Tributary's local
# parts: deploy/kafka/kafka.sh and deploy/connect/connect.sh source it (`tributary up` has the
# same pid files in Rust).

# pidfile_alive FILE: the process whose pid FILE holds is running.
pidfile_alive() {
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# stop_pidfile FILE GRACE_SECS LABEL: SIGTERM the process in FILE, SIGKILL it if it still runs
# after GRACE_SECS (saying so on stderr as "LABEL: ..."), wait until it is gone and remove FILE.
# Returns 1 (and removes a stale FILE) when nothing was running.
stop_pidfile() {
  local file="$1" grace="$2" label="$3"
  if ! pidfile_alive "$file"; then rm -f "$file"; return 1; fi
  local pid killed=""
  pid="$(cat "$file")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$killed" ] && [ $SECONDS -ge $deadline ]; then
      printf '%s: still running after %ss; killing\n' "$label" "$grace" >&2
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
    fi
    sleep 0.2
  done
  rm -f "$file"
}
