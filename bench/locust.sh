#!/usr/bin/env bash
# The spec's load test (docs/performance.md, "Load tests"): bench/locustfile.py, headless and
# bounded, against bench/platform.sh's platform (used as is when it is up, otherwise started for
# this run and stopped at the end), or against BENCH_LOCUST_HOST when set (a gateway you run; then
# only the gateway's CPU is not measured unless BENCH_LOCUST_GATEWAY_PID names it). `make bench`
# runs it after bench/run.sh.
#
# Locust and websocket-client (pinned in bench/requirements-locust.txt) are installed into
# ~/.cache/tributary/locust-venv on the first run.
#
# Settings (environment):
#   BENCH_LOCUST_USERS           users in all, streams included   (default 50)
#   BENCH_LOCUST_STREAMS         of which live-stream users        (default 5)
#   BENCH_LOCUST_SPAWN_RATE      users started per second          (default 10)
#   BENCH_LOCUST_RUN_TIME        run time, Locust syntax           (default 60s)
#   BENCH_LOCUST_RPS_PER_USER    requests/s of each HTTP user      (default 5)
#   BENCH_LOCUST_BATCH           events per batch request          (default 50)
#   BENCH_LOCUST_STREAM_SECONDS  how long a stream session lasts   (default 20)
#   BENCH_LOCUST_PROCESSES       Locust processes (--processes); 1: a single process (default 1)
#   BENCH_LOCUST_HOST            gateway URL; unset: bench/platform.sh's
#   BENCH_TOPIC                  topic, with BENCH_LOCUST_HOST     (default events.clickstream)
#   BENCH_RESULTS_DIR            where the report goes             (default bench/results)
# and TRIBUTARY_BIN, BENCH_PLATFORM_DIR, BENCH_PORT_BASE, KAFKA_PORT as for bench/platform.sh.
# Exit status 1 when a request failed (see bench/locustfile.py for what fails).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
export TRIBUTARY_BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
VENV="$CACHE/locust-venv"
REQS="$HERE/requirements-locust.txt"
USERS="${BENCH_LOCUST_USERS:-50}"
SPAWN="${BENCH_LOCUST_SPAWN_RATE:-10}"
RUN_TIME="${BENCH_LOCUST_RUN_TIME:-60s}"
PROCESSES="${BENCH_LOCUST_PROCESSES:-1}"
export BENCH_LOCUST_STREAMS="${BENCH_LOCUST_STREAMS:-5}"
export BENCH_LOCUST_RPS_PER_USER="${BENCH_LOCUST_RPS_PER_USER:-5}"
export BENCH_LOCUST_BATCH="${BENCH_LOCUST_BATCH:-50}"
export BENCH_LOCUST_STREAM_SECONDS="${BENCH_LOCUST_STREAM_SECONDS:-20}"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"

log() { printf 'locust: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for v in USERS SPAWN PROCESSES BENCH_LOCUST_STREAMS BENCH_LOCUST_BATCH; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "$v must be a positive whole number, not '${!v}'"
done
[ "$BENCH_LOCUST_STREAMS" -lt "$USERS" ] || die "BENCH_LOCUST_STREAMS must be fewer than BENCH_LOCUST_USERS"
[ -x /usr/bin/time ] || die "/usr/bin/time is required (apt-get install time)"

# ---- the venv -----------------------------------------------------------------------------------

stamp_file="$VENV/.requirements"
if [ ! -x "$VENV/bin/locust" ] || ! cmp -s "$REQS" "$stamp_file"; then
  log "installing $(grep -v '^#' "$REQS" | xargs) into $VENV"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q -r "$REQS" >&2 || die "pip install -r $REQS failed"
  cp "$REQS" "$stamp_file"
fi

# ---- the platform -------------------------------------------------------------------------------

STARTED=0
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tributary-locust.XXXXXX")"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$STARTED" = 1 ] && "$HERE/platform.sh" down || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -A PIDS=()
if [ -n "${BENCH_LOCUST_HOST:-}" ]; then
  HOST="$BENCH_LOCUST_HOST"
  export BENCH_TOPIC="${BENCH_TOPIC:-events.clickstream}"
  [ -n "${BENCH_LOCUST_GATEWAY_PID:-}" ] && PIDS[gateway]="$BENCH_LOCUST_GATEWAY_PID"
  PLATFORM_NOTE="the gateway at $HOST"
else
  if ! ENV="$("$HERE/platform.sh" env 2>/dev/null)"; then
    STARTED=1
    ENV="$("$HERE/platform.sh" up)"
  fi
  eval "$ENV"
  export BENCH_TOPIC
  HOST="$BENCH_GATEWAY"
  PIDS=([registry]="$BENCH_PID_REGISTRY" [gateway]="$BENCH_PID_GATEWAY" [processor]="$BENCH_PID_PROCESSOR" [sink]="$BENCH_PID_SINK")
  PLATFORM_NOTE="bench/platform.sh: registry, gateway, processor and sink with default settings, topic \`$BENCH_TOPIC\` (24 partitions, Avro)"
fi
BROKER_PID="$(pgrep -f "kafka.Kafka .*kafka-${KAFKA_PORT:-9092}/server.properties" | head -n 1 || true)"
[ -n "$BROKER_PID" ] && PIDS[broker]="$BROKER_PID"
curl -fsS -m 5 -o /dev/null "$HOST/api/v1/health" || die "the gateway at $HOST is not healthy"

cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_mib() { awk '$1 == "VmRSS:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo n/a; }

# ---- the run ------------------------------------------------------------------------------------

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
declare -A CPU0=() RSS0=()
for s in "${!PIDS[@]}"; do CPU0[$s]="$(cpu_secs "${PIDS[$s]}")"; RSS0[$s]="$(rss_mib "${PIDS[$s]}")"; done
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
EXTRA=()
[ "$PROCESSES" -gt 1 ] && EXTRA=(--processes "$PROCESSES")
log "$USERS users ($BENCH_LOCUST_STREAMS streams), spawn $SPAWN/s, $RUN_TIME against $HOST, topic $BENCH_TOPIC"
t0=$(date +%s.%N)
rc=0
/usr/bin/time -f '%U %S %e %M' -o "$WORK/time.txt" "$VENV/bin/locust" -f "$HERE/locustfile.py" --headless \
  -u "$USERS" -r "$SPAWN" -t "$RUN_TIME" --host "$HOST" --csv "$WORK/stats" --json-file "$WORK/stats" --only-summary \
  --loglevel WARNING "${EXTRA[@]}" > "$WORK/locust.txt" 2>&1 || rc=$?
t1=$(date +%s.%N)
WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
# the last line: GNU time puts "Command exited with non-zero status N" before it
read -r L_USER L_SYS _ L_MAXRSS < <(tail -n 1 "$WORK/time.txt") || true
LOCUST_CPU="$(awk -v u="$L_USER" -v s="$L_SYS" -v w="$WALL" 'BEGIN { printf "%.1f s (%.0f%% of one core over %.0f s)", u + s, 100 * (u + s) / w, w }')"

# ---- the report ---------------------------------------------------------------------------------

STATS="$WORK/stats.json"
[ -s "$STATS" ] || { cat "$WORK/locust.txt" >&2; die "locust wrote no statistics"; }
# Locust's final statistics (--json-file): one entry per request name, with its response-time
# histogram (milliseconds, rounded as Locust rounds them), content lengths and counts.
TABLE="$("$VENV/bin/python" - "$STATS" "$BENCH_LOCUST_BATCH" "$WALL" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))
batch, wall = int(sys.argv[2]), float(sys.argv[3])

def pct(hist, p):
    items = sorted((float(k), v) for k, v in hist.items())
    n = sum(v for _, v in items)
    if not n:
        return "n/a"
    seen = 0
    for k, v in items:
        seen += v
        if seen >= p / 100 * n:
            return f"{k:,.0f}"
    return f"{items[-1][0]:,.0f}"

print("| request | count | failures | per second | p50 ms | p95 ms | p99 ms | max ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
by = {}
for e in sorted(entries, key=lambda e: e["name"]):
    by[e["name"]] = e
    h = e["response_times"]
    print(f"| {e['name']} | {e['num_requests']:,} | {e['num_failures']:,} | {e['num_requests'] / wall:,.1f} | "
          f"{pct(h, 50)} | {pct(h, 95)} | {pct(h, 99)} | {e['max_response_time']:,.0f} |")
ok = lambda n: by[n]["num_requests"] - by[n]["num_failures"] if n in by else 0
events = ok("POST single") + batch * ok("POST batch")
frames = by["WS session"]["total_content_length"] if "WS session" in by else 0
writes = sum(by[n]["num_requests"] for n in ("POST single", "POST batch") if n in by)
write_fail = sum(by[n]["num_failures"] for n in ("POST single", "POST batch") if n in by)
fails = sum(e["num_failures"] for e in entries)
http = sum(by[n]["num_requests"] for n in ("POST single", "POST batch", "GET latest") if n in by)
print()
print(f"CHECK http={http} writes={writes} write_failures={write_fail} failures={fails} events_acknowledged={events} frames={frames}")
EOF
)"
CHECK="$(grep '^CHECK ' <<<"$TABLE")"
TABLE="$(grep -v '^CHECK ' <<<"$TABLE")"
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$CHECK"; }
RUN_SECS="$(awk -v w="$WALL" 'BEGIN { printf "%.0f", w }')"

SERVICES=""
for s in registry gateway processor sink broker; do
  [ -n "${PIDS[$s]:-}" ] || continue
  c1="$(cpu_secs "${PIDS[$s]}")"
  SERVICES+="| $s | $(awk -v a="${CPU0[$s]}" -v b="$c1" -v w="$WALL" 'BEGIN { printf "%.1f s (%.0f%%)", b - a, 100 * (b - a) / w }') | ${RSS0[$s]} | $(rss_mib "${PIDS[$s]}") |"$'\n'
done
SERVICES+="| Locust ($PROCESSES process(es)) | $LOCUST_CPU | | ${L_MAXRSS:+$((L_MAXRSS / 1024)) (peak)} |"$'\n'

if [ "$rc" = 0 ] && [ "$(field failures)" = 0 ]; then
  VERDICT="valid: every write answered 2xx (201, or 200 with every event accepted), no request failed"
else
  VERDICT="NOT VALID: locust exited $rc; $(field failures) requests failed, $(field write_failures) of them among the $(field writes) writes (see the failures below)"
  rc=1
fi

OUT="$RESULTS_DIR/locust-$STAMP.md"
mkdir -p "$RESULTS_DIR"
{
  echo "# Locust load test, $STAMP"
  echo
  case "$RUN_TIME" in 60s|[6-9][0-9]s|[1-9][0-9][0-9]*s|*m|*h) ;; *) echo "> **Short run** (BENCH_LOCUST_RUN_TIME=$RUN_TIME): a check of the method." && echo ;; esac
  echo "| | |"
  echo "|---|---|"
  echo "| machine | $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
  echo "| load average (1/5/15 min) | $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end |"
  echo "| tributary | $("$TRIBUTARY_BIN" --version 2>/dev/null || echo unknown), binary built $(date -u -r "$TRIBUTARY_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown) |"
  echo "| git commit | $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown) |"
  echo "| target | $PLATFORM_NOTE |"
  echo "| load tool | $("$VENV/bin/locust" --version 2>/dev/null | cut -d' ' -f1-2), websocket-client $("$VENV/bin/python" -c 'import websocket; print(websocket.__version__)'), $PROCESSES process(es) |"
  echo "| load | $USERS users: $((USERS - BENCH_LOCUST_STREAMS)) HTTP users at $BENCH_LOCUST_RPS_PER_USER requests/s each (6 single writes : 1 batch of $BENCH_LOCUST_BATCH : 3 latest reads), $BENCH_LOCUST_STREAMS live streams of ${BENCH_LOCUST_STREAM_SECONDS} s each; spawn $SPAWN/s; $RUN_TIME |"
  echo
  echo "$TABLE"
  echo
  echo "- HTTP requests: $(field http) answered, $(awk -v n="$(field http)" -v w="$WALL" 'BEGIN { printf "%.0f", n / w }')/s over the run, of $(awk -v u=$((USERS - BENCH_LOCUST_STREAMS)) -v r="$BENCH_LOCUST_RPS_PER_USER" 'BEGIN { printf "%.0f", u * r }')/s offered once all users run (a Locust user is a closed loop: when an answer takes longer than its pace, it falls behind)"
  echo "- writes: $(field writes) requests, $(field write_failures) failed; $(field events_acknowledged) events acknowledged ($(awk -v e="$(field events_acknowledged)" -v w="$RUN_SECS" 'BEGIN { printf "%.0f", e / w }')/s over the run)"
  echo "- stream frames read: $(field frames) (\"WS session\": one row per session, ended or cut by the end of the run)"
  echo "- $VERDICT"
  echo
  echo "CPU (user + system over the run, of one core) and resident memory:"
  echo
  echo "| process | CPU | RSS before MiB | RSS after MiB |"
  echo "|---|---:|---:|---:|"
  printf '%s' "$SERVICES"
  echo
  if [ "$(wc -l < "$WORK/stats_failures.csv" 2>/dev/null || echo 0)" -gt 1 ]; then
    echo "Failures by request and error (Locust's --csv failures file, written every few seconds):"
    echo
    echo '```'
    cat "$WORK/stats_failures.csv"
    echo '```'
    echo
  fi
  echo "<details><summary>Locust's output</summary>"
  echo
  echo '```'
  cat "$WORK/locust.txt"
  echo '```'
  echo "</details>"
} > "$OUT"
cat "$OUT"
log "report: $OUT"
exit "$rc"
