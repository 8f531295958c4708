#!/usr/bin/env bash
# A Kafka Connect worker (distributed mode, one node) on loopback with the Snowflake sink plugin,
# without Docker, against a local broker (deploy/kafka/kafka.sh).
#
# The worker and the plugin are resolved from Maven Central with Maven into a cache outside the
# repository; the worker's generated configuration, logs and pid file live in a state directory,
# also outside it. Production workers use connect-distributed.properties beside this script.
#
#   connect.sh install          resolve the Connect jars and the Snowflake plugin (idempotent)
#   connect.sh start            install if needed, write the local worker config, start, wait
#                               until the REST API answers
#   connect.sh run              the same in the foreground, warnings on stdout (containers)
#   connect.sh stop             SIGTERM, then SIGKILL after a grace period
#   connect.sh status           exit 0 and say so when the REST API answers, 3 when it does not
#   connect.sh wait [SECS]      wait until the REST API answers
#   connect.sh validate [FILE]  validate a connector config (default snowflake-sink.json) against
#                               the running worker: register.sh --validate
#   connect.sh env              print the resolved settings
#
# Settings (environment):
#   TRIBUTARY_CACHE              cache root                  (default ~/.cache/tributary)
#   CONNECT_VERSION              Apache Kafka Connect        (default 4.3.1)
#   SNOWFLAKE_CONNECTOR_VERSION  Snowflake sink connector    (default 4.1.0)
#   KAFKA_BOOTSTRAP              broker the worker joins     (default 127.0.0.1:9092)
#   CONNECT_PORT                 REST API port on 127.0.0.1  (default 8083)
#   CONNECT_STATE_DIR            config, logs and pid        (default $TRIBUTARY_CACHE/state/connect-$CONNECT_PORT)
#   CONNECT_GROUP_ID             worker group                (default tributary-connect-local)
#   CONNECT_TOPIC_PREFIX         prefix of the config, offset and status topics (default _tributary-connect-local)
#   CONNECT_HEAP                 JVM heap                    (default 512m)
#   CONNECT_OPTS                 extra JVM options for the worker (default none)
#   CONNECT_CLIENT_PROPERTIES    a Java client properties file (security.protocol, sasl.*, ssl.*)
#                                for the worker and, prefixed, its producer., consumer. and admin.
#                                clients: `deploy/kafka/cluster.sh client-properties connect`
#                                (default none: plaintext)
#   CONNECT_REPLICATION_FACTOR   replication factor of the internal topics (default 1; 3 on the
#                                cluster)
set -euo pipefail

CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
VERSION="${CONNECT_VERSION:-4.3.1}"
SF_VERSION="${SNOWFLAKE_CONNECTOR_VERSION:-4.1.0}"
BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
PORT="${CONNECT_PORT:-8083}"
STATE="${CONNECT_STATE_DIR:-$CACHE/state/connect-$PORT}"
GROUP_ID="${CONNECT_GROUP_ID:-tributary-connect-local}"
TOPIC_PREFIX="${CONNECT_TOPIC_PREFIX:-_tributary-connect-local}"
HEAP="${CONNECT_HEAP:-512m}"
CLIENT_PROPERTIES="${CONNECT_CLIENT_PROPERTIES:-}"
REPLICATION="${CONNECT_REPLICATION_FACTOR:-1}"
read -r -a JVM_OPTS <<< "${CONNECT_OPTS:-}"
HOME_DIR="$CACHE/connect-$VERSION"
LIBS="$HOME_DIR/libs"
# One plugin.path entry per connector version, holding one plugin directory: Connect gives the
# directory its own class loader, and versions cached side by side never meet on one path.
PLUGIN_PATH="$HOME_DIR/plugins/snowflake-$SF_VERSION"
PLUGIN_DIR="$PLUGIN_PATH/snowflake-kafka-connector"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
URL="http://127.0.0.1:$PORT"

log() { printf 'connect: %s\n' "$*" >&2; }
# shellcheck source=../lib/process.sh
. "$HERE/../lib/process.sh"

# Runs one profile of pom.xml: copies what it resolves into a directory, replacing it whole.
resolve() { # profile, destination, what (for messages)
  local work
  work="$(mktemp -d)"
  sed -e "s/@CONNECT_VERSION@/$VERSION/g" -e "s/@SNOWFLAKE_CONNECTOR_VERSION@/$SF_VERSION/g" \
    -e "s/@BCPKIX_FIPS_VERSION@/${BCPKIX_FIPS_VERSION:-unset}/g" "$HERE/pom.xml" > "$work/pom.xml"
  rm -rf "$2"
  mkdir -p "$2"
  # -U: a version that was missing at an earlier try is looked up again, not taken from the
  # failure Maven cached for a day.
  if ! (cd "$work" && mvn -B -q -U -Dstyle.color=never -P "$1" dependency:copy-dependencies \
      -DoutputDirectory="$2" -DincludeScope=runtime > "$work/mvn.log" 2>&1); then
    # Maven's first error line names the artifact that failed and why.
    sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" | grep -m 1 -o 'Failed to execute goal.*' | cut -c1-400 >&2 || true
    log "maven could not resolve $3"
    rm -rf "$work" "$2"
    return 1
  fi
  rm -rf "$work"
}

# The Bouncy Castle FIPS version the connector was built against, from its own POM, where it is a
# `provided` dependency: the published jar needs it beside it to read a private key.
bcpkix_fips_version() {
  local work version
  work="$(mktemp -d)"
  if ! (cd "$work" && mvn -B -q -U -Dstyle.color=never dependency:copy \
      -Dartifact="com.snowflake:snowflake-kafka-connector:$SF_VERSION:pom" -DoutputDirectory="$work" \
      > "$work/mvn.log" 2>&1); then
    sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" | grep -m 1 -o 'Failed to execute goal.*' | cut -c1-400 >&2 || true
    log "maven could not resolve com.snowflake:snowflake-kafka-connector:$SF_VERSION"
    rm -rf "$work"
    return 1
  fi
  version="$(grep -A 2 '<artifactId>bcpkix-fips</artifactId>' "$work/snowflake-kafka-connector-$SF_VERSION.pom" \
    | sed -n 's/.*<version>\(.*\)<\/version>.*/\1/p' | head -n 1)"
  rm -rf "$work"
  [ -n "$version" ] || { log "the POM of snowflake-kafka-connector $SF_VERSION names no bcpkix-fips version"; return 1; }
  printf '%s\n' "$version"
}

install() {
  command -v mvn >/dev/null || { log "maven (mvn) is required to fetch Kafka Connect; install it (apt-get install maven)"; exit 1; }
  command -v java >/dev/null || { log "a JDK 17+ is required to run Kafka Connect; install it (apt-get install openjdk-17-jre-headless)"; exit 1; }
  if [ ! -f "$HOME_DIR/.complete" ]; then
    log "resolving Apache Kafka Connect $VERSION from Maven Central into $HOME_DIR"
    resolve worker "$LIBS" "Apache Kafka Connect $VERSION" || exit 1
    mkdir -p "$HOME_DIR/config"
    write_log_config
    touch "$HOME_DIR/.complete"
  fi
  if [ ! -f "$PLUGIN_PATH/.complete" ]; then
    log "resolving com.snowflake:snowflake-kafka-connector:$SF_VERSION from Maven Central into $PLUGIN_DIR"
    if ! BCPKIX_FIPS_VERSION="$(bcpkix_fips_version)" \
        || ! resolve snowflake "$PLUGIN_DIR" "com.snowflake:snowflake-kafka-connector:$SF_VERSION"; then
      rm -rf "$PLUGIN_PATH"
      log "pick a version Maven can resolve with SNOWFLAKE_CONNECTOR_VERSION (see docs/deployment.md)"
      exit 1
    fi
    touch "$PLUGIN_PATH/.complete"
  fi
}

write_log_config() {
  cat > "$HOME_DIR/config/log4j2.properties" <<'EOF'
# Connect worker logging: everything at INFO into connect.log under the state directory,
# warnings to stdout (connect.out).
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %X{connector.context}%m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn

appender.connect.type = RollingFile
appender.connect.name = CONNECT
appender.connect.fileName = ${sys:kafka.logs.dir}/connect.log
appender.connect.filePattern = ${sys:kafka.logs.dir}/connect.log.%i
appender.connect.layout.type = PatternLayout
appender.connect.layout.pattern = [%d] %p %X{connector.context}%m (%c)%n
appender.connect.policies.type = Policies
appender.connect.policies.size.type = SizeBasedTriggeringPolicy
appender.connect.policies.size.size = 100MB
appender.connect.strategy.type = DefaultRolloverStrategy
appender.connect.strategy.max = 5

rootLogger.level = info
rootLogger.appenderRefs = console, connect
rootLogger.appenderRef.console.ref = STDOUT
rootLogger.appenderRef.connect.ref = CONNECT
# The reflections scan of a plugin jar is loud at INFO and says nothing useful.
logger.reflections.name = org.reflections
logger.reflections.level = error
EOF
}

pid_alive() { pidfile_alive "$STATE/connect.pid"; }

rest_up() {
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$URL/connectors" 2>/dev/null || true)" = 200 ]
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The local variant of connect-distributed.properties: loopback, plaintext and one replica
# unless CONNECT_CLIENT_PROPERTIES and CONNECT_REPLICATION_FACTOR say otherwise.
write_config() {
  mkdir -p "$STATE/logs"
  (umask 077 && write_worker_config > "$STATE/connect-distributed.properties")
}

# Connect does not hand its own client settings to the clients it makes for connectors: the
# security settings go in once as they are and once per prefix.
client_security() {
  [ -n "$CLIENT_PROPERTIES" ] || return 0
  [ -r "$CLIENT_PROPERTIES" ] || { log "cannot read CONNECT_CLIENT_PROPERTIES=$CLIENT_PROPERTIES"; exit 1; }
  local prefix
  echo "# Client security from $CLIENT_PROPERTIES"
  for prefix in "" producer. consumer. admin.; do
    grep -E '^(security|sasl|ssl)[.]' "$CLIENT_PROPERTIES" | sed "s/^/$prefix/"
  done
}

write_worker_config() {
  cat <<EOF
# Written by deploy/connect/connect.sh: one local worker against $BOOTSTRAP. The production
# worker configuration is deploy/connect/connect-distributed.properties.
bootstrap.servers=$BOOTSTRAP
group.id=$GROUP_ID
config.storage.topic=$TOPIC_PREFIX-configs
offset.storage.topic=$TOPIC_PREFIX-offsets
status.storage.topic=$TOPIC_PREFIX-status
# One local broker: internal topics cannot have more than one replica (three on the cluster).
config.storage.replication.factor=$REPLICATION
offset.storage.replication.factor=$REPLICATION
status.storage.replication.factor=$REPLICATION
offset.storage.partitions=5
status.storage.partitions=1
exactly.once.source.support=enabled
listeners=http://127.0.0.1:$PORT
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$PORT
plugin.path=$PLUGIN_PATH
# The Snowflake jar has no ServiceLoader manifests: scan, and only scan.
plugin.discovery=only_scan
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
consumer.isolation.level=read_committed
offset.flush.interval.ms=10000
# Secrets in connector configs are \${env:NAME} references, resolved in this worker's process.
config.providers=env
config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
config.providers.env.param.allowlist.pattern=^(SNOWFLAKE|SCHEMA_REGISTRY)_[A-Z0-9_]+\$
EOF
  client_security
}

start() {
  install
  if pid_alive; then
    log "already running (pid $(cat "$STATE/connect.pid")) on $URL"
    wait_ready 60
    return 0
  fi
  if port_open "$PORT"; then
    log "port $PORT is already in use by another process; set CONNECT_PORT or stop it"
    exit 1
  fi
  write_config
  log "starting Kafka Connect $VERSION with Snowflake connector $SF_VERSION on $URL against $BOOTSTRAP (state in $STATE)"
  # setsid: the worker outlives the shell that started it.
  setsid nohup java -Xms128m -Xmx"$HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$STATE/logs" \
    -Dlog4j2.configurationFile="$HOME_DIR/config/log4j2.properties" "${JVM_OPTS[@]}" \
    -cp "$LIBS/*" org.apache.kafka.connect.cli.ConnectDistributed "$STATE/connect-distributed.properties" \
    > "$STATE/logs/connect.out" 2>&1 < /dev/null &
  echo $! > "$STATE/connect.pid"
  wait_ready 180
}

# In the foreground, against what `install` put in the cache (a container has no Maven): the
# entry point of the Connect service in docker-compose.yml.
run() {
  if [ ! -f "$HOME_DIR/.complete" ] || [ ! -f "$PLUGIN_PATH/.complete" ]; then
    install
  fi
  if port_open "$PORT"; then
    log "port $PORT is already in use by another process; set CONNECT_PORT or stop it"
    exit 1
  fi
  write_config
  log "running Kafka Connect $VERSION with Snowflake connector $SF_VERSION on $URL against $BOOTSTRAP (state in $STATE)"
  exec java -Xms128m -Xmx"$HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$STATE/logs" \
    -Dlog4j2.configurationFile="$HOME_DIR/config/log4j2.properties" "${JVM_OPTS[@]}" \
    -cp "$LIBS/*" org.apache.kafka.connect.cli.ConnectDistributed "$STATE/connect-distributed.properties"
}

wait_ready() {
  local deadline=$((SECONDS + ${1:-180}))
  # /connectors answers 200 only once the worker has joined its group and read the config topic.
  until rest_up; do
    if [ -f "$STATE/connect.pid" ] && ! pid_alive; then
      log "the worker exited during start; last lines of $STATE/logs/connect.out:"
      tail -n 20 "$STATE/logs/connect.out" >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then log "not ready after ${1:-180}s; see $STATE/logs"; exit 1; fi
    sleep 0.5
  done
  log "ready on $URL"
}

stop() {
  if stop_pidfile "$STATE/connect.pid" 60 connect; then
    log "stopped (port $PORT)"
  else
    log "not running (port $PORT)"
  fi
}

status() {
  if pid_alive && rest_up; then
    echo "connect: running (pid $(cat "$STATE/connect.pid")) on $URL, state in $STATE"
  elif rest_up; then
    echo "connect: a worker not started by this script answers on $URL"
  else
    echo "connect: not running on $URL"
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
  status) status ;;
  wait) wait_ready "${1:-180}" ;;
  validate) CONNECT_URL="$URL" exec "$HERE/register.sh" --validate "$@" ;;
  env)
    printf 'CONNECT_VERSION=%s\nSNOWFLAKE_CONNECTOR_VERSION=%s\nCONNECT_HOME=%s\nCONNECT_PLUGIN_PATH=%s\nKAFKA_BOOTSTRAP=%s\nCONNECT_URL=%s\nCONNECT_STATE_DIR=%s\n' \
      "$VERSION" "$SF_VERSION" "$HOME_DIR" "$PLUGIN_PATH" "$BOOTSTRAP" "$URL" "$STATE" ;;
  *) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
