#!/usr/bin/env bash
# The processor's numbers in docs/performance.md, measured against the platform `make up` runs.
#
#   1. Throughput with exactly-once: stop the platform's processor, write a backlog with
#      `tributary gen` through the gateway, start the processor again (same consumer group) and
#      time it until it has processed the backlog and its lag is 0; the steady rate is the median
#      of its per-second progress. Reference: Kafka's kafka-consumer-perf-test (read_committed)
#      reading as many records from the same three topics.
#   2. Latency: with the processor running, `tributary gen` at a live rate; then
#      bench/window_latency.py reads every window result committed since the start and reports
#      the delay from the window's end to the result (p50, p90, p99), and that delay minus the
#      configured out-of-orderness and grace (the part the processor controls).
#
# Settings (environment): BENCH_BACKLOG_RATE (30000), BENCH_BACKLOG_SECS (40), BENCH_LIVE_RATE
# (2000), BENCH_LIVE_SECS (150), TRIBUTARY_BIN. Needs `make up` running with the default settings.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
STATE="$CACHE/state"
K="$CACHE/kafka-4.3.1/bin"
METRICS=http://127.0.0.1:8082/metrics
sum() { curl -fsS -m 2 "$METRICS" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%d\n", s}'; }

[ -f "$STATE/processor.pid" ] && kill -0 "$(cat "$STATE/processor.pid")" 2>/dev/null \
  || { echo "error: the processor is not running; run 'make up' first" >&2; exit 1; }

echo "== throughput: backlog of ${BENCH_BACKLOG_SECS:-40} s of gen at ${BENCH_BACKLOG_RATE:-30000}/s" >&2
kill "$(cat "$STATE/processor.pid")"
while kill -0 "$(cat "$STATE/processor.pid")" 2>/dev/null; do sleep 0.2; done
"$BIN" gen --rate "${BENCH_BACKLOG_RATE:-30000}" --duration "${BENCH_BACKLOG_SECS:-40}" | tail -n 1 >&2
(cd "$ROOT" || exit 1; setsid nohup "$BIN" processor >> "$STATE/logs/processor.log" 2>&1 < /dev/null & echo $! > "$STATE/processor.pid")
t0=$(date +%s.%N)
until curl -fsS -m 1 -o /dev/null "$METRICS" 2>/dev/null; do sleep 0.1; done
rates=()
last=0
while true; do
  sleep 1
  n=$(sum processor_records_in_total)
  lag=$(sum processor_lag_records)
  if [ "$last" -gt 0 ] && [ "$n" -gt "$last" ]; then rates+=($((n - last))); fi
  # Done: nothing new in the last second and nothing left to read (t1 is up to 1 s late).
  if [ "$n" -gt 0 ] && [ "$n" -eq "$last" ] && [ "$lag" -eq 0 ]; then break; fi
  last=$n
done
t1=$(date +%s.%N)
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf 'processor: %d records in %.1f s wall (start-up included) = %.0f records/s; steady %s records/s (median of per-second progress); commits %s\n' \
  "$n" "$(echo "$t1 - $t0" | bc)" "$(echo "$n / ($t1 - $t0)" | bc -l)" "$median" \
  "$(curl -fsS "$METRICS" | awk '/^processor_transaction_commit_duration_seconds_(sum|count)/ {v[$1]=$2} END {printf "%d, mean %.1f ms", v["processor_transaction_commit_duration_seconds_count"], 1000*v["processor_transaction_commit_duration_seconds_sum"]/v["processor_transaction_commit_duration_seconds_count"]}')"
echo "isolation.level=read_committed" > "$STATE/bench-consumer.properties"
"$K/kafka-consumer-perf-test" --bootstrap-server 127.0.0.1:9092 --include 'events\.(clickstream|iot\.sensors|transactions)' \
  --num-records "$n" --group "bench-perf-$RANDOM" --timeout 60000 --command-config "$STATE/bench-consumer.properties" 2>/dev/null \
  | awk -F', ' 'NR == 2 {printf "reference: kafka-consumer-perf-test read %s records at %.0f records/s (%.0f/s excluding its group join)\n", $5, $6, $10}'

echo "== latency: gen at ${BENCH_LIVE_RATE:-2000}/s for ${BENCH_LIVE_SECS:-150} s" >&2
start=$(($(date +%s%N) / 1000000))
"$BIN" gen --rate "${BENCH_LIVE_RATE:-2000}" --duration "${BENCH_LIVE_SECS:-150}" | tail -n 1 >&2
sleep 20
"$CACHE/venv/bin/python" "$ROOT/bench/window_latency.py" 127.0.0.1:9092 http://127.0.0.1:8081 "$start" 15000
