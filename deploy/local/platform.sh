#!/usr/bin/env bash
# The local platform: Kafka, the topic catalog, the registry, the gateway, the processor, the
# sink and Prometheus, started in the background.
#
#   platform.sh up       start everything, wait until ready, print where it is
#   platform.sh down     stop everything this script started
#   platform.sh status   say what is running
#
# TRIBUTARY_BIN points at the tributary binary (the Makefile sets it). Logs and pid files live
# in $TRIBUTARY_STATE_DIR (default ~/.cache/tributary/state). Addresses come from the
# configuration (tributary.toml, TRIBUTARY_* variables); Kafka's from deploy/kafka/kafka.sh's
# settings (KAFKA_PORT, KAFKA_METRICS_PORT, default 9404 here), Prometheus's from
# TRIBUTARY_PROMETHEUS_LISTEN (default 127.0.0.1:9090). Prometheus is started when the
# `prometheus` binary is installed (Debian: apt-get install prometheus), and skipped otherwise.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
STATE="${TRIBUTARY_STATE_DIR:-$CACHE/state}"
# The broker's metrics, for Prometheus (kafka.sh attaches the JMX exporter agent).
export KAFKA_METRICS_PORT="${KAFKA_METRICS_PORT:-9404}"
PROMETHEUS_ADDR="${TRIBUTARY_PROMETHEUS_LISTEN:-127.0.0.1:9090}"
PROMETHEUS="${PROMETHEUS_BIN:-prometheus}"
BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
KAFKA="$ROOT/deploy/kafka/kafka.sh"

# The gateway address and bootstrap servers as the binary resolves them (tributary.toml,
# TRIBUTARY_* variables, defaults), so `make up` honours the same configuration as everything else.
resolve_config() {
  local json
  json="$(cd "$ROOT" && "$BIN" config show)" || { say "error: invalid configuration (see above)"; exit 1; }
  GATEWAY_ADDR="$(printf '%s\n' "$json" | sed -n 's/^ *"listen": "\(.*\)",\{0,1\}$/\1/p' | sed -n 1p)"
  # config show prints [gateway] before [registry]: the first "listen" is the gateway's.
  REGISTRY_ADDR="$(printf '%s\n' "$json" | sed -n 's/^ *"listen": "\(.*\)",\{0,1\}$/\1/p' | sed -n 2p)"
  # ... and [processor] third, [sink] fourth.
  PROCESSOR_ADDR="$(printf '%s\n' "$json" | sed -n 's/^ *"listen": "\(.*\)",\{0,1\}$/\1/p' | sed -n 3p)"
  SINK_ADDR="$(printf '%s\n' "$json" | sed -n 's/^ *"listen": "\(.*\)",\{0,1\}$/\1/p' | sed -n 4p)"
  BOOTSTRAP="$(printf '%s\n' "$json" | sed -n 's/^ *"bootstrap_servers": "\(.*\)",\{0,1\}$/\1/p' | head -n 1)"
  GATEWAY_ADDR="${GATEWAY_ADDR:-127.0.0.1:8080}"
  REGISTRY_ADDR="${REGISTRY_ADDR:-127.0.0.1:8081}"
  PROCESSOR_ADDR="${PROCESSOR_ADDR:-127.0.0.1:8082}"
  SINK_ADDR="${SINK_ADDR:-127.0.0.1:8084}"
  BOOTSTRAP="${BOOTSTRAP:-127.0.0.1:9092}"
}

say() { printf '%s\n' "$*"; }

# shellcheck source=../lib/process.sh
. "$ROOT/deploy/lib/process.sh"
pid_alive() { pidfile_alive "$1"; }

http_ok() { curl -fsS -m 2 -o /dev/null "$1" 2>/dev/null; }

# The registry is up when it answers: with basic auth on, an anonymous request gets 401.
registry_up() {
  local code
  code="$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)"
  [ "$code" = 200 ] || [ "$code" = 401 ]
}

start_service() { # name, then the command
  local name="$1"; shift
  local pidf="$STATE/$name.pid" logf="$STATE/logs/$name.log"
  mkdir -p "$STATE/logs"
  if pid_alive "$pidf"; then say "$name: already running (pid $(cat "$pidf"))"; return 0; fi
  # The service gets its own session and no file descriptor of ours, so `make up` returns at
  # once (also when its output is piped) and the service outlives it; the pid file names the
  # service itself.
  (cd "$ROOT" || exit 1; setsid nohup "$@" >> "$logf" 2>&1 < /dev/null & echo $! > "$pidf")
}

stop_service() {
  if stop_pidfile "$STATE/$1.pid" 30 "$1"; then say "$1: stopped"; fi
}

wait_healthy() { # name, url[, check[, seconds]]
  local name="$1" url="$2" check="${3:-http_ok}" secs="${4:-60}"
  local deadline=$((SECONDS + secs))
  until "$check" "$url"; do
    if ! pid_alive "$STATE/$name.pid"; then
      say "error: the $name exited; last lines of $STATE/logs/$name.log:"; tail -n 20 "$STATE/logs/$name.log"; exit 1
    fi
    [ $SECONDS -lt $deadline ] || { say "error: $name not healthy after ${secs}s; see $STATE/logs/$name.log"; exit 1; }
    sleep 0.2
  done
}

# Prometheus with deploy/monitoring/prometheus.yml, its targets moved to the addresses in use.
start_prometheus() {
  if ! command -v "$PROMETHEUS" >/dev/null; then
    say "prometheus: not installed, skipped (Debian: apt-get install prometheus; then make up again)"
    return 0
  fi
  local dir="$STATE/prometheus"
  mkdir -p "$dir"
  sed -e "s#\"127.0.0.1:8080\"#\"$GATEWAY_ADDR\"#" -e "s#\"127.0.0.1:8082\"#\"$PROCESSOR_ADDR\"#" \
      -e "s#\"127.0.0.1:8084\"#\"$SINK_ADDR\"#" -e "s#\"127.0.0.1:9404\"#\"127.0.0.1:$KAFKA_METRICS_PORT\"#" \
      -e "s#^  - rules/#  - $ROOT/deploy/monitoring/rules/#" \
      "$ROOT/deploy/monitoring/prometheus.yml" > "$dir/prometheus.yml"
  start_service prometheus "$PROMETHEUS" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/data" --storage.tsdb.retention.time=7d \
    --web.listen-address="$PROMETHEUS_ADDR" --web.enable-lifecycle
  wait_healthy prometheus "http://$PROMETHEUS_ADDR/-/ready"
}

up() {
  [ -x "$BIN" ] || { say "error: $BIN is missing; run 'make up' (it builds first)"; exit 1; }
  command -v curl >/dev/null || { say "error: curl is required (apt-get install curl)"; exit 1; }
  resolve_config
  "$KAFKA" start
  (cd "$ROOT" && "$BIN" topics apply)
  start_service registry "$BIN" registry
  wait_healthy registry "http://$REGISTRY_ADDR/subjects" registry_up
  start_service gateway "$BIN" gateway
  wait_healthy gateway "http://$GATEWAY_ADDR/api/v1/health"
  start_service processor "$BIN" processor
  # Setup reads the reference topics first: up to a minute for their leaders right after a
  # broker start, then reference_load_timeout_ms (30 s) for the data.
  wait_healthy processor "http://$PROCESSOR_ADDR/health" http_ok 120
  # Locally the warehouse flushes every 2 s (production keeps the 60 s default), so rows show
  # up while you watch; a setting of your own in tributary.toml or the environment wins.
  TRIBUTARY_SINK__BUFFER_FLUSH_TIME_SECS="${TRIBUTARY_SINK__BUFFER_FLUSH_TIME_SECS:-2}" start_service sink "$BIN" sink
  wait_healthy sink "http://$SINK_ADDR/health"
  start_prometheus
  local kstate; kstate="$("$KAFKA" env | sed -n 's/^KAFKA_STATE_DIR=//p')"
  local khome; khome="$("$KAFKA" env | sed -n 's/^KAFKA_HOME=//p')"
  cat <<EOT

Tributary is up.

  Gateway      http://$GATEWAY_ADDR/api/v1   (OpenAPI: http://$GATEWAY_ADDR/api/v1/openapi.json)
  Registry     http://$REGISTRY_ADDR   (Confluent Schema Registry API; schemas in the _schemas topic)
  Health       http://$GATEWAY_ADDR/api/v1/health
  Metrics      http://$GATEWAY_ADDR/metrics  (Prometheus)  and  /api/v1/metrics (JSON)
  Processor    http://$PROCESSOR_ADDR/metrics  (windowed aggregates into aggregates.*, bad records into events.dlq)
  Warehouse    $BIN warehouse sql "SELECT count(*) FROM raw.EVENTS_CLICKSTREAM"  (DuckDB, loaded by the sink; metrics http://$SINK_ADDR/metrics)
  Kafka        $BOOTSTRAP  (Apache Kafka, KRaft; tools in $khome/bin; metrics http://127.0.0.1:$KAFKA_METRICS_PORT/metrics)
  Prometheus   http://$PROMETHEUS_ADDR  (alerts: http://$PROMETHEUS_ADDR/alerts; rules and Grafana dashboards in deploy/monitoring)

Send an event:

  curl -s -X POST http://$GATEWAY_ADDR/api/v1/events/events.clickstream \\
    -H 'content-type: application/json' \\
    -d '{"event_id":"evt-'"\$(date +%s%N)"'","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'","event_type":"page_view","user_id":"user-1","payload":{"url":"/home"}}'

Read it back:

  curl -s 'http://$GATEWAY_ADDR/api/v1/events/events.clickstream/latest?limit=5'

Generate traffic for the three sources (late, skewed and malformed records included), and
watch one-minute windows appear a minute later:

  $BIN gen --rate 200 --duration 120
  curl -s 'http://$GATEWAY_ADDR/api/v1/events/aggregates.iot.sensors.1m/latest?limit=3'

Logs: $STATE/logs/{gateway,registry,processor,sink,prometheus}.log and $kstate/logs/server.log
Stop: make down
EOT
}

down() {
  stop_service prometheus
  stop_service sink
  stop_service processor
  stop_service gateway
  stop_service registry
  "$KAFKA" stop
}

status() {
  local rc=0
  if [ -x "$BIN" ]; then resolve_config; else GATEWAY_ADDR=127.0.0.1:8080; REGISTRY_ADDR=127.0.0.1:8081; PROCESSOR_ADDR=127.0.0.1:8082; SINK_ADDR=127.0.0.1:8084; fi
  "$KAFKA" status || rc=1
  if pid_alive "$STATE/registry.pid" && registry_up "http://$REGISTRY_ADDR/subjects"; then
    say "registry: running (pid $(cat "$STATE/registry.pid")) on http://$REGISTRY_ADDR"
  else
    say "registry: not running"; rc=1
  fi
  if pid_alive "$STATE/gateway.pid"; then
    if http_ok "http://$GATEWAY_ADDR/api/v1/health"; then
      say "gateway: running (pid $(cat "$STATE/gateway.pid")) on http://$GATEWAY_ADDR, healthy"
    else
      say "gateway: running (pid $(cat "$STATE/gateway.pid")) on http://$GATEWAY_ADDR, NOT healthy (see $STATE/logs/gateway.log)"
      rc=1
    fi
  else
    say "gateway: not running"; rc=1
  fi
  if pid_alive "$STATE/sink.pid" && http_ok "http://$SINK_ADDR/health"; then
    say "sink: running (pid $(cat "$STATE/sink.pid")), warehouse queries: tributary warehouse sql \"...\""
  else
    say "sink: not running or not healthy (see $STATE/logs/sink.log)"; rc=1
  fi
  if pid_alive "$STATE/processor.pid" && http_ok "http://$PROCESSOR_ADDR/health"; then
    say "processor: running (pid $(cat "$STATE/processor.pid")), metrics on http://$PROCESSOR_ADDR/metrics"
  else
    say "processor: not running or not healthy (see $STATE/logs/processor.log)"; rc=1
  fi
  if pid_alive "$STATE/prometheus.pid" && http_ok "http://$PROMETHEUS_ADDR/-/ready"; then
    say "prometheus: running (pid $(cat "$STATE/prometheus.pid")) on http://$PROMETHEUS_ADDR"
  elif command -v "$PROMETHEUS" >/dev/null; then
    say "prometheus: not running (see $STATE/logs/prometheus.log)"; rc=1
  else
    say "prometheus: not installed (apt-get install prometheus)"
  fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
