#!/usr/bin/env bash
# Consumer lag under sustained load, and memory over a soak (docs/performance.md, "Load tests").
#
# Writes BENCH_LAG_RATE events/s through the gateway's batch endpoint for BENCH_LAG_SECONDS with
# an open-loop generator (bench/lag.py: batches of BENCH_LAG_BATCH on a fixed schedule), and every
# BENCH_LAG_INTERVAL seconds samples the processor's and the sink's lag (processor_lag_records and
# sink_lag_records from their /metrics, summed over partitions) and each service's VmRSS and CPU
# (/proc/<pid>/status and stat). After the load it waits until both lags are 0 (at most
# BENCH_LAG_DRAIN seconds). The table goes to bench/results/lag-<UTC>.md.
#
# The platform is bench/platform.sh's (registry, gateway, processor and sink on ports of their
# own, a fresh catalog on the local broker): used as is when it is up (`bench/platform.sh up`
# first, for instance to run several loads on one platform), otherwise started for this run and
# stopped at the end.
#
#   bench/lag.sh                                                   # 20,000/s for 5 minutes
#   BENCH_LAG_SECONDS=60 bench/lag.sh                              # the short run
#   BENCH_LAG_RATE=5000 BENCH_LAG_SECONDS=1800 BENCH_LAG_INTERVAL=60 bench/lag.sh   # 30-min soak
#
# Settings (environment): BENCH_LAG_RATE (20000), BENCH_LAG_SECONDS (300), BENCH_LAG_BATCH (500
# events per request), BENCH_LAG_INTERVAL (10), BENCH_LAG_DRAIN (120), BENCH_LAG_CONNECTIONS (32,
# most requests in flight), BENCH_RESULTS_DIR (bench/results), TRIBUTARY_BIN, and those of
# bench/platform.sh (BENCH_PLATFORM_DIR, BENCH_PORT_BASE, KAFKA_PORT). Exit status 1 when a batch
# was not answered 200 with every event accepted, or the lags did not drain.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
export TRIBUTARY_BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
RATE="${BENCH_LAG_RATE:-20000}"
SECONDS_RUN="${BENCH_LAG_SECONDS:-300}"
BATCH="${BENCH_LAG_BATCH:-500}"
INTERVAL="${BENCH_LAG_INTERVAL:-10}"
DRAIN="${BENCH_LAG_DRAIN:-120}"
CONNS="${BENCH_LAG_CONNECTIONS:-32}"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"
PYTHON="${BENCH_PYTHON:-python3}"

log() { printf 'lag: %s\n' "$*" >&2; }
for v in RATE SECONDS_RUN BATCH INTERVAL DRAIN CONNS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || { log "error: $v must be a positive whole number, not '${!v}'"; exit 1; }
done
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || { log "error: $PYTHON must be Python 3.9 or newer"; exit 1; }

STARTED=0
cleanup() {
  local rc=$?
  [ "$STARTED" = 1 ] && "$HERE/platform.sh" down || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! ENV="$("$HERE/platform.sh" env 2>/dev/null)"; then
  STARTED=1
  ENV="$("$HERE/platform.sh" up)"
fi
eval "$ENV"
BROKER_PID="$(pgrep -f "kafka.Kafka .*kafka-${KAFKA_PORT:-9092}/server.properties" | head -n 1 || true)"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/lag-$STAMP.md"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "${RATE}/s for ${SECONDS_RUN} s into $BENCH_TOPIC via $BENCH_GATEWAY; report: $OUT"
rc=0
"$PYTHON" "$HERE/lag.py" --gateway "$BENCH_GATEWAY" --topic "$BENCH_TOPIC" \
  --processor-metrics "$BENCH_PROCESSOR_METRICS" --sink-metrics "$BENCH_SINK_METRICS" \
  --rate "$RATE" --seconds "$SECONDS_RUN" --batch "$BATCH" --interval "$INTERVAL" --drain "$DRAIN" \
  --connections "$CONNS" \
  --pid "registry=$BENCH_PID_REGISTRY" --pid "gateway=$BENCH_PID_GATEWAY" \
  --pid "processor=$BENCH_PID_PROCESSOR" --pid "sink=$BENCH_PID_SINK" \
  ${BROKER_PID:+--pid "broker=$BROKER_PID"} > "$OUT.body" || rc=$?

{
  echo "# Consumer lag under load, $STAMP"
  echo
  [ "$SECONDS_RUN" -lt 300 ] && echo "> **Short run** (BENCH_LAG_SECONDS=$SECONDS_RUN): a check of the method, not the 5-minute measurement." && echo
  echo "| | |"
  echo "|---|---|"
  echo "| machine | $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
  echo "| load average (1/5/15 min) | $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end |"
  echo "| tributary | $("$TRIBUTARY_BIN" --version 2>/dev/null || echo unknown), binary built $(date -u -r "$TRIBUTARY_BIN" +%Y-%m-%dT%H:%M:%SZ) |"
  echo "| git commit | $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown) |"
  echo "| platform | bench/platform.sh: registry, gateway, processor, sink with default settings (sink flush every 2 s, as \`make up\`), topic \`$BENCH_TOPIC\` (24 partitions, Avro); broker on 127.0.0.1:${KAFKA_PORT:-9092}, shared with whatever else runs on it |"
  echo "| generator | bench/lag.py ($("$PYTHON" --version 2>&1)), one process, open loop |"
  echo
  cat "$OUT.body"
  echo
  echo "Lag is each service's own gauge, summed over partitions: the partitions' last stable offset"
  echo "minus what the service has done, from librdkafka's statistics (the processor's every 1 s, the"
  echo "sink's every 5 s, so the sink's column can repeat a value). For the sink, done means committed"
  echo "into DuckDB, so its lag includes the records buffered for the next flush (every 2 s or 10,000"
  echo "records). CPU % is of one core over the interval; the broker's includes everything else that"
  echo "uses it at the time."
} > "$OUT"
rm -f "$OUT.body"
cat "$OUT"
log "report: $OUT"
exit "$rc"
