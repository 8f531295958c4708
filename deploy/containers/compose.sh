#!/usr/bin/env bash
# docker-compose.yml under podman: podman-compose (from the project's virtualenv,
# ~/.cache/tributary/venv, deploy/containers/requirements.txt) with deploy/containers/podman.yml
# on top, and podman's settings from deploy/containers/containers.conf (runc, explicit limits).
# Build the images first with deploy/containers/images.sh.
#
#   compose.sh up        start the stack in order and wait until every service is healthy:
#                        kafka, then topics (until it exits 0), then the rest
#   compose.sh health    run every running container's health check once; exit 1 if one fails
#   compose.sh down      stop and remove the containers (down -v: and the volumes)
#   compose.sh ARGS...   any other podman-compose command, for example: ps, logs gateway
#
# Podman 4.3 has no systemd here to run health checks on a timer, and podman-compose ignores
# service_healthy conditions with podman before 4.6: `up` does the waiting itself. The ports of
# docker-compose.yml's variables must be free; `up` refuses to start when one is taken.
#
# Settings (environment): COMPOSE_PROJECT_NAME (default tributary), the port variables of
# docker-compose.yml, TRIBUTARY_CACHE (default ~/.cache/tributary), UP_TIMEOUT (seconds a
# service may take to become healthy, default 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
PROJECT="${COMPOSE_PROJECT_NAME:-tributary}"
UP_TIMEOUT="${UP_TIMEOUT:-180}"
export CONTAINERS_CONF="$ROOT/deploy/containers/containers.conf"
# No pod: a pod owns its network namespace, and every service here uses the host's.
COMPOSE=("$CACHE/venv/bin/podman-compose" --project-name "$PROJECT" --in-pod false
  -f "$ROOT/docker-compose.yml" -f "$ROOT/deploy/containers/podman.yml")
# The services after kafka and topics, in the order depends_on gives.
SERVICES=(registry gateway processor sink connect prometheus)

log() { printf 'compose: %s\n' "$*" >&2; }

[ -x "${COMPOSE[0]}" ] || { log "podman-compose is not in $CACHE/venv: run scripts/bootstrap.sh"; exit 1; }
command -v podman >/dev/null || { log "podman is not installed: run scripts/bootstrap.sh"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Every port the stack binds on the host, by what binds it.
ports() {
  local kafka="${TRIBUTARY_KAFKA_PORT:-9092}"
  printf '%s\n' "kafka $kafka" "kafka-controller $((kafka + 1))" \
    "kafka-metrics ${TRIBUTARY_KAFKA_METRICS_PORT:-9404}" "gateway ${TRIBUTARY_GATEWAY_PORT:-8080}" \
    "registry ${TRIBUTARY_REGISTRY_PORT:-8081}" "processor ${TRIBUTARY_PROCESSOR_PORT:-8082}" \
    "connect ${TRIBUTARY_CONNECT_PORT:-8083}" "sink ${TRIBUTARY_SINK_PORT:-8084}" \
    "prometheus ${TRIBUTARY_PROMETHEUS_PORT:-9090}"
}

container() { echo "${PROJECT}_$1_1"; }

# Waits until the service's health check passes (or, for topics, until it exited 0).
wait_healthy() {
  local name deadline=$((SECONDS + UP_TIMEOUT))
  name="$(container "$1")"
  until podman healthcheck run "$name" >/dev/null 2>&1; do
    if [ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ] \
      && [ "$(podman inspect -f '{{.RestartCount}}' "$name" 2>/dev/null || echo 0)" -ge 3 ]; then
      log "$1 keeps exiting; its last lines:"; podman logs --tail 20 "$name" >&2 || true; return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$1 not healthy after ${UP_TIMEOUT}s; its last lines:"; podman logs --tail 20 "$name" >&2 || true; return 1
    fi
    sleep 1
  done
  log "$1 healthy"
}

wait_exited() {
  local name code deadline=$((SECONDS + UP_TIMEOUT))
  name="$(container "$1")"
  while [ "$(podman inspect -f '{{.State.Status}}' "$name" 2>/dev/null)" != exited ]; do
    if [ $SECONDS -ge $deadline ]; then log "$1 still running after ${UP_TIMEOUT}s"; return 1; fi
    sleep 1
  done
  code="$(podman inspect -f '{{.State.ExitCode}}' "$name")"
  if [ "$code" != 0 ]; then
    log "$1 exited $code; its last lines:"; podman logs --tail 20 "$name" >&2 || true; return 1
  fi
  log "$1 done"
}

up() {
  local busy=() what port
  while read -r what port; do
    port_open "$port" && busy+=("$port ($what)")
  done < <(ports)
  if [ ${#busy[@]} -gt 0 ]; then
    log "refusing to start: with host networking the stack needs these ports, already in use: ${busy[*]}"
    log "stop what holds them (make down stops \`make up\`), or move the stack with the TRIBUTARY_*_PORT variables of docker-compose.yml"
    exit 1
  fi
  "${COMPOSE[@]}" up -d --no-build kafka >&2
  wait_healthy kafka
  "${COMPOSE[@]}" up -d --no-build --no-deps topics >&2
  wait_exited topics
  local s
  for s in "${SERVICES[@]}"; do
    "${COMPOSE[@]}" up -d --no-build --no-deps "$s" >&2
  done
  for s in "${SERVICES[@]}"; do wait_healthy "$s"; done
}

health() {
  local s name rc=0
  for s in kafka "${SERVICES[@]}"; do
    name="$(container "$s")"
    if podman healthcheck run "$name" >/dev/null 2>&1; then
      echo "$s: healthy"
    else
      echo "$s: NOT healthy"; rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
  up) shift; [ $# -eq 0 ] || { log "up takes no arguments here (it starts every service but grafana)"; exit 2; }; up ;;
  health) health ;;
  "") sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  *) exec "${COMPOSE[@]}" "$@" ;;
esac
