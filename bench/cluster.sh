#!/usr/bin/env bash
# The cost of production settings (docs/performance.md, "On the cluster"): the same measurements,
# side by side in one run, on the single PLAINTEXT broker (deploy/kafka/kafka.sh, replication
# factor 1) and on the three-node cluster (deploy/kafka/cluster.sh: SASL_SSL with SCRAM-SHA-512,
# TLS, replication factor 3, min.insync.replicas=2, ACLs):
#   1. single-event POST /api/v1/events/{topic} through a gateway (wrk, bench/post_event.lua)
#   2. batch POST /api/v1/events/{topic}/batch through a gateway (wrk, bench/post_batch.lua)
#   3. Kafka's own kafka-producer-perf-test with the gateway's producer settings, 300-byte records
# Each row runs on the broker, then on the cluster, before the next row starts. On the cluster the
# gateway and the perf test connect as SCRAM user `gateway` with the settings of
# `cluster.sh client-env gateway` / `client-properties gateway`; the topic is applied as admin.
#
# It starts what is not running (and stops only that): the broker on KAFKA_PORT, the cluster on
# KAFKA_CLUSTER_PORT; always its own two gateways, and a fresh 24-partition topic
# events.bench-<nonce>.clicks on each, deleted at the end. The report goes to stdout and to
# bench/results/cluster-<UTC timestamp>.md. Exit status 1 when an answer was not 2xx or an event
# was not accepted.
#
# Settings (environment):
#   TRIBUTARY_BIN             the tributary binary        (default $CARGO_TARGET_DIR/release/tributary)
#   BENCH_DURATION            seconds per wrk row         (default 15)
#   BENCH_CONNECTIONS         connections, single events  (default 64)
#   BENCH_BATCH_SIZE          events per batch            (default 1000)
#   BENCH_BATCH_CONNECTIONS   connections, batches        (default 8)
#   BENCH_PERF_RECORDS        records per perf-test row   (default 500000)
#   KAFKA_PORT                the broker's port           (default 9092)
#   KAFKA_CLUSTER_PORT, KAFKA_CLUSTER_STATE_DIR           the cluster, as for cluster.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
BIN="${TRIBUTARY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/tributary}"
KAFKA="$ROOT/deploy/kafka/kafka.sh"
CLUSTER="$ROOT/deploy/kafka/cluster.sh"
BROKER="127.0.0.1:${KAFKA_PORT:-9092}"
DURATION="${BENCH_DURATION:-15}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
BATCH="${BENCH_BATCH_SIZE:-1000}"
BATCH_CONNECTIONS="${BENCH_BATCH_CONNECTIONS:-8}"
PERF_RECORDS="${BENCH_PERF_RECORDS:-500000}"
KEYS=5000
PARTITIONS=24
# The gateway's producer settings (crates/kafka/src/config.rs), given to the Java producer.
PERF_PROPS="acks=all enable.idempotence=true compression.type=snappy linger.ms=10 max.in.flight.requests.per.connection=5"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NONCE="$(printf '%x%04x' "$(date +%s)" "$RANDOM")"
TOPIC="events.bench-$NONCE.clicks"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
[ -x "$BIN" ] || die "$BIN is missing; build it with 'make build' (or set TRIBUTARY_BIN)"
for tool in wrk curl python3 timeout; do command -v "$tool" >/dev/null || die "$tool is required"; done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tributary-bench-cluster.XXXXXX")"
PIDS=()
STARTED_KAFKA=0
STARTED_CLUSTER=0
INVALID=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  timeout 120 "$KAFKA" tool kafka-topics --bootstrap-server "$BROKER" --delete --topic "${TOPIC//./\\.}" >/dev/null 2>&1 || true
  timeout 120 "$CLUSTER" tool kafka-topics --delete --topic "${TOPIC//./\\.}" >/dev/null 2>&1 || true
  [ "$STARTED_KAFKA" = 0 ] || "$KAFKA" stop >&2 || true
  [ "$STARTED_CLUSTER" = 0 ] || "$CLUSTER" stop >&2 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! port_open "$BROKER"; then STARTED_KAFKA=1; "$KAFKA" start >&2; fi
if ! "$CLUSTER" status >/dev/null 2>&1; then STARTED_CLUSTER=1; "$CLUSTER" start >&2; fi
CLUSTER_BOOTSTRAP="$("$CLUSTER" env | sed -n 's/^KAFKA_CLUSTER_BOOTSTRAP=//p')"
GATEWAY_PROPS="$("$CLUSTER" client-properties gateway)"

cat > "$WORK/tributary.toml" <<EOF
[[topics]]
name = "$TOPIC"
partitions = $PARTITIONS
key_field = "user_id"
role = "source"
value_format = "json"
EOF
# env NAME: the TRIBUTARY_KAFKA__* settings of one target, one per line (the broker's: only its
# address; the cluster's: those of `cluster.sh client-env USER`).
target_env() {
  case "$1" in
    broker) echo "TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS=$BROKER" ;;
    cluster-*) "$CLUSTER" client-env "${1#cluster-}" ;;
  esac
}
with_env() { local t="$1"; shift; (set -a; eval "$(target_env "$t" | sed "s/=\(.*\)/='\1'/")"; exec "$@"); }

declare -A URL
start_gateway() { # target, user
  local port; port="$(free_port)"
  local env_name="$1"; [ "$1" = broker ] || env_name="cluster-$2"
  (cd "$WORK" && with_env "$env_name" "$BIN" --config tributary.toml gateway --listen "127.0.0.1:$port") \
    > "$WORK/gateway-$1.log" 2>&1 < /dev/null &
  PIDS+=("$!")
  URL[$1]="http://127.0.0.1:$port"
  local deadline=$((SECONDS + 60))
  until curl -fsS -m 2 -o /dev/null "${URL[$1]}/api/v1/health" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { tail -n 20 "$WORK/gateway-$1.log" >&2; die "the gateway on $1 is not healthy after 60 s"; }
    sleep 0.2
  done
}
(cd "$WORK" && with_env broker "$BIN" --config tributary.toml topics apply) >&2 || die "topics apply on the broker failed"
(cd "$WORK" && with_env cluster-admin "$BIN" --config tributary.toml topics apply) >&2 || die "topics apply on the cluster failed"
start_gateway broker
start_gateway cluster gateway
log "gateways: broker ${URL[broker]}, cluster ${URL[cluster]} (as user gateway); topic $TOPIC"

field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
ROWS=""
wrk_row() { # label, target, script, path suffix, connections, extra args
  local label="$1" target="$2" script="$3" path="$4" conns="$5"; shift 5
  log "$label on $target: $conns connections, $DURATION s"
  timeout $((DURATION + 60)) wrk -t2 -c"$conns" -d"${DURATION}s" --timeout 10s --latency -s "$HERE/$script" \
    "${URL[$target]}/api/v1/events/$TOPIC$path" -- "$NONCE-$target-${#ROWS}" "$KEYS" "$@" > "$WORK/wrk.txt" 2>&1 || true
  local r events
  r="$(grep '^BENCH_RESULT ' "$WORK/wrk.txt" | tail -n 1 || true)"
  [ -n "$r" ] || { cat "$WORK/wrk.txt" >&2; INVALID+=("$label on $target: no result"); return 0; }
  [ "$(field non2xx "$r")" = 0 ] || INVALID+=("$label on $target: $(field statuses "$r")")
  events="$(field rps "$r")"
  if [ $# -gt 0 ]; then
    [ "$(field accepted "$r")" = $(( $(field requests "$r") * $1 )) ] || INVALID+=("$label on $target: not every event accepted")
    events="$(awk -v r="$events" -v b="$1" 'BEGIN { print r * b }')"
  fi
  ROWS+="| $label | $target | $(printf '%.0f' "$events") | $(ms "$(field p50_us "$r")") | $(ms "$(field p99_us "$r")") | $(field statuses "$r") |"$'\n'
}
for target in broker cluster; do
  wrk_row "single events, $CONNECTIONS connections" "$target" post_event.lua "" "$CONNECTIONS"
done
for target in broker cluster; do
  wrk_row "batches of $BATCH, $BATCH_CONNECTIONS connections" "$target" post_batch.lua /batch "$BATCH_CONNECTIONS" "$BATCH"
done

PERF_ROWS=""
perf_row() { # target, then the connection arguments
  local target="$1"; shift
  log "kafka-producer-perf-test on $target: $PERF_RECORDS records"
  # shellcheck disable=SC2086 # PERF_PROPS is a list of key=value words
  timeout 600 "$KAFKA" tool kafka-producer-perf-test --topic "$TOPIC" --num-records "$PERF_RECORDS" \
    --throughput -1 --record-size 300 "$@" --command-property $PERF_PROPS > "$WORK/perf.txt" 2>&1 || true
  local line
  line="$(grep -E 'records sent, .* 50th' "$WORK/perf.txt" | tail -n 1 || true)"
  [ -n "$line" ] || { tail -n 20 "$WORK/perf.txt" >&2; INVALID+=("perf test on $target failed"); return 0; }
  PERF_ROWS+="$(awk -v t="$target" '{
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) == "records/sec") rps = $i
      if ($(i + 1) == "MB/sec),") mb = substr($i, 2)
      if ($(i + 2) == "50th,") p50 = $i
      if ($(i + 2) == "99th,") p99 = $i
    }
    printf "| %s | %.0f | %s | %s | %s |", t, rps, mb, p50, p99 }' <<<"$line")"$'\n'
}
perf_row broker --bootstrap-server "$BROKER"
perf_row cluster --bootstrap-server "$CLUSTER_BOOTSTRAP" --command-config "$GATEWAY_PROPS"

mkdir -p "$HERE/results"
REPORT="$HERE/results/cluster-$STAMP.md"
{
  echo "## Broker against cluster, $STAMP"
  echo
  echo "$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;"
  echo "tributary $(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown); topic $TOPIC ($PARTITIONS partitions)."
  echo
  echo "| load | target | events/s | p50 ms | p99 ms | statuses |"
  echo "|---|---|---:|---:|---:|---|"
  printf '%s' "$ROWS"
  echo
  echo "| kafka-producer-perf-test, 300-byte records | records/s | MB/s | p50 ms | p99 ms |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s' "$PERF_ROWS"
  echo
  if [ "${#INVALID[@]}" -eq 0 ]; then echo "Valid: every answer 2xx, every event accepted, both perf runs completed."
  else printf 'NOT VALID:\n'; printf -- '- %s\n' "${INVALID[@]}"; fi
} | tee "$REPORT"
log "report: $REPORT"
[ "${#INVALID[@]}" -eq 0 ]
