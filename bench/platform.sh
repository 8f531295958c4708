#!/usr/bin/env bash
# A whole platform of its own for the load benchmarks (bench/locust.sh, bench/lag.sh): registry,
# gateway, processor and sink from the given binary, on ports of their own, with a fresh topic
# catalog on the local broker, so that a run neither reads a backlog left by other runs nor
# disturbs `make up`.
#
#   bench/platform.sh up     start it (prints where it is); the broker must answer on KAFKA_PORT
#   bench/platform.sh down   stop it and delete its topics and its schema topic
#   bench/platform.sh env    print BENCH_* lines describing the running platform (for the scripts)
#
# It is `tributary up --no-kafka` with TRIBUTARY_STATE_DIR pointing at BENCH_PLATFORM_DIR and a
# configuration written there: pid files, logs, the DuckDB file and the configuration live in that
# folder, Prometheus is not started. The catalog (names carry a nonce chosen at `up`):
#   events.bench-<nonce>.clicks            source, 24 partitions, key user_id, Avro (as the built-in
#                                          events.clickstream)
#   aggregates.bench-<nonce>.clicks.1m/.5m the processor's results, 24 partitions, Avro
#   events.bench-<nonce>.dlq               dead letters, 6 partitions, JSON
# and the registry stores schemas in _schemas-bench-<nonce>. The processor counts clicks per
# event_type in 1-minute tumbling and 5-minute sliding windows (as for events.clickstream, without
# reference data); the sink loads all four topics. Groups: bench-<nonce>-processor, -sink.
#
# Settings (environment):
#   TRIBUTARY_BIN          the binary (default $CARGO_TARGET_DIR/release/tributary)
#   BENCH_PLATFORM_DIR     state folder (default ~/.cache/tributary/bench-platform)
#   BENCH_PORT_BASE        gateway port; registry +1, processor +2, sink +4 (default 28180)
#   KAFKA_PORT             the broker on 127.0.0.1 (default 9092; started by `up` if it does not
#                          answer, with deploy/kafka/kafka.sh, and left running)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
DIR="${BENCH_PLATFORM_DIR:-$CACHE/bench-platform}"
BASE="${BENCH_PORT_BASE:-28180}"
BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-9092}"
KAFKA="$ROOT/deploy/kafka/kafka.sh"

log() { printf 'platform: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# the platform's own environment for `tributary up` / `down`
run_tributary() {
  (cd "$DIR" && TRIBUTARY_STATE_DIR="$DIR/state" TRIBUTARY_CONFIG="$DIR/tributary.toml" \
    TRIBUTARY_ROOT="$ROOT" PROMETHEUS_BIN="$DIR/no-prometheus" "$BIN" "$@")
}

write_config() {
  local n="$1"
  cat > "$DIR/tributary.toml" <<EOF
# written by bench/platform.sh; nonce $n
[kafka]
bootstrap_servers = "$BOOTSTRAP"
client_id = "bench-$n"

[gateway]
listen = "127.0.0.1:$BASE"
# Locust's stream users all come from 127.0.0.1: lift the per-address cap to the global one.
ws_max_streams_per_principal = 2000

[gateway.registry]
url = "http://127.0.0.1:$((BASE + 1))"

[registry]
listen = "127.0.0.1:$((BASE + 1))"
topic = "_schemas-bench-$n"

[processor]
listen = "127.0.0.1:$((BASE + 2))"
group_id = "bench-$n-processor"
dlq_topic = "events.bench-$n.dlq"
late_topic = "events.bench-$n.dlq"

[processor.registry]
url = "http://127.0.0.1:$((BASE + 1))"

[[processor.sources]]
topic = "events.bench-$n.clicks"
count_by = "event_type"

[sink]
listen = "127.0.0.1:$((BASE + 4))"
database = "$DIR/warehouse.duckdb"
group_id = "bench-$n-sink"
dlq_topic = "events.bench-$n.dlq"

[sink.registry]
url = "http://127.0.0.1:$((BASE + 1))"

[[topics]]
name = "events.bench-$n.clicks"
partitions = 24
key_field = "user_id"
require_key = true
role = "source"
value_format = "avro"

[[topics]]
name = "events.bench-$n.dlq"
partitions = 6
require_key = false
role = "dead_letter"
value_format = "json"

[[topics]]
name = "aggregates.bench-$n.clicks.1m"
partitions = 24
key_field = "key"
require_key = true
role = "output"
value_format = "avro"

[[topics]]
name = "aggregates.bench-$n.clicks.5m"
partitions = 24
key_field = "key"
require_key = true
role = "output"
value_format = "avro"
EOF
}

cmd_up() {
  [ -x "$BIN" ] || die "$BIN is missing; build it with 'make build' (or set TRIBUTARY_BIN)"
  if [ -f "$DIR/nonce" ]; then
    die "$DIR holds a platform (nonce $(cat "$DIR/nonce")); run 'bench/platform.sh down' first"
  fi
  for p in "$BASE" $((BASE + 1)) $((BASE + 2)) $((BASE + 4)); do
    port_open "$p" && die "127.0.0.1:$p is in use; set BENCH_PORT_BASE"
  done
  port_open "${BOOTSTRAP##*:}" || "$KAFKA" start >&2
  mkdir -p "$DIR/state"
  local n
  n="$(printf '%x%04x' "$(date +%s)" "$RANDOM")"
  echo "$n" > "$DIR/nonce"
  write_config "$n"
  log "starting registry, gateway, processor and sink (nonce $n) in $DIR"
  if ! run_tributary up --no-kafka > "$DIR/up.log" 2>&1; then
    cat "$DIR/up.log" >&2
    die "tributary up failed; logs in $DIR/state/logs (run 'bench/platform.sh down' to clean up)"
  fi
  cmd_env
}

cmd_down() {
  [ -f "$DIR/nonce" ] || { log "no platform in $DIR"; return 0; }
  local n
  n="$(cat "$DIR/nonce")"
  # --keep-kafka: the broker is shared (it may be `make up`'s or another run's); never stop it
  run_tributary down --keep-kafka >&2 || log "warning: tributary down failed"
  local t
  for t in "events.bench-$n.clicks" "events.bench-$n.dlq" "aggregates.bench-$n.clicks.1m" \
    "aggregates.bench-$n.clicks.5m" "_schemas-bench-$n"; do
    timeout 120 "$KAFKA" tool kafka-topics --bootstrap-server "$BOOTSTRAP" --delete --topic "${t//./\\.}" \
      >/dev/null 2>&1 || log "warning: could not delete topic $t"
  done
  for g in "bench-$n-processor" "bench-$n-sink"; do
    timeout 120 "$KAFKA" tool kafka-consumer-groups --bootstrap-server "$BOOTSTRAP" --delete --group "$g" \
      >/dev/null 2>&1 || true
  done
  rm -rf "$DIR/warehouse.duckdb" "$DIR/warehouse.duckdb.wal" "$DIR/nonce"
  log "stopped; topics of nonce $n deleted (logs kept in $DIR/state/logs)"
}

# BENCH_* lines for the scripts: addresses, the source topic and the services' pids
cmd_env() {
  [ -f "$DIR/nonce" ] || die "no platform in $DIR; run 'bench/platform.sh up'"
  local n
  n="$(cat "$DIR/nonce")"
  echo "BENCH_GATEWAY=http://127.0.0.1:$BASE"
  echo "BENCH_PROCESSOR_METRICS=http://127.0.0.1:$((BASE + 2))/metrics"
  echo "BENCH_SINK_METRICS=http://127.0.0.1:$((BASE + 4))/metrics"
  echo "BENCH_TOPIC=events.bench-$n.clicks"
  local s
  for s in registry gateway processor sink; do
    echo "BENCH_PID_${s^^}=$(cat "$DIR/state/$s.pid" 2>/dev/null || true)"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: bench/platform.sh up|down|env" >&2; exit 2 ;;
esac
