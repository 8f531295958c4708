#!/usr/bin/env bash
# The sink's number in docs/performance.md: rows/s into DuckDB on a backlog of at least a
# million events, side by side with Kafka's kafka-consumer-perf-test reading as many records.
#
# Uses the local broker (`make up` or `make kafka-up`) and a topic that already holds at least
# BENCH_SINK_ROWS records (default events.clickstream; `make bench` or `tributary gen` fill it).
# A sink of its own (fresh consumer group, fresh DuckDB file in a temporary folder, port 18084)
# loads the topic from the beginning; the rate is rows / seconds from its first flush until
# BENCH_SINK_ROWS rows are committed. Settings: BENCH_SINK_TOPIC, BENCH_SINK_ROWS (1000000),
# BENCH_SINK_BUFFER (buffer_count_records, default 10000), BENCH_SINK_SETTINGS (more lines of
# [sink], e.g. 'warehouse_memory_limit = "256MB"'), TRIBUTARY_BIN.
set -euo pipefail
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
TOPIC="${BENCH_SINK_TOPIC:-events.clickstream}"
ROWS="${BENCH_SINK_ROWS:-1000000}"
K="$CACHE/kafka-4.3.1/bin"
work="$(mktemp -d /tmp/tributary-bench-sink.XXXXXX)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/tributary.toml" <<EOT
[sink]
listen = "127.0.0.1:18084"
database = "$work/warehouse.duckdb"
group_id = "bench-sink-$RANDOM$RANDOM"
topics = ["$TOPIC"]
buffer_count_records = ${BENCH_SINK_BUFFER:-10000}
${BENCH_SINK_SETTINGS:-}
EOT
"$BIN" --config "$work/tributary.toml" sink 2> "$work/sink.log" &
pid=$!
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
metric() { curl -fsS -m 2 http://127.0.0.1:18084/metrics 2>/dev/null | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%d\n", s}'; }
until [ "$(metric sink_rows_written_total)" -gt 0 ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/sink.log"; exit 1; }
  sleep 0.05
done
t0=$(date +%s.%N); r0=$(metric sink_rows_written_total); c0=$(cpu_ticks)
until [ "$(metric sink_rows_written_total)" -ge "$ROWS" ]; do sleep 0.1; done
t1=$(date +%s.%N); r1=$(metric sink_rows_written_total); c1=$(cpu_ticks)
rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
printf 'sink: %d rows in %.1f s = %.0f rows/s into DuckDB (%s, buffer %s records); %.2f us of sink CPU per row; peak RSS %d MiB; flushes %s, mean %.0f ms\n' \
  "$((r1 - r0))" "$(echo "$t1 - $t0" | bc)" "$(echo "($r1 - $r0) / ($t1 - $t0)" | bc -l)" "$TOPIC" "${BENCH_SINK_BUFFER:-10000}" \
  "$(echo "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / ($r1 - $r0)" | bc -l)" "$((rss / 1024))" \
  "$(metric sink_flush_duration_seconds_count)" \
  "$(curl -fsS http://127.0.0.1:18084/metrics | awk '/^sink_flush_duration_seconds_(sum|count)/ {v[$1]=$2} END {print 1000*v["sink_flush_duration_seconds_sum"]/v["sink_flush_duration_seconds_count"]}')"
echo "isolation.level=read_committed" > "$work/consumer.properties"
"$K/kafka-consumer-perf-test" --bootstrap-server 127.0.0.1:9092 --topic "$TOPIC" --num-records "$ROWS" \
  --group "bench-perf-$RANDOM" --timeout 60000 --command-config "$work/consumer.properties" 2>/dev/null \
  | awk -F', ' 'NR == 2 {printf "reference: kafka-consumer-perf-test read %s records at %.0f records/s (%.0f/s excluding its group join)\n", $5, $6, $10}'
