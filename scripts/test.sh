#!/usr/bin/env bash
# `make test`: every test of the workspace against a real Kafka broker, then the Python
# interoperability tests, the Kafka Connect validation test and the AWS infrastructure tests.
#
# Uses the broker named by TRIBUTARY_TEST_BOOTSTRAP, else one already answering on
# 127.0.0.1:9092 (for example from `make up`), else starts a throwaway broker on 127.0.0.1:19092
# and stops it afterwards. The cluster tests share a three-node SASL_SSL cluster on
# 127.0.0.1:26092-26094 that this script starts and stops (or the one TRIBUTARY_TEST_CLUSTER_PORT
# and TRIBUTARY_TEST_CLUSTER_STATE name), kept running for the confluent-kafka tests
# (tests/interop runs each on the broker and on the cluster) and the Kafka Connect worker's
# cluster run, which get the same two variables. Tests create their own randomly named topics, so a shared broker is
# safe. Extra arguments go to `cargo test` (for example `make test ARGS=...` is not needed:
# scripts/test.sh -p tributary-gateway).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
KAFKA="$ROOT/deploy/kafka/kafka.sh"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# What this script started, stopped on exit whatever happens.
state=""
cluster_state=""
cluster_pid=""
# Its nine ports (clients, +100 brokers, +200 controllers) are below Linux's ephemeral range
# (32768-60999): a node the tests kill and start again must find its ports free, and a port in
# that range can meanwhile be the local end of any outgoing connection (a restarted node then
# failed with "Address already in use").
CLUSTER_PORT=26092
cluster() { KAFKA_CLUSTER_PORT=$CLUSTER_PORT KAFKA_CLUSTER_STATE_DIR="$cluster_state" "$ROOT/deploy/kafka/cluster.sh" "$@"; }
cleanup() {
  if [ -n "$state" ]; then KAFKA_PORT=19092 KAFKA_STATE_DIR="$state" "$KAFKA" stop >/dev/null 2>&1 || true; rm -rf "$state"; fi
  if [ -n "$cluster_state" ]; then
    [ -z "$cluster_pid" ] || kill "$cluster_pid" 2>/dev/null || true
    cluster stop >/dev/null 2>&1 || true
    rm -rf "$cluster_state"
  fi
}
trap cleanup EXIT

if [ -z "${TRIBUTARY_TEST_BOOTSTRAP:-}" ]; then
  if port_open 9092; then
    TRIBUTARY_TEST_BOOTSTRAP=127.0.0.1:9092
    echo "test: using the broker already running on $TRIBUTARY_TEST_BOOTSTRAP"
  else
    state="$(mktemp -d /tmp/tributary-test-kafka.XXXXXX)"
    # Retention is checked every 5 s instead of 5 min: a test whose records are older than
    # the topic's retention then loses them every run, not once in a hundred.
    KAFKA_PORT=19092 KAFKA_STATE_DIR="$state" KAFKA_HEAP=768m KAFKA_RETENTION_CHECK_MS=5000 "$KAFKA" start
    TRIBUTARY_TEST_BOOTSTRAP=127.0.0.1:19092
  fi
fi
export TRIBUTARY_TEST_BOOTSTRAP
# Fault tests start brokers of their own; make sure the jars are there before the clock runs.
"$KAFKA" install

# The three-node SASL_SSL cluster the cluster tests share (crates/cli/tests/cluster.rs), started
# while the tests compile. Without it each of those tests starts a cluster of its own.
if [ -z "${TRIBUTARY_TEST_CLUSTER_PORT:-}" ]; then
  cluster_state="$(mktemp -d /tmp/tributary-test-cluster.XXXXXX)"
  cluster start > "$cluster_state.log" 2>&1 &
  cluster_pid=$!
fi

log="$(mktemp /tmp/tributary-test-log.XXXXXX)"
set +e
"$ROOT/scripts/cargo.sh" test --release --workspace --all-targets --no-run "$@" 2>&1 | tail -n 3
if [ -n "$cluster_pid" ]; then
  if wait "$cluster_pid"; then
    export TRIBUTARY_TEST_CLUSTER_PORT=$CLUSTER_PORT TRIBUTARY_TEST_CLUSTER_STATE="$cluster_state"
  else
    echo "test: the shared cluster did not start (the cluster tests start their own):"; tail -n 20 "$cluster_state.log"
  fi
  cluster_pid=""
  rm -f "$cluster_state.log"
fi
"$ROOT/scripts/cargo.sh" test --release --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
read -r passed failed < <(awk '/^test result: /{for(i=1;i<=NF;i++){if($(i+1) ~ /^passed;/) p+=$i; if($(i+1) ~ /^failed;/) f+=$i}} END{print p+0, f+0}' "$log")

# Interoperability: clients no one here wrote (confluent-kafka for Python) against the binary the
# tests above just built; then the monitoring (tests/monitoring: promtool, the dashboards, and a
# whole platform from `tributary up` scraped by a real Prometheus). Their virtualenv lives in the cache, made once per machine.
if [ $# -eq 0 ]; then
  # scripts/bootstrap.sh (`make test` runs it first) keeps it in step with tests/interop/requirements.txt.
  venv="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}/venv"
  if ! cmp -s "$ROOT/tests/interop/requirements.txt" "$venv/.requirements" 2>/dev/null || [ ! -x "$venv/bin/pytest" ]; then
    "$ROOT/scripts/bootstrap.sh"
  fi
  set +e
  TRIBUTARY_BIN="$CARGO_TARGET_DIR/release/tributary" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/interop" "$ROOT/tests/monitoring" 2>&1 | tee "$log"
  prc=${PIPESTATUS[0]}
  set -e
  py_passed=$( (grep -Eo '[0-9]+ passed' "$log" || true) | tail -n 1 | grep -Eo '[0-9]+' || true)
  py_failed=$( (grep -Eo '[0-9]+ (failed|error)' "$log" || true) | awk '{s+=$1} END{print s+0}')
  passed=$((passed + ${py_passed:-0}))
  failed=$((failed + ${py_failed:-0}))
  # pytest exits 5 when it collected nothing: that is a failure here, not a pass.
  [ "$prc" -eq 0 ] || rc=$((rc == 0 ? 1 : rc))

  # Kafka Connect with the Snowflake sink connector, both from Maven Central: the shipped
  # connector config must validate except for not reaching Snowflake (tests/connect).
  crc=0
  "$ROOT/tests/connect/test_connect.sh" > "$log" 2>&1 || crc=$?
  cat "$log"
  read -r c_passed c_failed < <(sed -n 's/^connect: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log") || true
  passed=$((passed + ${c_passed:-0}))
  # No summary line means the script died early: count that as a failure.
  failed=$((failed + ${c_failed:-1}))
  [ "$crc" -eq 0 ] || rc=$((rc == 0 ? 1 : rc))

  # Nothing after this needs the cluster: give its memory back to the infrastructure tests.
  if [ -n "$cluster_state" ]; then cluster stop >/dev/null 2>&1 || true; fi

  # The AWS infrastructure (infra/, a CDK app): type check, jest assertions on the synthesized
  # stacks, cdk synth, cfn-lint and checkov, all offline; no broker needed.
  irc=0
  "$ROOT/infra/test.sh" > "$log" 2>&1 || irc=$?
  cat "$log"
  read -r i_passed i_failed < <(sed -n 's/^infra: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log") || true
  passed=$((passed + ${i_passed:-0}))
  # No summary line means the script died early: count that as a failure.
  failed=$((failed + ${i_failed:-1}))
  [ "$irc" -eq 0 ] || rc=$((rc == 0 ? 1 : rc))

  # The containers (tests/containers/smoke.sh): the three images built with podman from the
  # Dockerfiles GitHub uses, docker-compose.yml up on ports of its own, events through to the
  # warehouse, every health check and scrape target, then all of it removed. Skipped, saying so,
  # where podman cannot run a container.
  krc=0
  "$ROOT/tests/containers/smoke.sh" > "$log" 2>&1 || krc=$?
  cat "$log"
  read -r k_passed k_failed < <(sed -n 's/^containers: \([0-9]*\) passed, \([0-9]*\) failed.*$/\1 \2/p' "$log") || true
  passed=$((passed + ${k_passed:-0}))
  # No summary line means the script died early: count that as a failure.
  failed=$((failed + ${k_failed:-1}))
  [ "$krc" -eq 0 ] || rc=$((rc == 0 ? 1 : rc))
fi
rm -f "$log"
echo
echo "${passed:-0} passed, ${failed:-0} failed"
if [ "$rc" -eq 0 ] && [ "${passed:-0}" -eq 0 ]; then
  echo "error: no test ran"; exit 1
fi
exit "$rc"
