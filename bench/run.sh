#!/usr/bin/env bash
# The benchmarks behind docs/performance.md (`make bench`).
#
# Measures, in one run against one local broker, side by side:
#   1. single-event POST /api/v1/events/{topic}: requests/s and latency (wrk, bench/post_event.lua)
#   2. batch POST /api/v1/events/{topic}/batch: events/s per batch size (wrk, bench/post_batch.lua)
#   3. the reference: Kafka's own kafka-producer-perf-test with the gateway's producer settings,
#      on a throwaway 24-partition topic, with 300-byte random records and with ~300-byte JSON
#      clickstream records
#   4. the gateway's memory (VmRSS / VmHWM) before and after the load, and its CPU per run
#   5. the spec's own design (bench/reference: FastAPI + confluent-kafka, 2 uvicorn workers) with
#      the same wrk load as 1: requests/s, latency and CPU per request, beside the gateway's
#
# It starts what it needs: the broker (deploy/kafka/kafka.sh start; a broker already answering is
# used as is, and one this script started is stopped at the end), the catalog topics (tributary
# topics apply) and its own gateway on BENCH_LISTEN, stopped at the end. Everything is on loopback.
# The results go to stdout as Markdown and to bench/results/<UTC timestamp>.md; progress goes to
# stderr. Exit status 1 when a run was not valid (a non-2xx answer, a socket error, an event not
# accepted, a failed reference run); the results are written anyway.
#
# Settings (environment):
#   TRIBUTARY_BIN            the tributary binary          (default $CARGO_TARGET_DIR/release/tributary)
#   BENCH_DURATION           seconds per wrk run           (default 20)
#   BENCH_WARMUP             seconds of unreported warm-up (default 5; 0 skips it)
#   BENCH_THREADS            wrk threads                   (default 2)
#   BENCH_CONNECTIONS        connection counts, single     (default "16 64 256 1024")
#   BENCH_BATCH_SIZES        events per batch              (default "100 1000")
#   BENCH_BATCH_CONNECTIONS  connection counts, batch      (default "8")
#   BENCH_KEYS               distinct user_id values       (default 5000)
#   BENCH_TOPIC              catalog topic to write        (default events.clickstream)
#   BENCH_LISTEN             address of the bench gateway  (default 127.0.0.1:18080)
#   BENCH_WRK_TIMEOUT        wrk's per-request timeout     (default 10s)
#   BENCH_PERF_RECORDS       records per perf-test run     (default 1000000)
#   BENCH_PERF_TIMEOUT       seconds before a perf-test run is killed (default 600)
#   BENCH_RESULTS_DIR        where the .md file goes       (default bench/results)
#   BENCH_KEEP_KAFKA         1: leave a broker this script started running
#   BENCH_REFERENCE          0: skip the FastAPI reference (5)          (default 1)
#   BENCH_REFERENCE_LISTEN   address of the reference service (default 127.0.0.1:18090)
#   KAFKA_PORT               broker port, as for deploy/kafka/kafka.sh (default 9092)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
KAFKA="$ROOT/deploy/kafka/kafka.sh"
BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-9092}"

DURATION="${BENCH_DURATION:-20}"
WARMUP="${BENCH_WARMUP:-5}"
THREADS="${BENCH_THREADS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-16 64 256 1024}"
BATCH_SIZES="${BENCH_BATCH_SIZES:-100 1000}"
BATCH_CONNECTIONS="${BENCH_BATCH_CONNECTIONS:-8}"
KEYS="${BENCH_KEYS:-5000}"
TOPIC="${BENCH_TOPIC:-events.clickstream}"
LISTEN="${BENCH_LISTEN:-127.0.0.1:18080}"
WRK_TIMEOUT="${BENCH_WRK_TIMEOUT:-10s}"
PERF_RECORDS="${BENCH_PERF_RECORDS:-1000000}"
PERF_TIMEOUT="${BENCH_PERF_TIMEOUT:-600}"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"
REFERENCE="${BENCH_REFERENCE:-1}"
REFERENCE_LISTEN="${BENCH_REFERENCE_LISTEN:-127.0.0.1:18090}"
PERF_PARTITIONS=24
# The gateway's producer settings (crates/kafka/src/config.rs), given to the Java producer.
PERF_PROPS="acks=all enable.idempotence=true compression.type=snappy linger.ms=10 max.in.flight.requests.per.connection=5"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NONCE="$(printf '%x%04x' "$(date +%s)" "$RANDOM")"
PERF_TOPIC="bench.perf-test.$NONCE"
GATEWAY_URL="http://$LISTEN"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- preconditions ----------------------------------------------------------------------------

for v in DURATION WARMUP THREADS KEYS PERF_RECORDS PERF_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a whole number, not '${!v}'"
done
[ "$DURATION" -ge 1 ] || die "BENCH_DURATION must be at least 1"
for c in $CONNECTIONS $BATCH_CONNECTIONS $BATCH_SIZES; do
  [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] || die "connection counts and batch sizes must be positive numbers, not '$c'"
done
for c in $CONNECTIONS $BATCH_CONNECTIONS; do
  [ "$c" -ge "$THREADS" ] || die "every connection count must be at least BENCH_THREADS ($THREADS), not $c"
done
[ -x "$BIN" ] || die "$BIN is missing; build it with 'make build' (or set TRIBUTARY_BIN)"
command -v curl >/dev/null || die "curl is required (apt-get install curl)"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "wrk is missing; installing the Debian package"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >&2 \
      || die "could not install wrk with apt-get"
  else
    die "wrk is required; install it (sudo apt-get install wrk) and run again"
  fi
fi

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
port_open "$LISTEN" && die "$LISTEN is already in use; stop what listens there or set BENCH_LISTEN"

# ---- cleanup ------------------------------------------------------------------------------------

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tributary-bench.XXXXXX")"
GATEWAY_PID=""
CHILD=""  # the wrk or perf-test run under way, stopped by cleanup
STARTED_KAFKA=0
PERF_TOPIC_CREATED=0

stop_gateway() {
  [ -n "$GATEWAY_PID" ] || return 0
  if kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 40))
    while kill -0 "$GATEWAY_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -0 "$GATEWAY_PID" 2>/dev/null && { log "gateway still running after 40 s; killing it"; kill -KILL "$GATEWAY_PID" 2>/dev/null || true; }
    wait "$GATEWAY_PID" 2>/dev/null || true
    log "gateway on $LISTEN stopped"
  fi
  GATEWAY_PID=""
}

REFERENCE_PID=""
stop_reference() {
  [ -n "$REFERENCE_PID" ] || return 0
  kill -TERM "$REFERENCE_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$REFERENCE_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -KILL "$REFERENCE_PID" 2>/dev/null || true
  wait "$REFERENCE_PID" 2>/dev/null || true
  REFERENCE_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  stop_gateway
  stop_reference
  if [ "$PERF_TOPIC_CREATED" = 1 ]; then
    timeout 120 "$KAFKA" tool kafka-topics --bootstrap-server "$BOOTSTRAP" --delete --topic "$PERF_TOPIC" >/dev/null 2>&1 \
      && log "deleted topic $PERF_TOPIC" || log "warning: could not delete topic $PERF_TOPIC"
  fi
  if [ "$STARTED_KAFKA" = 1 ] && [ "${BENCH_KEEP_KAFKA:-0}" != 1 ]; then
    "$KAFKA" stop >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers ------------------------------------------------------------------------------------

# run_child OUTPUT COMMAND...: run COMMAND in the background with its output in the file OUTPUT
# and wait for it, so that INT/TERM reach the traps at once (bash runs traps only after a
# foreground command ends) and cleanup can stop it.
run_child() {
  local out="$1"; shift
  "$@" > "$out" 2>&1 < /dev/null &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

# value of key=value in a BENCH_RESULT line
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
num() { awk -v n="$1" 'BEGIN { printf "%.0f", n }'; }
# kB figure of a /proc/<pid>/status line, in MiB
mem_mib() { awk -v k="$1" '$1 == k":" { printf "%.1f", $2 / 1024 }' "/proc/$GATEWAY_PID/status"; }
# user + system CPU seconds the gateway used so far
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$GATEWAY_PID/stat"; }
# sum of the end offsets of a topic's partitions (--topic is a regular expression: escape the dots)
end_offsets() {
  timeout 120 "$KAFKA" tool kafka-get-offsets --bootstrap-server "$BOOTSTRAP" --topic "${1//./\\.}" --time -1 2>/dev/null \
    | awk -F: 'NF >= 3 { s += $NF; n++ } END { if (n) printf "%d", s; else print "n/a" }'
}
gateway_alive() {
  kill -0 "$GATEWAY_PID" 2>/dev/null || { log "the gateway exited; last lines of $GATEWAY_LOG:"; tail -n 20 "$GATEWAY_LOG" >&2; exit 1; }
}

INVALID=()
invalid() { INVALID+=("$*"); log "INVALID: $*"; }

# run_wrk NAME SCRIPT PATH CONNECTIONS SECONDS ARGS...: raw output in $WORK/NAME.txt, the
# BENCH_RESULT line in $RESULT, wrk's own Requests/sec in $WRK_RPS, the gateway CPU seconds the
# run used in $RUN_CPU
run_wrk() {
  local name="$1" script="$2" path="$3" conns="$4" secs="$5"; shift 5
  gateway_alive
  local cpu0; cpu0="$(cpu_secs)"
  run_child "$WORK/$name.txt" timeout --kill-after=10 $((secs + 60)) wrk -t"$THREADS" -c"$conns" -d"${secs}s" \
    --timeout "$WRK_TIMEOUT" --latency -s "$script" "$GATEWAY_URL$path" -- "$@" || true
  gateway_alive
  RUN_CPU="$(awk -v a="$cpu0" -v b="$(cpu_secs)" 'BEGIN { printf "%.2f", b - a }')"
  RESULT="$(grep '^BENCH_RESULT ' "$WORK/$name.txt" | tail -n 1 || true)"
  WRK_RPS="$(sed -n 's/^Requests\/sec:[[:space:]]*//p' "$WORK/$name.txt" | tail -n 1)"
  if [ -z "$RESULT" ]; then
    log "wrk printed no result for $name:"; cat "$WORK/$name.txt" >&2
    invalid "$name: wrk printed no result"
    RESULT="BENCH_RESULT requests=0 duration_us=1 rps=0 p50_us=0 p90_us=0 p99_us=0 p999_us=0 max_us=0 mean_us=0 ok=0 duplicates=0 non2xx=0 statuses=none batch_size=0 accepted=0 rejected=0 failed=0 unparsed=0 err_connect=0 err_read=0 err_write=0 err_timeout=0"
  fi
  [ -n "$WRK_RPS" ] || WRK_RPS="$(field rps "$RESULT")"
}

# CPU microseconds per acknowledged request: per_request CPU_SECONDS OK_COUNT
per_request() { awk -v s="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", s * 1e6 / n; else print "n/a" }'; }

socket_errors() { # of a BENCH_RESULT line
  echo $(( $(field err_connect "$1") + $(field err_read "$1") + $(field err_write "$1") + $(field err_timeout "$1") ))
}

# ---- setup --------------------------------------------------------------------------------------

TOTAL_WRK=$(( WARMUP + DURATION * ($(wc -w <<<"$CONNECTIONS") + $(wc -w <<<"$BATCH_SIZES") * $(wc -w <<<"$BATCH_CONNECTIONS")) ))
[ "$REFERENCE" != 1 ] || TOTAL_WRK=$(( TOTAL_WRK + WARMUP + DURATION * $(wc -w <<<"$CONNECTIONS") ))
log "about ${TOTAL_WRK} s of HTTP load, then 2 x $PERF_RECORDS records with kafka-producer-perf-test (at most ${PERF_TIMEOUT} s each)"

if port_open "$BOOTSTRAP"; then
  BROKER_NOTE="already running on $BOOTSTRAP; used as is"
  "$KAFKA" status >/dev/null 2>&1 && BROKER_NOTE="$BROKER_NOTE (started by deploy/kafka/kafka.sh)" \
    || BROKER_NOTE="$BROKER_NOTE (not started by deploy/kafka/kafka.sh)"
  log "broker $BROKER_NOTE"
  "$KAFKA" install >&2
else
  STARTED_KAFKA=1
  "$KAFKA" start >&2
  BROKER_NOTE="started by this run on $BOOTSTRAP (deploy/kafka/kafka.sh)"
fi

# The gateway and the CLI run from an empty directory so that a ./tributary.toml in the clone does
# not change what is measured: the settings are the defaults, plus TRIBUTARY_* variables if set.
(cd "$WORK" && "$BIN" topics apply --bootstrap-servers "$BOOTSTRAP") >&2 || die "tributary topics apply failed"
(cd "$WORK" && TRIBUTARY_GATEWAY__LISTEN="$LISTEN" "$BIN" config show --bootstrap-servers "$BOOTSTRAP") 2>/dev/null | grep -v '"sasl_password"' > "$WORK/config.json" || true

GATEWAY_LOG="$CACHE/state/logs/bench-gateway.log"
mkdir -p "$(dirname "$GATEWAY_LOG")"
(cd "$WORK" && exec "$BIN" gateway --bootstrap-servers "$BOOTSTRAP" --listen "$LISTEN") > "$GATEWAY_LOG" 2>&1 < /dev/null &
GATEWAY_PID=$!
deadline=$((SECONDS + 60))
until curl -fsS -m 2 -o /dev/null "$GATEWAY_URL/api/v1/health" 2>/dev/null; do
  gateway_alive
  [ $SECONDS -lt $deadline ] || die "the gateway is not healthy after 60 s; see $GATEWAY_LOG"
  sleep 0.2
done
log "gateway pid $GATEWAY_PID healthy on $GATEWAY_URL (log: $GATEWAY_LOG)"

# ---- machine facts ------------------------------------------------------------------------------

CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1 || true)"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1 || true)"
MEM_TOTAL="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
OS_NAME="$( (. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}") || echo unknown)"
RUSTC="$(rustc --version 2>/dev/null || echo 'rustc not found')"
JAVA="$( (java -version 2>&1 || true) | head -n 1)"
KAFKA_VERSION_USED="$("$KAFKA" env | sed -n 's/^KAFKA_VERSION=//p')"
WRK_VERSION="$( (wrk -v 2>&1 || true) | head -n 1 | sed 's/ Copyright.*//')"  # wrk -v exits 1
GIT_COMMIT="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || GIT_COMMIT="$GIT_COMMIT (with uncommitted changes in the working tree)"
BIN_VERSION="$("$BIN" --version 2>/dev/null || echo unknown)"
BIN_BUILT="$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- 1. single events ---------------------------------------------------------------------------

EXPECTED_EVENTS=0  # events the clients saw acknowledged (201 or accepted batch items)
# When wrk stops it drops the requests still in flight: the gateway writes them, nobody counts
# them. At most one request per connection per run, so the gateway may have written up to this
# many more events than the clients saw acknowledged.
IN_FLIGHT_BOUND=0
OFFSETS_BEFORE="$(end_offsets "$TOPIC")"
RSS_IDLE="$(mem_mib VmRSS)"; HWM_IDLE="$(mem_mib VmHWM)"

if [ "$WARMUP" -gt 0 ]; then
  log "warm-up: ${WARMUP} s single events, $(echo "$CONNECTIONS" | awk '{print $1}') connections (not reported)"
  run_wrk warmup "$HERE/post_event.lua" "/api/v1/events/$TOPIC" "$(awk '{print $1}' <<<"$CONNECTIONS")" "$WARMUP" "${NONCE}w" "$KEYS"
  IN_FLIGHT_BOUND=$((IN_FLIGHT_BOUND + $(awk '{print $1}' <<<"$CONNECTIONS")))
  EXPECTED_EVENTS=$((EXPECTED_EVENTS + $(field ok "$RESULT")))
  [ "$(field non2xx "$RESULT")" = 0 ] && [ "$(socket_errors "$RESULT")" = 0 ] || invalid "warm-up: $(field statuses "$RESULT"), $(socket_errors "$RESULT") socket errors"
fi

SINGLE_ROWS=""
i=0
for c in $CONNECTIONS; do
  i=$((i + 1))
  log "single events: $c connections, ${DURATION} s"
  run_wrk "single-c$c" "$HERE/post_event.lua" "/api/v1/events/$TOPIC" "$c" "$DURATION" "${NONCE}s$i" "$KEYS"
  IN_FLIGHT_BOUND=$((IN_FLIGHT_BOUND + c))
  r="$RESULT"
  errs="$(socket_errors "$r")"
  EXPECTED_EVENTS=$((EXPECTED_EVENTS + $(field ok "$r")))
  [ "$(field non2xx "$r")" = 0 ] || invalid "single, $c connections: $(field non2xx "$r") non-2xx answers ($(field statuses "$r"))"
  [ "$(field duplicates "$r")" = 0 ] || invalid "single, $c connections: $(field duplicates "$r") duplicate (200) answers"
  [ "$errs" = 0 ] || invalid "single, $c connections: $errs socket errors"
  [ "$(field ok "$r")" = "$(field requests "$r")" ] || invalid "single, $c connections: $(field ok "$r") of $(field requests "$r") answers were 201"
  SINGLE_ROWS+="| $c | $(num "$WRK_RPS") | $(ms "$(field p50_us "$r")") | $(ms "$(field p90_us "$r")") | $(ms "$(field p99_us "$r")") | $(ms "$(field max_us "$r")") | $(field requests "$r") | $(field statuses "$r") | $(field non2xx "$r") | $errs | $(awk -v s="$RUN_CPU" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * s / d }')% | $(per_request "$RUN_CPU" "$(field ok "$r")") |"$'\n'
done
RSS_SINGLE="$(mem_mib VmRSS)"; HWM_SINGLE="$(mem_mib VmHWM)"

# ---- 2. batches ---------------------------------------------------------------------------------

BATCH_ROWS=""
i=0
for b in $BATCH_SIZES; do
  for c in $BATCH_CONNECTIONS; do
    i=$((i + 1))
    log "batches of $b: $c connections, ${DURATION} s"
    run_wrk "batch-$b-c$c" "$HERE/post_batch.lua" "/api/v1/events/$TOPIC/batch" "$c" "$DURATION" "${NONCE}b$i" "$KEYS" "$b"
    IN_FLIGHT_BOUND=$((IN_FLIGHT_BOUND + c * b))
    r="$RESULT"
    errs="$(socket_errors "$r")"
    accepted="$(field accepted "$r")"
    sent=$(( $(field requests "$r") * b ))
    EXPECTED_EVENTS=$((EXPECTED_EVENTS + accepted))
    [ "$(field non2xx "$r")" = 0 ] || invalid "batch $b, $c connections: $(field non2xx "$r") non-2xx answers ($(field statuses "$r"))"
    [ "$errs" = 0 ] || invalid "batch $b, $c connections: $errs socket errors"
    [ "$accepted" = "$sent" ] || invalid "batch $b, $c connections: $accepted of $sent events accepted (duplicates $(field duplicates "$r"), rejected $(field rejected "$r"), failed $(field failed "$r"), unparsed bodies $(field unparsed "$r"))"
    BATCH_ROWS+="| $b | $c | $(awk -v r="$WRK_RPS" 'BEGIN { printf "%.1f", r }') | $(awk -v r="$WRK_RPS" -v b="$b" 'BEGIN { printf "%.0f", r * b }') | $(ms "$(field p50_us "$r")") | $(ms "$(field p90_us "$r")") | $(ms "$(field p99_us "$r")") | $(ms "$(field max_us "$r")") | $(field requests "$r") | $accepted / $sent | $(field statuses "$r") | $(field non2xx "$r") | $errs | $(awk -v s="$RUN_CPU" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * s / d }')% |"$'\n'
  done
done
RSS_BATCH="$(mem_mib VmRSS)"; HWM_BATCH="$(mem_mib VmHWM)"
METRICS_JSON="$(curl -fsS -m 5 "$GATEWAY_URL/api/v1/metrics" 2>/dev/null || echo '{}')"
GATEWAY_PRODUCED="n/a"; GATEWAY_PRODUCE_ERRORS="n/a"; DEDUPE_ENTRIES="n/a"
if command -v jq >/dev/null; then
  GATEWAY_PRODUCED="$(jq -r --arg t "$TOPIC" '.topics[$t].produced // "n/a"' <<<"$METRICS_JSON" 2>/dev/null || echo n/a)"
  GATEWAY_PRODUCE_ERRORS="$(jq -r --arg t "$TOPIC" '.topics[$t].produce_errors // "n/a"' <<<"$METRICS_JSON" 2>/dev/null || echo n/a)"
  DEDUPE_ENTRIES="$(jq -r '.dedupe_entries // "n/a"' <<<"$METRICS_JSON" 2>/dev/null || echo n/a)"
fi
stop_gateway
OFFSETS_AFTER="$(end_offsets "$TOPIC")"
if [[ "$OFFSETS_BEFORE" =~ ^[0-9]+$ && "$OFFSETS_AFTER" =~ ^[0-9]+$ ]]; then
  OFFSETS_GROWTH=$((OFFSETS_AFTER - OFFSETS_BEFORE))
  [ "$OFFSETS_GROWTH" -ge "$EXPECTED_EVENTS" ] \
    || invalid "$TOPIC grew by $OFFSETS_GROWTH records but the clients saw $EXPECTED_EVENTS events acknowledged"
else
  OFFSETS_GROWTH="n/a"
fi
if [[ "$GATEWAY_PRODUCED" =~ ^[0-9]+$ ]]; then
  [ "$GATEWAY_PRODUCED" -ge "$EXPECTED_EVENTS" ] && [ "$GATEWAY_PRODUCED" -le $((EXPECTED_EVENTS + IN_FLIGHT_BOUND)) ] \
    || invalid "the gateway's metrics count $GATEWAY_PRODUCED produced events; the clients saw $EXPECTED_EVENTS acknowledged, plus at most $IN_FLIGHT_BOUND in flight when wrk stopped"
fi

# the text log has ANSI colours even in a file: strip them before looking for levels
log_problems() { sed 's/\x1b\[[0-9;]*m//g' "$GATEWAY_LOG" | grep -E '^[^ ]+[[:space:]]+(WARN|ERROR)[[:space:]]' || true; }
WARNINGS="$(log_problems | wc -l)"

# ---- 5. the spec's own design: FastAPI + confluent-kafka (bench/reference) ----------------------

# user + system CPU seconds of a process and its children still running (uvicorn's workers)
tree_cpu_secs() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/stat" ] || continue
    total="$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", t + ($12 + $13) / hz }' "/proc/$p/stat")"
  done
  echo "$total"
}
tree_rss_mib() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/status" ] || continue
    total="$(awk -v t="$total" '$1 == "VmRSS:" { printf "%.1f", t + $2 / 1024 }' "/proc/$p/status")"
  done
  echo "$total"
}

REFERENCE_ROWS=""
REFERENCE_NOTE="not run (BENCH_REFERENCE=0)"
if [ "$REFERENCE" = 1 ]; then
  port_open "$REFERENCE_LISTEN" && die "$REFERENCE_LISTEN is already in use; stop what listens there or set BENCH_REFERENCE_LISTEN"
  VENV="$("$HERE/reference/setup.sh")" || die "could not set up the reference's venv (bench/reference/setup.sh)"
  REFERENCE_LOG="$CACHE/state/logs/bench-reference.log"
  (cd "$HERE/reference" && KAFKA_BOOTSTRAP="$BOOTSTRAP" exec "$VENV/bin/uvicorn" app:app \
    --host "${REFERENCE_LISTEN%:*}" --port "${REFERENCE_LISTEN##*:}" --workers 2 --log-level warning) \
    > "$REFERENCE_LOG" 2>&1 < /dev/null &
  REFERENCE_PID=$!
  deadline=$((SECONDS + 60))
  until port_open "$REFERENCE_LISTEN"; do
    kill -0 "$REFERENCE_PID" 2>/dev/null || die "the reference service exited; see $REFERENCE_LOG"
    [ $SECONDS -lt $deadline ] || die "the reference service is not listening after 60 s; see $REFERENCE_LOG"
    sleep 0.2
  done
  sleep 2  # both workers up
  REFERENCE_URL="http://$REFERENCE_LISTEN/api/v1/events/$TOPIC"
  REFERENCE_NOTE="uvicorn $("$VENV/bin/python" -c 'import uvicorn; print(uvicorn.__version__)'), FastAPI $("$VENV/bin/python" -c 'import fastapi; print(fastapi.__version__)'), confluent-kafka $("$VENV/bin/python" -c 'import confluent_kafka as k; print(k.__version__ + " (librdkafka " + k.libversion()[0] + ")")'), $("$VENV/bin/python" --version)"
  if [ "$WARMUP" -gt 0 ]; then
    log "reference warm-up: ${WARMUP} s"
    run_child "$WORK/reference-warmup.txt" timeout --kill-after=10 $((WARMUP + 60)) wrk -t"$THREADS" -c"$(awk '{print $1}' <<<"$CONNECTIONS")" \
      -d"${WARMUP}s" --timeout "$WRK_TIMEOUT" -s "$HERE/post_event.lua" "$REFERENCE_URL" -- "${NONCE}rw" "$KEYS" || true
  fi
  i=0
  for c in $CONNECTIONS; do
    i=$((i + 1))
    log "reference (FastAPI + confluent-kafka): $c connections, ${DURATION} s"
    cpu0="$(tree_cpu_secs "$REFERENCE_PID")"
    run_child "$WORK/reference-c$c.txt" timeout --kill-after=10 $((DURATION + 60)) wrk -t"$THREADS" -c"$c" -d"${DURATION}s" \
      --timeout "$WRK_TIMEOUT" --latency -s "$HERE/post_event.lua" "$REFERENCE_URL" -- "${NONCE}r$i" "$KEYS" || true
    ref_cpu="$(awk -v a="$cpu0" -v b="$(tree_cpu_secs "$REFERENCE_PID")" 'BEGIN { printf "%.2f", b - a }')"
    r="$(grep '^BENCH_RESULT ' "$WORK/reference-c$c.txt" | tail -n 1 || true)"
    if [ -z "$r" ]; then
      invalid "reference, $c connections: wrk printed no result"
      REFERENCE_ROWS+="| $c | failed | | | | | | | | | |"$'\n'
      continue
    fi
    errs="$(socket_errors "$r")"
    [ "$(field non2xx "$r")" = 0 ] || invalid "reference, $c connections: $(field non2xx "$r") non-2xx answers ($(field statuses "$r"))"
    [ "$errs" = 0 ] || invalid "reference, $c connections: $errs socket errors"
    REFERENCE_ROWS+="| $c | $(num "$(field rps "$r")") | $(ms "$(field p50_us "$r")") | $(ms "$(field p90_us "$r")") | $(ms "$(field p99_us "$r")") | $(ms "$(field max_us "$r")") | $(field requests "$r") | $(field statuses "$r") | $errs | $(awk -v s="$ref_cpu" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * s / d }')% | $(per_request "$ref_cpu" "$(field ok "$r")") |"$'\n'
  done
  REFERENCE_RSS="$(tree_rss_mib "$REFERENCE_PID")"
  REFERENCE_NOTE="$REFERENCE_NOTE; resident after the runs: $REFERENCE_RSS MiB (uvicorn and its 2 workers)"
  stop_reference
fi

# ---- 3. the reference: kafka-producer-perf-test -------------------------------------------------

log "creating topic $PERF_TOPIC ($PERF_PARTITIONS partitions)"
timeout 120 "$KAFKA" tool kafka-topics --bootstrap-server "$BOOTSTRAP" --create --topic "$PERF_TOPIC" \
  --partitions "$PERF_PARTITIONS" --replication-factor 1 >&2 || die "could not create topic $PERF_TOPIC"
PERF_TOPIC_CREATED=1

# ~300-byte clickstream events as the gateway writes them (canonical JSON: fields in order,
# payload keys sorted, millisecond UTC timestamps), one per line, for --payload-file
awk -v n=10000 -v keys="$KEYS" -v nonce="$NONCE" 'BEGIN {
  srand(42)
  split("page_view page_view page_view click click add_to_cart search scroll", types, " ")
  split("/ /products/shoes /products/jackets /products/bags /cart /checkout /search /account", pages, " ")
  split("https://www.google.com/ https://www.bing.com/ https://news.example.org/ direct https://mail.example.com/", refs, " ")
  agents[1] = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
  agents[2] = "Mozilla/5.0 (Macintosh) Safari/605.1.15"
  agents[3] = "Mozilla/5.0 (iPhone; iOS 17_5) Mobile/15E148"
  for (i = 1; i <= n; i++) {
    u = int(rand() * keys) + 1
    printf "{\"event_id\":\"b-%s-p-%d\",\"timestamp\":\"2026-11-30T12:%02d:%02d.%03dZ\",\"event_type\":\"%s\",\"user_id\":\"user-%06d\",", nonce, i, int(i / 60) % 60, i % 60, i % 1000, types[int(rand() * 8) + 1], u
    printf "\"payload\":{\"duration_ms\":%d,\"referrer\":\"%s\",\"session_id\":\"s-%06d-%04x\",\"url\":\"%s/item-%d\",\"user_agent\":\"%s\"}}\n", int(rand() * 29980) + 20, refs[int(rand() * 5) + 1], u, int(rand() * 65536), pages[int(rand() * 8) + 1], int(rand() * 99999) + 1, agents[int(rand() * 3) + 1]
  }
}' > "$WORK/payloads.jsonl"
PAYLOAD_BYTES="$(awk '{ s += length($0) } END { printf "%.0f", s / NR }' "$WORK/payloads.jsonl")"

PERF_ROWS=""
PERF_RAW=""
run_perf() { # NAME, then the payload arguments
  local name="$1"; shift
  log "kafka-producer-perf-test ($name): $PERF_RECORDS records"
  local rc=0
  # shellcheck disable=SC2086 # PERF_PROPS is a list of key=value words
  run_child "$WORK/perf-$name.txt" timeout --kill-after=10 "$PERF_TIMEOUT" "$KAFKA" tool kafka-producer-perf-test \
    --topic "$PERF_TOPIC" --num-records "$PERF_RECORDS" --throughput -1 "$@" \
    --bootstrap-server "$BOOTSTRAP" --command-property $PERF_PROPS || rc=$?
  local line
  line="$(grep -E 'records sent, .* 50th' "$WORK/perf-$name.txt" | tail -n 1 || true)"
  if [ "$rc" != 0 ] || [ -z "$line" ]; then
    log "kafka-producer-perf-test ($name) failed (exit $rc):"; tail -n 20 "$WORK/perf-$name.txt" >&2
    invalid "kafka-producer-perf-test ($name) failed (exit $rc)"
    PERF_ROWS+="| $name | failed | | | | | | |"$'\n'
    return 0
  fi
  PERF_RAW+="$name: $line"$'\n'
  # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P50 ms 50th,
  #  P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
  PERF_ROWS+="$(awk -v name="$name" '{
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) == "records" && $(i + 2) == "sent,") sent = $i
      if ($(i + 1) == "records/sec") rps = $i
      if ($(i + 1) == "MB/sec),") mb = substr($i, 2)
      if ($(i + 2) == "avg") avg = $i
      if ($(i + 2) == "max") max = $i
      if ($(i + 2) == "50th,") p50 = $i
      if ($(i + 2) == "99th,") p99 = $i
    }
    printf "| %s | %s | %.0f | %s | %s | %s | %s | %.0f |", name, sent, rps, mb, avg, p50, p99, max
  }' <<<"$line")"$'\n'
}
run_perf "300-byte random records" --record-size 300
run_perf "~${PAYLOAD_BYTES}-byte JSON events" --payload-file "$WORK/payloads.jsonl"

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- report -------------------------------------------------------------------------------------

if [ "${#INVALID[@]}" -eq 0 ]; then
  VERDICT="valid: every request answered 2xx, no socket errors, every event accepted, both reference runs completed"
else
  VERDICT="NOT VALID:"$'\n'"$(printf -- '  - %s\n' "${INVALID[@]}")"
fi
SHORT_NOTE=""
if [ "$DURATION" -lt 20 ] || [ "$PERF_RECORDS" -lt 1000000 ]; then
  SHORT_NOTE=$'\n'"> **Short run** (BENCH_DURATION=$DURATION, BENCH_PERF_RECORDS=$PERF_RECORDS): a smoke test of the benchmark, not a measurement to publish."$'\n'
fi

REPORT="$WORK/report.md"
{
  cat <<EOF
## Tributary benchmark, $STAMP
$SHORT_NOTE
| machine | |
|---|---|
| CPU | $(nproc) cores, $CPU_MODEL |
| memory | $MEM_TOTAL |
| OS / kernel | $OS_NAME / $(uname -r) |
| load average (1/5/15 min) | $LOAD_START at start, $LOAD_END at end |
| rustc | $RUSTC |
| tributary | $BIN_VERSION, binary built $BIN_BUILT |
| git commit | $GIT_COMMIT |
| Kafka | Apache Kafka $KAFKA_VERSION_USED, single KRaft node, broker $BROKER_NOTE |
| Java | $JAVA |
| load generator | $WRK_VERSION |

Everything runs on this one machine over loopback: the broker, the gateway, wrk and the perf test
share its cores. The gateway was started for this run on $LISTEN from an empty directory (no
tributary.toml; its effective settings are at the end); its producer: acks=all, idempotent,
5 in flight, snappy, linger.ms=10.

### 1. Single events: \`POST /api/v1/events/$TOPIC\`

wrk, $THREADS threads, ${DURATION} s per row after a ${WARMUP} s warm-up, --timeout $WRK_TIMEOUT. Each
request is one ~300-byte clickstream event with a unique event_id and a user_id out of $KEYS
(so every partition of the topic is written); 201 means Kafka acknowledged it. wrk is a closed
loop: each connection sends its next request when the previous answer arrives, so latency is
measured at the throughput the gateway sustains.

| connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | requests | statuses | non-2xx | socket errors | gateway CPU (of one core) | gateway CPU µs per 201 |
|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|
$SINGLE_ROWS
### 2. Batches: \`POST /api/v1/events/$TOPIC/batch\`

Same events, ${DURATION} s per row. events/s = requests/s x batch size; a batch answers 200 when
every event in it was acknowledged by Kafka, and "accepted" adds up the per-item results.

| batch size | connections | requests/s | events/s | p50 ms | p90 ms | p99 ms | max ms | requests | accepted / sent | statuses | non-2xx | socket errors | gateway CPU (of one core) |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|
$BATCH_ROWS
### 3. Reference: \`kafka-producer-perf-test\`, same broker

Apache Kafka's Java producer with the gateway's settings ($PERF_PROPS), as fast as it can
(--throughput -1), $PERF_RECORDS records per row into a fresh topic with $PERF_PARTITIONS partitions
(deleted afterwards). Its records have no key, so the producer's sticky partitioner fills one
partition's batch at a time (the gateway's records are keyed by user_id and spread over all 24).
Its latency is from send() to the acknowledgement, including time queued in the producer: at
--throughput -1 that queue is full, so it is not comparable with the gateway's closed-loop latency.

| records | sent | records/s | MB/s | avg ms | p50 ms | p99 ms | max ms |
|---|---:|---:|---:|---:|---:|---:|---:|
$PERF_ROWS
\`\`\`
$PERF_RAW\`\`\`

### 4. Gateway process

| when | VmRSS MiB | VmHWM (peak) MiB |
|---|---:|---:|
| healthy, before any load | $RSS_IDLE | $HWM_IDLE |
| after the single-event runs | $RSS_SINGLE | $HWM_SINGLE |
| after the batch runs | $RSS_BATCH | $HWM_BATCH |

The dedupe window held $DEDUPE_ENTRIES event ids at the end (at most 1,000,000 by default).

### 5. The spec's own design: FastAPI + confluent-kafka, same load

bench/reference/app.py: the spec's single-event route (Pydantic validation, confluent-kafka with
the gateway's producer settings, 201 once Kafka acknowledged), 2 uvicorn workers, nothing else
(no dedupe window, catalog, schemas, auth or metrics). Same wrk script, connections and
durations as table 1, the same topic. CPU is that of uvicorn and its workers.
$REFERENCE_NOTE.

| connections | requests/s | p50 ms | p90 ms | p99 ms | max ms | requests | statuses | socket errors | CPU (of one core) | CPU µs per 201 |
|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|
$REFERENCE_ROWS
### Checks

- events the clients saw acknowledged (warm-up included): $EXPECTED_EVENTS; the gateway's metrics
  count $GATEWAY_PRODUCED produced and $GATEWAY_PRODUCE_ERRORS produce errors on $TOPIC (the
  difference is requests still in flight when wrk stopped, at most $IN_FLIGHT_BOUND events)
- $TOPIC end offsets grew by $OFFSETS_GROWTH records ($OFFSETS_BEFORE to $OFFSETS_AFTER); other
  writers to the same broker would add to this
- WARN/ERROR lines in the gateway log: $WARNINGS
- $VERDICT
EOF
} > "$REPORT"

{
  echo
  echo "<details><summary>Raw wrk output</summary>"
  echo
  for f in "$WORK"/single-*.txt "$WORK"/batch-*.txt "$WORK"/reference-c*.txt; do
    [ -f "$f" ] || continue
    printf '%s\n\n```\n%s\n```\n\n' "$(basename "$f" .txt)" "$(cat "$f")"
  done
  echo "</details>"
  echo
  echo "<details><summary>Effective configuration of the bench gateway (tributary config show)</summary>"
  echo
  echo '```json'
  cat "$WORK/config.json"
  echo '```'
  echo "</details>"
  if [ "$WARNINGS" != 0 ]; then
    echo
    echo "<details><summary>First WARN/ERROR lines of the gateway log</summary>"
    echo
    echo '```'
    log_problems | head -n 20
    echo '```'
    echo "</details>"
  fi
} >> "$REPORT"

mkdir -p "$RESULTS_DIR"
cp "$REPORT" "$RESULTS_DIR/$STAMP.md"
cat "$REPORT"
log "results written to $RESULTS_DIR/$STAMP.md"
[ "${#INVALID[@]}" -eq 0 ] || exit 1
