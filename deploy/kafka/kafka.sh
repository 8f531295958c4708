#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, single node) on loopback, without Docker.
#
# The broker and its tools are resolved from Maven Central with Maven into a cache outside the
# repository; data, logs and the pid file live in a state directory, also outside it.
#
#   kafka.sh install            resolve the Kafka jars and write the tool wrappers (idempotent)
#   kafka.sh start              install if needed, format storage once, start, wait until ready
#   kafka.sh run                the same in the foreground, logging to stdout (containers)
#   kafka.sh stop               SIGTERM, then SIGKILL after a grace period
#   kafka.sh kill               SIGKILL at once (fault tests)
#   kafka.sh status             exit 0 and say so when the broker answers, 3 when it does not
#   kafka.sh pid                print the broker's pid (exit 3 when it is not running), for
#                               fault tests that freeze it with SIGSTOP
#   kafka.sh wait [SECS]        wait until the broker answers
#   kafka.sh tool NAME [ARGS]   run a Kafka tool, for example: tool kafka-topics --list
#   kafka.sh env                print the resolved settings
#
# Settings (environment):
#   TRIBUTARY_CACHE        cache root                      (default ~/.cache/tributary)
#   KAFKA_VERSION          Apache Kafka version            (default 4.3.1)
#   KAFKA_PORT             client listener port            (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port           (default KAFKA_PORT + 1)
#   KAFKA_STATE_DIR        data, logs and pid              (default $TRIBUTARY_CACHE/state/kafka-$KAFKA_PORT)
#   KAFKA_HEAP             JVM heap                        (default 1g)
#   KAFKA_RETENTION_CHECK_MS  how often the broker deletes segments past their retention
#                          (default 300000, Kafka's own; the test broker checks every 5 s, so a
#                          test that writes records older than retention fails every run)
#   KAFKA_METRICS_PORT     serve the broker's metrics for Prometheus on 127.0.0.1:PORT/metrics
#                          with the Prometheus JMX exporter agent (default: none)
set -euo pipefail

CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
VERSION="${KAFKA_VERSION:-4.3.1}"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
STATE="${KAFKA_STATE_DIR:-$CACHE/state/kafka-$PORT}"
HEAP="${KAFKA_HEAP:-1g}"
METRICS_PORT="${KAFKA_METRICS_PORT:-}"
RETENTION_CHECK_MS="${KAFKA_RETENTION_CHECK_MS:-300000}"
JMX_EXPORTER_VERSION=1.0.1
JMX_EXPORTER_JAR="$CACHE/jmx_prometheus_javaagent-$JMX_EXPORTER_VERSION.jar"
HOME_DIR="$CACHE/kafka-$VERSION"
LIBS="$HOME_DIR/libs"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'kafka: %s\n' "$*" >&2; }
# shellcheck source=../lib/process.sh
. "$HERE/../lib/process.sh"

# name of a tool -> its main class in the Kafka jars
tool_class() {
  case "$1" in
    kafka-topics) echo org.apache.kafka.tools.TopicCommand ;;
    kafka-console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    kafka-producer-perf-test) echo org.apache.kafka.tools.ProducerPerformance ;;
    kafka-consumer-perf-test) echo org.apache.kafka.tools.ConsumerPerformance ;;
    kafka-consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    kafka-transactions) echo org.apache.kafka.tools.TransactionsCommand ;;
    kafka-configs) echo kafka.admin.ConfigCommand ;;
    kafka-storage) echo kafka.tools.StorageTool ;;
    kafka-e2e-latency) echo org.apache.kafka.tools.EndToEndLatency ;;
    kafka-acls) echo org.apache.kafka.tools.AclCommand ;;
    *) return 1 ;;
  esac
}
TOOLS="kafka-topics kafka-console-consumer kafka-console-producer kafka-producer-perf-test
kafka-consumer-perf-test kafka-consumer-groups kafka-get-offsets kafka-transactions kafka-configs
kafka-storage kafka-e2e-latency kafka-acls"

# A wrapper script in $HOME_DIR/bin for tool $1.
write_wrapper() {
  cat > "$HOME_DIR/bin/$1" <<EOF
#!/usr/bin/env bash
# Apache Kafka $VERSION '$1', run from the jars Tributary resolved from Maven Central.
exec java -Xmx512m -Dlog4j2.configurationFile="$HOME_DIR/config/tools-log4j2.properties" \\
  -cp "$LIBS/*" $(tool_class "$1") "\$@"
EOF
  chmod +x "$HOME_DIR/bin/$1"
}

install() {
  if [ -f "$HOME_DIR/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "maven (mvn) is required to fetch Kafka; install it (apt-get install maven)"; exit 1; }
  command -v java >/dev/null || { log "a JDK 17+ is required to run Kafka; install it (apt-get install openjdk-17-jre-headless)"; exit 1; }
  log "resolving Apache Kafka $VERSION from Maven Central into $HOME_DIR"
  local work
  work="$(mktemp -d)"
  sed "s/@KAFKA_VERSION@/$VERSION/g" "$HERE/pom.xml" > "$work/pom.xml"
  rm -rf "$LIBS"
  mkdir -p "$LIBS" "$HOME_DIR/bin" "$HOME_DIR/config"
  (cd "$work" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime) \
    || { log "maven could not resolve Kafka $VERSION"; rm -rf "$work"; exit 1; }
  rm -rf "$work"
  cp "$HERE/log4j2.properties" "$HOME_DIR/config/log4j2.properties"
  local t
  for t in $TOOLS; do write_wrapper "$t"; done
  cp "$HERE/tools-log4j2.properties" "$HOME_DIR/config/tools-log4j2.properties"
  touch "$HOME_DIR/.complete"
  log "installed; tools are in $HOME_DIR/bin"
}

# The Prometheus JMX exporter agent (Maven Central has it up to 1.0.1), for KAFKA_METRICS_PORT.
install_jmx_exporter() {
  if [ -f "$JMX_EXPORTER_JAR" ]; then return 0; fi
  log "resolving the Prometheus JMX exporter $JMX_EXPORTER_VERSION from Maven Central"
  local work
  work="$(mktemp -d)"
  mkdir -p "$CACHE"
  (cd "$work" && mvn -B -q -Dstyle.color=never dependency:copy \
    -Dartifact="io.prometheus.jmx:jmx_prometheus_javaagent:$JMX_EXPORTER_VERSION" -DoutputDirectory="$work" >/dev/null) \
    || { log "maven could not resolve the JMX exporter"; rm -rf "$work"; exit 1; }
  mv "$work/jmx_prometheus_javaagent-$JMX_EXPORTER_VERSION.jar" "$JMX_EXPORTER_JAR"
  rm -rf "$work"
}

pid_alive() { pidfile_alive "$STATE/kafka.pid"; }

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_config() {
  mkdir -p "$STATE/data" "$STATE/logs"
  cat > "$STATE/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh: one node that is both broker and KRaft controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$STATE/data
# One node: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=12
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Topics are created by 'tributary topics apply' with the catalog's partition counts.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.partitions=1
log.retention.hours=168
log.retention.check.interval.ms=$RETENTION_CHECK_MS
# Committed offsets (the processor's checkpoints) outlive the longest supported stop, the
# input's 7-day retention, twice over (docs/operations.md); Kafka's default is 7 days.
offsets.retention.minutes=20160
log.segment.bytes=268435456
EOF
}

# Writes the configuration, formats the storage once and fills BROKER with the broker's command
# line (with the metrics agent when KAFKA_METRICS_PORT is set), for start and run.
prepare() {
  install
  if port_open "$PORT"; then
    log "port $PORT is already in use by another process; set KAFKA_PORT or stop it"
    exit 1
  fi
  write_config
  if [ ! -f "$STATE/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java -Dlog4j2.configurationFile="$HOME_DIR/config/tools-log4j2.properties" -cp "$LIBS/*" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$STATE/server.properties" --ignore-formatted \
      > "$STATE/logs/format.out" 2>&1 || { log "formatting storage failed; see $STATE/logs/format.out"; exit 1; }
  fi
  # The agent goes on the broker's own command line only: in a shared KAFKA_OPTS every Kafka
  # tool would try to bind the same port.
  local agent=()
  if [ -n "$METRICS_PORT" ]; then
    install_jmx_exporter
    if port_open "$METRICS_PORT"; then
      log "port $METRICS_PORT (KAFKA_METRICS_PORT) is already in use by another process"
      exit 1
    fi
    agent=("-javaagent:$JMX_EXPORTER_JAR=127.0.0.1:$METRICS_PORT:$HERE/jmx-exporter.yml")
  fi
  BROKER=(java -Xms256m -Xmx"$HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true -Dkafka.logs.dir="$STATE/logs" "${agent[@]}"
    -Dlog4j2.configurationFile="$HOME_DIR/config/log4j2.properties"
    -cp "$LIBS/*" kafka.Kafka "$STATE/server.properties")
  log "starting Apache Kafka $VERSION on 127.0.0.1:$PORT (state in $STATE)${METRICS_PORT:+, metrics on http://127.0.0.1:$METRICS_PORT/metrics}"
}

start() {
  install
  if pid_alive; then
    log "already running (pid $(cat "$STATE/kafka.pid")) on 127.0.0.1:$PORT"
    wait_ready 60
    return 0
  fi
  prepare
  # setsid: the broker outlives the shell that started it (make up returns while it runs).
  setsid nohup "${BROKER[@]}" > "$STATE/logs/kafka.out" 2>&1 < /dev/null &
  echo $! > "$STATE/kafka.pid"
  wait_ready 120
}

# In the foreground (warnings on standard output, server.log in the state directory): the
# Kafka image's entry point.
run() {
  prepare
  exec "${BROKER[@]}"
}

wait_ready() {
  local deadline=$((SECONDS + ${1:-120}))
  while ! port_open "$PORT"; do
    if ! pid_alive; then
      log "the broker exited during start; last lines of $STATE/logs/kafka.out:"
      tail -n 20 "$STATE/logs/kafka.out" >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then log "not ready after ${1:-120}s; see $STATE/logs"; exit 1; fi
    sleep 0.2
  done
  # The port opens before the broker has caught up with the controller; ask it for metadata.
  until "$HOME_DIR/bin/kafka-topics" --bootstrap-server "127.0.0.1:$PORT" --list >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "not answering after ${1:-120}s; see $STATE/logs"; exit 1; fi
    sleep 0.5
  done
  log "ready on 127.0.0.1:$PORT"
}

stop() {
  if stop_pidfile "$STATE/kafka.pid" 60 kafka; then
    log "stopped (port $PORT)"
  else
    log "not running (port $PORT)"
  fi
}

kill9() {
  if pid_alive; then kill -KILL "$(cat "$STATE/kafka.pid")" 2>/dev/null || true; fi
  while pid_alive; do sleep 0.1; done
  rm -f "$STATE/kafka.pid"
}

status() {
  if pid_alive && port_open "$PORT"; then
    echo "kafka: running (pid $(cat "$STATE/kafka.pid")) on 127.0.0.1:$PORT, state in $STATE"
  elif port_open "$PORT"; then
    echo "kafka: a broker not started by this script answers on 127.0.0.1:$PORT"
  else
    echo "kafka: not running on 127.0.0.1:$PORT"
    return 3
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  install) install ;;
  start) start ;;
  run) run ;;
  stop) stop ;;
  kill) kill9 ;;
  status) status ;;
  pid) if pid_alive; then cat "$STATE/kafka.pid"; else log "not running (port $PORT)"; exit 3; fi ;;
  wait) wait_ready "${1:-120}" ;;
  tool)
    install
    name="${1:?usage: kafka.sh tool NAME [ARGS]}"; shift
    tool_class "$name" >/dev/null || { log "unknown tool '$name'; known: $(echo $TOOLS)"; exit 2; }
    # An install from before this tool was added has no wrapper for it yet.
    [ -x "$HOME_DIR/bin/$name" ] || write_wrapper "$name"
    exec "$HOME_DIR/bin/$name" "$@" ;;
  env)
    printf 'KAFKA_VERSION=%s\nKAFKA_HOME=%s\nKAFKA_PORT=%s\nKAFKA_CONTROLLER_PORT=%s\nKAFKA_STATE_DIR=%s\nKAFKA_METRICS_PORT=%s\n' \
      "$VERSION" "$HOME_DIR" "$PORT" "$CONTROLLER_PORT" "$STATE" "$METRICS_PORT" ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
