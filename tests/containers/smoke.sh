#!/usr/bin/env bash
# The container path end to end, under podman: build the images (deploy/containers/images.sh),
# start docker-compose.yml (deploy/containers/compose.sh up), POST clickstream events to the
# gateway, see their window result on aggregates.clickstream.1m and the rows the sink loaded into
# the warehouse, check every service's health check and that Prometheus scrapes every target up,
# then remove every container and volume of the stack. Prints `containers: N passed, M failed`.
#
# The stack runs with host networking on ports of its own (28080-28084, 29090, 29092-29093,
# 29404, project tributary-smoke), so it meets neither `make up` nor the brokers of `make test`;
# it refuses to start when one of them is taken. Skipped, with the reason, where podman cannot
# run a container. Bounded: SMOKE_TIMEOUT seconds in all (default 1500; the first run builds the
# base image and the images, about 10 minutes; later runs reuse them).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TIMEOUT="${SMOKE_TIMEOUT:-1500}"
started=$SECONDS
passed=0
failed=0

export COMPOSE_PROJECT_NAME=tributary-smoke
export TRIBUTARY_KAFKA_PORT=29092 TRIBUTARY_KAFKA_METRICS_PORT=29404 TRIBUTARY_GATEWAY_PORT=28080 \
  TRIBUTARY_REGISTRY_PORT=28081 TRIBUTARY_PROCESSOR_PORT=28082 TRIBUTARY_CONNECT_PORT=28083 \
  TRIBUTARY_SINK_PORT=28084 TRIBUTARY_PROMETHEUS_PORT=29090
COMPOSE="$ROOT/deploy/containers/compose.sh"
GATEWAY="http://127.0.0.1:$TRIBUTARY_GATEWAY_PORT"
PROMETHEUS="http://127.0.0.1:$TRIBUTARY_PROMETHEUS_PORT"

say() { printf 'containers: %s\n' "$*"; }
pass() { passed=$((passed + 1)); say "ok: $*"; }
fail() { failed=$((failed + 1)); say "FAILED: $*"; }
summary() { say "$passed passed, $failed failed ($((SECONDS - started)) s)"; }
left() { echo $((TIMEOUT - (SECONDS - started))); }

# Where podman cannot run a container there is nothing to test: say why and skip.
if ! command -v podman >/dev/null 2>&1; then
  say "skipped: podman is not installed (scripts/bootstrap.sh installs it)"; summary; exit 0
fi

# Every run starts from no container of its own, and ends with none.
prom_config="$(mktemp /tmp/tributary-smoke-prometheus.XXXXXX.yml)"
cleanup() {
  "$COMPOSE" down -v -t 20 >/dev/null 2>&1 || true
  rm -f "$prom_config"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# 1. The base image, then whether podman can run a container at all here (the only reason to
# skip), then the images (cached layers make a later run quick), bounded by what time is left.
if ! "$ROOT/deploy/containers/images.sh" base > /tmp/tributary-smoke-build.log 2>&1; then
  tail -n 30 /tmp/tributary-smoke-build.log
  fail "the base image could not be made (log: /tmp/tributary-smoke-build.log)"; summary; exit 1
fi
if ! why="$(podman --runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    localhost/debian:bookworm-local true 2>&1)"; then
  say "skipped: podman cannot run a container here: $(tail -n 1 <<< "$why")"; summary; exit 0
fi
if timeout "$(left)" "$ROOT/deploy/containers/images.sh" build > /tmp/tributary-smoke-build.log 2>&1; then
  pass "images built ($((SECONDS - started)) s)"
else
  tail -n 30 /tmp/tributary-smoke-build.log
  fail "images did not build (log: /tmp/tributary-smoke-build.log)"; summary; exit 1
fi

# 2. The stack, on this test's ports: Prometheus gets the same scrape configuration as `make up`
# with these ports.
sed -e "s/127.0.0.1:8080/127.0.0.1:$TRIBUTARY_GATEWAY_PORT/" -e "s/127.0.0.1:8082/127.0.0.1:$TRIBUTARY_PROCESSOR_PORT/" \
  -e "s/127.0.0.1:8084/127.0.0.1:$TRIBUTARY_SINK_PORT/" -e "s/127.0.0.1:9404/127.0.0.1:$TRIBUTARY_KAFKA_METRICS_PORT/" \
  "$ROOT/deploy/monitoring/prometheus.yml" > "$prom_config"
chmod 644 "$prom_config"
export TRIBUTARY_PROMETHEUS_CONFIG="$prom_config"
"$COMPOSE" down -v -t 5 >/dev/null 2>&1 || true
t0=$SECONDS
if UP_TIMEOUT=$(( $(left) < 240 ? $(left) : 240 )) "$COMPOSE" up > /tmp/tributary-smoke-up.log 2>&1; then
  pass "stack up, every service healthy ($((SECONDS - t0)) s)"
else
  tail -n 40 /tmp/tributary-smoke-up.log
  fail "stack did not come up (log: /tmp/tributary-smoke-up.log)"; summary; exit 1
fi

# 3. Events: three in a minute three minutes ago, then one now for the same user (same
# partition), whose event time moves the partition's watermark past that minute's window end
# plus grace, so the window closes at once.
run="smoke-$(date +%s)-$$"
user="user-$run"
old="$(date -u -d '-3 minutes' +%Y-%m-%dT%H:%M:30Z)"
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
batch="["
for i in 1 2 3; do
  batch+="{\"event_id\":\"$run-$i\",\"timestamp\":\"$old\",\"event_type\":\"page_view\",\"user_id\":\"$user\",\"payload\":{\"url\":\"/smoke/$i\"}},"
done
batch+="{\"event_id\":\"$run-4\",\"timestamp\":\"$now\",\"event_type\":\"page_view\",\"user_id\":\"$user\",\"payload\":{\"url\":\"/smoke/4\"}}]"
answer="$(curl -s -m 30 -X POST "$GATEWAY/api/v1/events/events.clickstream/batch" -H 'content-type: application/json' -d "$batch")"
if [ "$(jq -r '.accepted' <<< "$answer" 2>/dev/null)" = 4 ]; then
  pass "gateway accepted 4 events"
else
  fail "gateway answered: $answer"
fi

# 4. The window result of the old minute, read committed from Kafka inside the broker's container.
kafka_ctr="${COMPOSE_PROJECT_NAME}_kafka_1"
deadline=$((SECONDS + 90))
found=""
while [ $SECONDS -lt $deadline ] && [ -z "$found" ]; do
  podman exec "$kafka_ctr" /opt/tributary/kafka-4.3.1/bin/kafka-console-consumer \
    --bootstrap-server "127.0.0.1:$TRIBUTARY_KAFKA_PORT" --topic aggregates.clickstream.1m --from-beginning \
    --isolation-level read_committed --formatter-property print.key=true --timeout-ms 15000 \
    > /tmp/tributary-smoke-window.log 2>&1
  # The values are Avro: -a, or grep only says that a binary file matches.
  found="$(grep -a -F "$user" /tmp/tributary-smoke-window.log | tr -cd '[:print:]\t\n' || true)"
done
if [ -n "$found" ]; then
  pass "window result on aggregates.clickstream.1m: $(head -c 300 <<< "$found")"
else
  fail "no window result for $user on aggregates.clickstream.1m after 90 s (last read: /tmp/tributary-smoke-window.log)"
fi

# 5. The warehouse rows the sink loaded: the four events and the window result. The sink flushes
# every buffer_flush_time_secs (60 s by default, kept here).
sink_ctr="${COMPOSE_PROJECT_NAME}_sink_1"
sql() { podman exec "$sink_ctr" tributary warehouse sql --json "$1" 2>/dev/null; }
deadline=$((SECONDS + 150))
events=0 windows=0
while [ $SECONDS -lt $deadline ]; do
  events="$(sql "SELECT count(*) AS n FROM raw.EVENTS_CLICKSTREAM WHERE RECORD_CONTENT->>'user_id' = '$user'" \
    | grep -oE '[0-9]+' | tail -n 1)"
  windows="$(sql "SELECT count(*) AS n FROM raw.AGGREGATES_CLICKSTREAM_1M WHERE CAST(RECORD_CONTENT AS VARCHAR) LIKE '%$user%'" \
    | grep -oE '[0-9]+' | tail -n 1)"
  [ "${events:-0}" -ge 4 ] && [ "${windows:-0}" -ge 1 ] && break
  sleep 3
done
if [ "${events:-0}" -eq 4 ]; then pass "warehouse: 4 event rows"; else fail "warehouse: ${events:-no} event rows for $user, expected 4"; fi
if [ "${windows:-0}" -ge 1 ]; then pass "warehouse: $windows window rows"; else fail "warehouse: no window row for $user"; fi

# 6. Every service's own health check, run once more now.
while read -r line; do
  case "$line" in
    *": healthy") pass "health: $line" ;;
    *) fail "health: $line" ;;
  esac
done < <("$COMPOSE" health 2>&1)

# 7. Prometheus scrapes every target of its configuration, and every one is up.
deadline=$((SECONDS + 60))
while :; do
  targets="$(curl -s -m 5 "$PROMETHEUS/api/v1/targets" | jq -r '.data.activeTargets[] | "\(.labels.job) \(.health)"' 2>/dev/null | sort)"
  jobs="$(grep -c . <<< "$targets")"
  [ "$jobs" -ge 4 ] && ! grep -qv ' up$' <<< "$targets" && break
  [ $SECONDS -ge $deadline ] && break
  sleep 3
done
for job in gateway processor sink kafka; do
  if grep -qx "$job up" <<< "$targets"; then pass "prometheus scrapes $job: up"; else fail "prometheus target $job: $(grep "^$job " <<< "$targets" || echo missing)"; fi
done

# 8. Teardown (the trap does it too) and nothing of the stack left.
"$COMPOSE" down -v -t 20 >/dev/null 2>&1
if [ -z "$(podman ps -a --filter "name=^${COMPOSE_PROJECT_NAME}_" --format '{{.Names}}')" ] \
  && [ -z "$(podman volume ls --filter "name=^${COMPOSE_PROJECT_NAME}_" --format '{{.Name}}')" ]; then
  pass "torn down: no container or volume of $COMPOSE_PROJECT_NAME left"
else
  fail "containers or volumes of $COMPOSE_PROJECT_NAME left behind"
fi
summary
[ "$failed" -eq 0 ]
