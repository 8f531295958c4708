#!/usr/bin/env bash
# A production-shaped Apache Kafka cluster on loopback, without Docker: three KRaft nodes (each
# broker and controller), clients on SASL_SSL with SCRAM-SHA-512 as on MSK's port 9096, TLS from
# a CA the script makes on first start, replication factor 3, min.insync.replicas=2, no unclean
# leader election, and ACLs (StandardAuthorizer, nothing allowed without one) that give each
# service's own SCRAM user only what it does.
#
#   cluster.sh start               make the CA, certificates and users once, start the three
#                                  nodes, wait until they answer, apply the ACLs
#   cluster.sh stop                stop the three nodes (SIGTERM, then SIGKILL)
#   cluster.sh status              exit 0 when every node answers, 3 otherwise
#   cluster.sh kill N              SIGKILL node N (1-3) at once (fault tests)
#   cluster.sh stop-node N         SIGTERM node N and wait until it is gone
#   cluster.sh start-node N        start node N again and wait until its port answers
#   cluster.sh pid N               print node N's pid
#   cluster.sh client-env USER     the TRIBUTARY_KAFKA__* settings of SCRAM user USER, one per line
#   cluster.sh client-properties USER
#                                  a Java client properties file for USER (path printed)
#   cluster.sh tool NAME [ARGS]    run a Kafka tool as the admin user, for example:
#                                  tool kafka-topics --list
#   cluster.sh env                 print the resolved settings
#
# Users (SCRAM-SHA-512; passwords made on first start, kept under the state directory, mode 600):
#   admin      super user: `tributary topics apply`, `gen`'s direct writes, the tools
#   gateway    writes events.*, reads events.*, aggregates.* and reference.* (latest, streams),
#              DescribeConfigs on them (health reads min.insync.replicas)
#   registry   owns _schemas
#   processor  reads events.* and reference.*, writes aggregates.* and events.dlq, its group
#              and transactional ids tributary-processor*; `tributary dlq` (replay writes
#              events.*, group and transactional ids tributary-dlq-replay*)
#   sink       reads aggregates.* and events.*, writes events.dlq, its group tributary-sink*
#   connect    the Connect worker's topics _tributary-connect-*, its groups, its transactional
#              ids (tributary-connect*, and connect-cluster-tributary-connect* for the leader),
#              reads aggregates.* and events.*, writes events.dlq
#
# Settings (environment):
#   TRIBUTARY_CACHE           cache root                     (default ~/.cache/tributary)
#   KAFKA_CLUSTER_PORT        node 1's client port; nodes 2 and 3 use the next two
#                             (default 29092); inter-broker ports are +100, controllers +200.
#                             Keep all nine below the ephemeral range (ip_local_port_range,
#                             32768-60999 by default): a port in it can be taken meanwhile
#                             as the local end of an outgoing connection, and a node started
#                             again on it fails with "Address already in use"
#   KAFKA_CLUSTER_STATE_DIR   data, logs, TLS files, users   (default $TRIBUTARY_CACHE/state/cluster-$KAFKA_CLUSTER_PORT)
#   KAFKA_HEAP                JVM heap per node              (default 512m)
set -euo pipefail

CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
BASE="${KAFKA_CLUSTER_PORT:-29092}"
STATE="${KAFKA_CLUSTER_STATE_DIR:-$CACHE/state/cluster-$BASE}"
HEAP="${KAFKA_HEAP:-512m}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODES="1 2 3"
USERS="admin gateway registry processor sink connect"
TLS="$STATE/tls"
# The nodes' certificate subject: the principal the controllers and brokers know each other by.
NODE_DN="CN=tributary-broker"
# Raised when apply_acls changes, so a cluster made before gets the new ACLs on its next start.
ACL_VERSION=5

log() { printf 'kafka cluster: %s\n' "$*" >&2; }
# shellcheck source=../lib/process.sh
. "$HERE/../lib/process.sh"

eval "$("$HERE/kafka.sh" env | sed -n 's/^KAFKA_HOME=/HOME_DIR=/p')"
LIBS="$HOME_DIR/libs"

client_port() { echo $((BASE + $1 - 1)); }
internal_port() { echo $((BASE + 100 + $1 - 1)); }
controller_port() { echo $((BASE + 200 + $1 - 1)); }
bootstrap() { echo "127.0.0.1:$(client_port 1),127.0.0.1:$(client_port 2),127.0.0.1:$(client_port 3)"; }
node_dir() { echo "$STATE/node-$1"; }
pidfile() { echo "$(node_dir "$1")/kafka.pid"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
password() { cat "$STATE/users/$1.password"; }
store_password() { cat "$TLS/store.password"; }

# The CA, one certificate for the three nodes (127.0.0.1 and localhost), Java key and trust
# stores; made once and reused.
make_tls() {
  [ -f "$TLS/.complete" ] && return 0
  command -v openssl >/dev/null || { log "openssl is required to make the cluster's certificates"; exit 1; }
  command -v keytool >/dev/null || { log "keytool (a JDK) is required to make the cluster's key stores"; exit 1; }
  rm -rf "$TLS"
  mkdir -p "$TLS"
  chmod 700 "$TLS"
  openssl rand -hex 16 > "$TLS/store.password"
  local pass ext
  pass="$(store_password)"
  ext="$TLS/node.ext"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > "$ext"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Tributary local cluster CA" \
      -keyout "$TLS/ca.key" -out "$TLS/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/$NODE_DN" -keyout "$TLS/node.key" -out "$TLS/node.csr"
    openssl x509 -req -days 825 -in "$TLS/node.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
      -CAcreateserial -extfile "$ext" -out "$TLS/node.pem"
    openssl pkcs12 -export -name node -in "$TLS/node.pem" -inkey "$TLS/node.key" \
      -certfile "$TLS/ca.pem" -passout "pass:$pass" -out "$TLS/node.p12"
    keytool -importcert -noprompt -alias ca -file "$TLS/ca.pem" -storetype PKCS12 \
      -keystore "$TLS/truststore.p12" -storepass "$pass"
  } > "$TLS/make.log" 2>&1 || { log "making the certificates failed; see $TLS/make.log"; exit 1; }
  chmod 600 "$TLS"/*.key "$TLS"/*.p12 "$TLS/store.password"
  touch "$TLS/.complete"
  log "made a CA and the nodes' certificate in $TLS (clients trust $TLS/ca.pem)"
}

make_users() {
  mkdir -p "$STATE/users"
  chmod 700 "$STATE/users"
  local u
  for u in $USERS; do
    [ -s "$STATE/users/$u.password" ] || (umask 077 && openssl rand -hex 16 > "$STATE/users/$u.password")
  done
}

voters() {
  local n out=""
  for n in $NODES; do out="$out${out:+,}$n@127.0.0.1:$(controller_port "$n")"; done
  echo "$out"
}

write_config() {
  local n="$1" dir pass
  dir="$(node_dir "$n")"
  pass="$(store_password)"
  mkdir -p "$dir/data" "$dir/logs"
  (umask 077 && cat > "$dir/server.properties" <<EOF
# Written by deploy/kafka/cluster.sh: node $n of three, each broker and KRaft controller.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=CLIENT://127.0.0.1:$(client_port "$n"),INTERNAL://127.0.0.1:$(internal_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=CLIENT://127.0.0.1:$(client_port "$n"),INTERNAL://127.0.0.1:$(internal_port "$n")
listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SASL_SSL,CONTROLLER:SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
# Clients and brokers: SCRAM-SHA-512 over TLS, as on MSK's port 9096.
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(password admin)";
# Controllers: mutual TLS (SCRAM credentials live in the metadata the controllers serve).
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS/node.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS/truststore.p12
ssl.truststore.password=$pass
ssl.endpoint.identification.algorithm=https
# Least privilege: nothing is allowed without an ACL (cluster.sh apply_acls).
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:$NODE_DN
log.dirs=$dir/data
# Durability as in production: three replicas, two in sync for acks=all, no unclean election.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=12
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.partitions=1
log.retention.hours=168
offsets.retention.minutes=20160
log.segment.bytes=268435456
EOF
  )
}

format_node() {
  local n="$1" dir cluster_id="$2" scram=() u
  dir="$(node_dir "$n")"
  [ -f "$dir/data/meta.properties" ] && return 0
  for u in $USERS; do scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(password "$u")]"); done
  java -Dlog4j2.configurationFile="$HOME_DIR/config/tools-log4j2.properties" -cp "$LIBS/*" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" --ignore-formatted \
    "${scram[@]}" > "$dir/logs/format.out" 2>&1 \
    || { log "formatting node $n failed; see $dir/logs/format.out"; exit 1; }
}

launch_node() {
  local n="$1" dir
  dir="$(node_dir "$n")"
  if pidfile_alive "$(pidfile "$n")"; then return 0; fi
  if port_open "$(client_port "$n")"; then
    log "port $(client_port "$n") is in use by another process; set KAFKA_CLUSTER_PORT or stop it"
    exit 1
  fi
  setsid nohup java -Xms256m -Xmx"$HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$dir/logs" \
    -Dlog4j2.configurationFile="$HOME_DIR/config/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
    > "$dir/logs/kafka.out" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$n")"
}

wait_port() {
  local n="$1" deadline=$((SECONDS + $2))
  while ! port_open "$(client_port "$n")"; do
    if ! pidfile_alive "$(pidfile "$n")"; then
      log "node $n exited during start; last lines of $(node_dir "$n")/logs/kafka.out:"
      tail -n 20 "$(node_dir "$n")/logs/kafka.out" >&2 || true
      exit 1
    fi
    [ $SECONDS -lt "$deadline" ] || { log "node $n not listening after $2 s; see $(node_dir "$n")/logs"; exit 1; }
    sleep 0.2
  done
}

# A Java client properties file for SCRAM user $1.
client_properties() {
  local u="$1" file="$STATE/users/$1.properties"
  [ -s "$STATE/users/$u.password" ] || { log "no user '$u'; users: $USERS"; exit 2; }
  (umask 077 && cat > "$file" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$u" password="$(password "$u")";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
EOF
  )
  echo "$file"
}

tool() {
  local name="$1"; shift
  "$HERE/kafka.sh" tool "$name" --bootstrap-server "$(bootstrap)" \
    --command-config "$(client_properties admin)" "$@"
}

wait_ready() {
  local deadline=$((SECONDS + $1))
  until tool kafka-topics --list >/dev/null 2>&1; do
    [ $SECONDS -lt "$deadline" ] || { log "not answering after $1 s; see $STATE/node-*/logs"; exit 1; }
    sleep 1
  done
}

# acl USER OPERATION... -- RESOURCE ARGS: allow USER the operations on the resource.
acl() {
  local user="$1" ops=() ; shift
  while [ "$1" != "--" ]; do ops+=(--operation "$1"); shift; done
  shift
  "$HERE/kafka.sh" tool kafka-acls --bootstrap-server "$(bootstrap)" \
    --command-config "$(client_properties admin)" --add --force \
    --allow-principal "User:$user" "${ops[@]}" "$@" >/dev/null
}

# The least each service needs (docs/operations.md, "The cluster").
apply_acls() {
  [ "$(cat "$STATE/.acls" 2>/dev/null)" = "$ACL_VERSION" ] && return 0
  local prefixed=(--resource-pattern-type prefixed)
  # DescribeConfigs: health reads min.insync.replicas to say why a partition takes no writes.
  acl gateway Write Read Describe DescribeConfigs -- --topic events. "${prefixed[@]}"
  acl gateway Read Describe DescribeConfigs -- --topic aggregates. "${prefixed[@]}"
  acl gateway Read Describe DescribeConfigs -- --topic reference. "${prefixed[@]}"
  # Readers that assign partitions themselves still name the group tributary-reader, and
  # librdkafka looks its coordinator up: every service that reads needs it.
  local u
  for u in gateway registry processor sink; do acl "$u" Read -- --group tributary-reader; done
  acl registry Read Write Describe Create DescribeConfigs -- --topic _schemas
  acl registry Read -- --group tributary-registry "${prefixed[@]}"
  acl processor Read Describe -- --topic events. "${prefixed[@]}"
  acl processor Read Describe -- --topic reference. "${prefixed[@]}"
  acl processor Write Describe -- --topic aggregates. "${prefixed[@]}"
  acl processor Write Describe -- --topic events.dlq
  acl processor Read -- --group tributary-processor "${prefixed[@]}"
  acl processor Write Describe -- --transactional-id tributary-processor "${prefixed[@]}"
  # `tributary dlq replay` as the processor: its dead letters back to their source topics, in
  # transactions of the replay group (tributary-dlq-replay-<reason>[-<source topic>]).
  acl processor Write -- --topic events. "${prefixed[@]}"
  acl processor Read -- --group tributary-dlq-replay "${prefixed[@]}"
  acl processor Write Describe -- --transactional-id tributary-dlq-replay "${prefixed[@]}"
  acl sink Read Describe -- --topic aggregates. "${prefixed[@]}"
  acl sink Read Describe -- --topic events. "${prefixed[@]}"
  acl sink Write Describe -- --topic events.dlq
  acl sink Read -- --group tributary-sink "${prefixed[@]}"
  # The Connect worker (deploy/connect): its internal topics, its group and the sink connector's
  # (connect-<name>), its transactional ids (exactly-once source support), the sink's topics,
  # and the dead-letter topic its errors go to.
  acl connect All -- --topic _tributary-connect- "${prefixed[@]}"
  acl connect Read -- --group tributary-connect "${prefixed[@]}"
  acl connect Read -- --group connect- "${prefixed[@]}"
  acl connect Write Describe -- --transactional-id tributary-connect "${prefixed[@]}"
  # With exactly.once.source.support=enabled the leader writes the config topic in transactions
  # of its own, id connect-cluster-<group.id>: without this the worker logs
  # TransactionalIdAuthorizationException and cannot store a connector.
  acl connect Write Describe -- --transactional-id connect-cluster-tributary-connect "${prefixed[@]}"
  acl connect IdempotentWrite -- --cluster
  acl connect Read Describe -- --topic aggregates. "${prefixed[@]}"
  acl connect Read Describe -- --topic events. "${prefixed[@]}"
  acl connect Write -- --topic events.dlq
  echo "$ACL_VERSION" > "$STATE/.acls"
  log "ACLs applied: each service's user may do only what it does (cluster.sh header)"
}

start() {
  "$HERE/kafka.sh" install
  mkdir -p "$STATE"
  make_tls
  make_users
  local n cluster_id
  if [ -s "$STATE/cluster.id" ]; then
    cluster_id="$(cat "$STATE/cluster.id")"
  else
    cluster_id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    echo "$cluster_id" > "$STATE/cluster.id"
  fi
  for n in $NODES; do write_config "$n"; format_node "$n" "$cluster_id"; done
  log "starting three nodes on 127.0.0.1:$(client_port 1)-$(client_port 3) (SASL_SSL, SCRAM-SHA-512; state in $STATE)"
  for n in $NODES; do launch_node "$n"; done
  for n in $NODES; do wait_port "$n" 120; done
  wait_ready 120
  apply_acls
  log "ready: bootstrap $(bootstrap), CA $TLS/ca.pem; settings of a service: cluster.sh client-env USER"
}

stop() {
  # All at once: a node stopped after the others waits for a quorum that is gone.
  local n
  for n in $NODES; do (stop_pidfile "$(pidfile "$n")" 60 "kafka node $n" || true) & done
  wait
  log "stopped"
}

status() {
  local n down=0
  for n in $NODES; do
    if pidfile_alive "$(pidfile "$n")" && port_open "$(client_port "$n")"; then
      echo "kafka node $n: running (pid $(cat "$(pidfile "$n")")) on 127.0.0.1:$(client_port "$n")"
    else
      echo "kafka node $n: not running"
      down=1
    fi
  done
  [ "$down" = 0 ] || return 3
}

node_arg() {
  case "${1:-}" in 1|2|3) echo "$1" ;; *) log "a node number (1, 2 or 3) is required"; exit 2 ;; esac
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill)
    n="$(node_arg "${1:-}")"
    if pidfile_alive "$(pidfile "$n")"; then kill -KILL "$(cat "$(pidfile "$n")")"; fi
    while pidfile_alive "$(pidfile "$n")"; do sleep 0.1; done
    rm -f "$(pidfile "$n")" ;;
  stop-node) n="$(node_arg "${1:-}")"; stop_pidfile "$(pidfile "$n")" 60 "kafka node $n" || true ;;
  start-node) n="$(node_arg "${1:-}")"; launch_node "$n"; wait_port "$n" 120 ;;
  pid) n="$(node_arg "${1:-}")"; cat "$(pidfile "$n")" ;;
  client-env)
    u="${1:?usage: cluster.sh client-env USER}"
    [ -s "$STATE/users/$u.password" ] || { log "no user '$u' (start the cluster first); users: $USERS"; exit 2; }
    printf 'TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS=%s\nTRIBUTARY_KAFKA__SECURITY_PROTOCOL=sasl_ssl\nTRIBUTARY_KAFKA__SASL_MECHANISM=SCRAM-SHA-512\nTRIBUTARY_KAFKA__SASL_USERNAME=%s\nTRIBUTARY_KAFKA__SASL_PASSWORD=%s\nTRIBUTARY_KAFKA__SSL_CA_LOCATION=%s\n' \
      "$(bootstrap)" "$u" "$(password "$u")" "$TLS/ca.pem" ;;
  client-properties) client_properties "${1:?usage: cluster.sh client-properties USER}" ;;
  tool) name="${1:?usage: cluster.sh tool NAME [ARGS]}"; shift; tool "$name" "$@" ;;
  env)
    printf 'KAFKA_CLUSTER_BOOTSTRAP=%s\nKAFKA_CLUSTER_STATE_DIR=%s\nKAFKA_CLUSTER_CA=%s\n' \
      "$(bootstrap)" "$STATE" "$TLS/ca.pem" ;;
  *) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
