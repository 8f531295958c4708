#!/usr/bin/env bash
# Kafka Connect to Snowflake, checked as far as this machine can: a real Connect worker (from the
# Maven artifacts, deploy/connect/connect.sh) joins the broker named by TRIBUTARY_TEST_BOOTSTRAP
# (default 127.0.0.1:9092), must list the Snowflake plugin, and must validate the shipped
# deploy/connect/snowflake-sink.json with no error except those that come from not reaching
# Snowflake. Deliberately broken configurations must be reported, field by field.
#
# "Cannot reach Snowflake" means exactly this: the connector got through every check of the
# configuration, parsed the (throwaway, encrypted) private key, opened a JDBC login to the account
# URL and failed, which it reports as "Cannot connect to Snowflake" on snowflake.url.name,
# snowflake.user.name and snowflake.private.key (error 1001). Any other message, on any field,
# fails the test. The account URL points at a closed port on 127.0.0.1, so nothing leaves this
# machine.
#
# Settings (environment):
#   TRIBUTARY_TEST_BOOTSTRAP     broker (default 127.0.0.1:9092; when that is unset and nothing
#                                answers there, a throwaway broker is started and stopped)
#   TRIBUTARY_CONNECT_CONFIG     the connector file to check (default deploy/connect/snowflake-sink.json)
#   SNOWFLAKE_CONNECTOR_VERSION  connector version to install (default: connect.sh's; if Maven
#                                cannot resolve that, the newest one it serves here, see below)
#   TRIBUTARY_TEST_CLUSTER_PORT, TRIBUTARY_TEST_CLUSTER_STATE
#                                the three-node SASL_SSL cluster (deploy/kafka/cluster.sh) that
#                                `make test` shares: when given, a second worker then joins it as
#                                the SCRAM user `connect` (TLS trusting the cluster's CA, internal
#                                topics with three replicas) and the shipped configuration must
#                                validate there too; when not, that part is skipped, and says so
#
# The workers, their generated config and internal topics (_tributary-connect-test-<random>-*) are
# removed at the end. Prints 'connect: N passed, M failed' and exits non-zero on any failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONNECT="$ROOT/deploy/connect/connect.sh"
REGISTER="$ROOT/deploy/connect/register.sh"
KAFKA="$ROOT/deploy/kafka/kafka.sh"
BOOTSTRAP="${TRIBUTARY_TEST_BOOTSTRAP:-127.0.0.1:9092}"
CONFIG="${TRIBUTARY_CONNECT_CONFIG:-$ROOT/deploy/connect/snowflake-sink.json}"
# The newest snowflake-kafka-connector that this workplace's Maven Central serves (its metadata
# stops at 2.5.0; 3.x and 4.x answer 404 here). Used only when the configured version is missing.
FALLBACK_VERSION=2.5.0
V4_CLASS=com.snowflake.kafka.connector.SnowflakeStreamingSinkConnector
CLASSIC_CLASS=com.snowflake.kafka.connector.SnowflakeSinkConnector
REACH_FIELDS='snowflake.url.name|snowflake.user.name|snowflake.private.key'
START=$SECONDS

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
say() { printf 'connect: %s\n' "$*"; }
finish() {
  printf '\nconnect: %s passed, %s failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
  exit $?
}

for tool in curl jq openssl java mvn python3; do
  command -v "$tool" >/dev/null || { fail "$tool is required"; finish; }
done
[ -r "$CONFIG" ] || { fail "cannot read $CONFIG"; finish; }
broker_up() { local host="${1%%,*}"; (exec 3<>"/dev/tcp/${host%:*}/${host##*:}") 2>/dev/null; }
if ! broker_up "$BOOTSTRAP" && [ -n "${TRIBUTARY_TEST_BOOTSTRAP:-}" ]; then
  fail "no broker answers on $BOOTSTRAP"
  finish
fi

run_id="$(python3 -c 'import secrets; print(secrets.token_hex(5))')"
work="$(mktemp -d /tmp/tributary-connect-test.XXXXXX)"
own_broker=""
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export KAFKA_BOOTSTRAP="$BOOTSTRAP"
CONNECT_PORT="$(free_port)"
export CONNECT_PORT
export CONNECT_STATE_DIR="$work/state"
export CONNECT_GROUP_ID="_tributary-connect-test-$run_id"
export CONNECT_TOPIC_PREFIX="_tributary-connect-test-$run_id"
export CONNECT_HEAP=512m
# Belt and braces: the worker's JVM sends any plain HTTP(S) request (the connector's own version
# check, for one) to a closed port on loopback instead of the internet.
export CONNECT_OPTS="-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=9 -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=9"
export CONNECT_URL="http://127.0.0.1:$CONNECT_PORT"
export CONNECT_WAIT_SECS=30
CLUSTER_PORT="${TRIBUTARY_TEST_CLUSTER_PORT:-}"
CLUSTER_STATE="${TRIBUTARY_TEST_CLUSTER_STATE:-}"
cluster() { KAFKA_CLUSTER_PORT="$CLUSTER_PORT" KAFKA_CLUSTER_STATE_DIR="$CLUSTER_STATE" "$ROOT/deploy/kafka/cluster.sh" "$@"; }
on_cluster=""

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  "$CONNECT" stop >/dev/null 2>&1 || true
  if [ -n "$on_cluster" ]; then
    CONNECT_STATE_DIR="$work/cluster-state" CONNECT_PORT="$on_cluster" "$CONNECT" stop >/dev/null 2>&1 || true
    KAFKA_CLUSTER_PORT="$CLUSTER_PORT" KAFKA_CLUSTER_STATE_DIR="$CLUSTER_STATE" timeout 60 \
      "$ROOT/deploy/kafka/cluster.sh" tool kafka-topics --delete --topic "$CONNECT_TOPIC_PREFIX-.*" >/dev/null 2>&1 || true
  fi
  if [ -n "$own_broker" ]; then
    KAFKA_PORT="$own_broker" KAFKA_STATE_DIR="$work/kafka" "$KAFKA" stop >/dev/null 2>&1 || true
  else
    timeout 60 "$KAFKA" tool kafka-topics --bootstrap-server "$BOOTSTRAP" --delete \
      --topic "$CONNECT_TOPIC_PREFIX-.*" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
# The whole test is bounded: after 240 s (330 s with the cluster) a watchdog stops it; cleanup
# then stops the workers. The watchdog also ends by itself as soon as the test has.
test_pid=$$
limit=240
[ -z "$CLUSTER_PORT" ] || limit=330
( for _ in $(seq "$limit"); do sleep 1; kill -0 "$test_pid" 2>/dev/null || exit 0; done
  say "timed out after ${limit}s"; kill -TERM "$test_pid" ) 2>/dev/null &
watchdog=$!
trap 'kill "$watchdog" 2>/dev/null; cleanup' EXIT
trap 'fail "interrupted or timed out"; finish' TERM INT

# No broker named and none on the default address: a throwaway one, as scripts/test.sh does.
if ! broker_up "$BOOTSTRAP"; then
  own_broker="$(free_port)"
  say "no broker on $BOOTSTRAP; starting a throwaway one on 127.0.0.1:$own_broker"
  if ! KAFKA_PORT="$own_broker" KAFKA_STATE_DIR="$work/kafka" KAFKA_HEAP=512m "$KAFKA" start; then
    fail "could not start a throwaway broker"
    finish
  fi
  BOOTSTRAP="127.0.0.1:$own_broker"
  export KAFKA_BOOTSTRAP="$BOOTSTRAP"
fi

# --- Install: the configured connector version, else the newest one Maven serves here ----------
if [ -z "${SNOWFLAKE_CONNECTOR_VERSION:-}" ]; then
  if ! "$CONNECT" install 2> "$work/install.log"; then
    cat "$work/install.log"
    wanted="$("$CONNECT" env | sed -n 's/^SNOWFLAKE_CONNECTOR_VERSION=//p')"
    say "NOTE: snowflake-kafka-connector $wanted cannot be resolved from Maven Central here;"
    say "NOTE: checking with $FALLBACK_VERSION instead, the newest version served to this machine"
    export SNOWFLAKE_CONNECTOR_VERSION="$FALLBACK_VERSION"
  fi
fi
if "$CONNECT" install; then
  ok "install: Kafka Connect and snowflake-kafka-connector $("$CONNECT" env | sed -n 's/^SNOWFLAKE_CONNECTOR_VERSION=//p') resolved from Maven"
else
  fail "install: Maven could not resolve the worker or the plugin"
  finish
fi
sf_version="$("$CONNECT" env | sed -n 's/^SNOWFLAKE_CONNECTOR_VERSION=//p')"
connect_version="$("$CONNECT" env | sed -n 's/^CONNECT_VERSION=//p')"

# --- Throwaway credentials: well formed, worthless -----------------------------------------------
# An RSA key in encrypted PKCS#8 as Snowflake's key-pair authentication takes it, body only.
passphrase="$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
if ! openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key.pem" 2>/dev/null \
    || ! openssl pkcs8 -topk8 -v2 aes-256-cbc -passout "pass:$passphrase" -in "$work/key.pem" -out "$work/key.p8"; then
  fail "openssl could not make a throwaway RSA key"
  finish
fi
SNOWFLAKE_PRIVATE_KEY="$(grep -v -- '-----' "$work/key.p8" | tr -d '\n')"
export SNOWFLAKE_PRIVATE_KEY
export SNOWFLAKE_PRIVATE_KEY_PASSPHRASE="$passphrase"
# A closed port on loopback: the JDBC login is refused at once.
export SNOWFLAKE_URL="https://127.0.0.1:9"
export SNOWFLAKE_USER="TRIBUTARY_CONNECT_TEST"
export SNOWFLAKE_ROLE="TRIBUTARY_CONNECT_TEST_ROLE"
export SCHEMA_REGISTRY_URL="http://127.0.0.1:9"
export SCHEMA_REGISTRY_USER_INFO="tributary:not-a-password"

# --- Worker --------------------------------------------------------------------------------------
if "$CONNECT" start; then
  ok "worker: started against $BOOTSTRAP, REST API on $CONNECT_URL ($(( SECONDS - START ))s so far)"
else
  fail "worker: did not start; last lines of its log:"
  tail -n 30 "$CONNECT_STATE_DIR/logs/connect.out" 2>/dev/null
  finish
fi

root="$(curl -s -m 10 "$CONNECT_URL/")"
if [ "$(jq -r '.version // empty' <<< "$root" 2>/dev/null)" = "$connect_version" ]; then
  ok "worker: GET / reports Kafka Connect $connect_version"
else
  fail "worker: GET / answered '$root', expected version $connect_version"
fi

plugins="$(curl -s -m 10 "$CONNECT_URL/connector-plugins")"
say "connector plugins: $(jq -c '[.[] | "\(.class) \(.version)"]' <<< "$plugins" 2>/dev/null || printf '%s' "$plugins")"
installed_class="$(jq -r --arg v "$sf_version" \
  '[.[] | select(.type == "sink" and (.class | startswith("com.snowflake.kafka.connector.")) and .version == $v)][0].class // empty' \
  <<< "$plugins" 2>/dev/null)"
if [ -n "$installed_class" ]; then
  ok "plugins: $installed_class $sf_version is listed by GET /connector-plugins"
else
  fail "plugins: no Snowflake sink connector $sf_version in GET /connector-plugins"
  finish
fi

# --- The configuration under test ----------------------------------------------------------------
# Two changes that exist only here: a short JDBC login timeout, so a refused connection is
# reported in seconds rather than after the driver's minutes of retries; and, when only the
# classic connector could be installed, its class name and its switch to Snowpipe Streaming.
file_class="$(jq -r '.config["connector.class"] // empty' "$CONFIG" 2>/dev/null)"
jq '.config["snowflake.jdbc.map"] = "loginTimeout:5,maxHttpRetries:0"' "$CONFIG" > "$work/config.json" 2>/dev/null \
  || { fail "$CONFIG is not JSON"; finish; }
if [ "$file_class" != "$installed_class" ]; then
  if [ "$file_class" = "$V4_CLASS" ] && [ "$installed_class" = "$CLASSIC_CLASS" ]; then
    say "NOTE: $CONFIG is for the v4 connector ($V4_CLASS); validating it against the classic"
    say "NOTE: connector $sf_version, with connector.class=$CLASSIC_CLASS and"
    say "NOTE: snowflake.ingestion.method=SNOWPIPE_STREAMING; keys only v4 defines go unchecked"
    jq --arg c "$CLASSIC_CLASS" '.config["connector.class"] = $c | .config["snowflake.ingestion.method"] = "SNOWPIPE_STREAMING"' \
      "$work/config.json" > "$work/config.tmp" && mv "$work/config.tmp" "$work/config.json"
  else
    fail "config: $CONFIG names $file_class, but the worker has $installed_class"
  fi
fi

# Runs register.sh --validate on a file; sets $errors (one 'FIELD: MESSAGE' per line) and $vrc.
validate() {
  errors="$("$REGISTER" --validate "$1" 2> "$work/validate.err")"
  vrc=$?
  sed 's/^/      /' "$work/validate.err"
}
# Prints the lines of $errors that are not "cannot reach Snowflake".
not_reachability() {
  grep -v -E "^($REACH_FIELDS): (.*: )?Cannot connect to Snowflake$" <<< "$errors" | grep -v '^$'
}

t0=$SECONDS
validate "$work/config.json"
say "errors reported for the shipped configuration ($((SECONDS - t0))s):"
if [ -n "$errors" ]; then sed 's/^/      /' <<< "$errors"; else say "      (none)"; fi
others="$(not_reachability)"
if [ "$vrc" -eq 2 ]; then
  fail "shipped config: the validation request itself failed"
elif [ -n "$others" ]; then
  fail "shipped config: errors other than 'cannot reach Snowflake': $(tr '\n' ';' <<< "$others")"
elif [ -z "$errors" ]; then
  fail "shipped config: no error at all, so the connector never tried to log in to Snowflake"
else
  ok "shipped config: valid except that Snowflake cannot be reached ($(wc -l <<< "$errors") such errors)"
fi

# The worker resolved the ${env:...} references: a validation answer echoes resolved values and
# hides password fields.
answer="$(curl -s -m 60 -X PUT -H 'Content-Type: application/json' \
  --data-binary "$(jq -c '.config + {name: .name} | map_values(tostring)' "$work/config.json")" \
  "$CONNECT_URL/connector-plugins/$installed_class/config/validate")"
user_seen="$(jq -r '.configs[] | select(.value.name == "snowflake.user.name") | .value.value' <<< "$answer" 2>/dev/null)"
key_seen="$(jq -r '.configs[] | select(.value.name == "snowflake.private.key") | .value.value' <<< "$answer" 2>/dev/null)"
if [ "$user_seen" = "$SNOWFLAKE_USER" ] && [ "$key_seen" = "[hidden]" ]; then
  ok "secrets: \${env:...} references resolved by the worker's EnvVarConfigProvider; the key is shown as [hidden]"
else
  fail "secrets: snowflake.user.name came back as '$user_seen', snowflake.private.key as '$key_seen'"
fi

# --- Broken configurations must be reported on the field that is wrong ---------------------------
broken() { # label, field, jq filter applied to the configuration under test
  local label="$1" field="$2"
  jq "$3" "$work/config.json" > "$work/broken.json"
  validate "$work/broken.json"
  if [ -n "$errors" ]; then sed 's/^/      /' <<< "$errors"; fi
  if [ "$vrc" -eq 1 ] && grep -q -E "^$field: " <<< "$errors" && [ -n "$(not_reachability)" ]; then
    ok "broken config reported: $label"
  else
    fail "broken config not reported on $field: $label (exit $vrc)"
  fi
}
broken "snowflake.database.name missing" 'snowflake\.database\.name' 'del(.config["snowflake.database.name"])'
broken "snowflake.topic2table.map without a table" 'snowflake\.topic2table\.map' \
  '.config["snowflake.topic2table.map"] = "events.iot.sensors"'
broken "errors.tolerance=sometimes" 'errors\.tolerance' '.config["errors.tolerance"] = "sometimes"'
broken "a private key that is not a key" 'snowflake\.private\.key' \
  '.config["snowflake.private.key"] = "bm90LWEta2V5"'

# --- register.sh: Connect validates before it stores, so nothing may be registered here ---------
name="$(jq -r '.name' "$work/config.json")"
"$REGISTER" "$work/config.json" > "$work/register.out" 2>&1
rrc=$?
sed 's/^/      /' "$work/register.out"
listed="$(curl -s -m 10 "$CONNECT_URL/connectors" | jq -r --arg n "$name" 'index($n) // empty' 2>/dev/null)"
if [ "$rrc" -eq 1 ] && grep -q 'Cannot connect to Snowflake' "$work/register.out" && [ -z "$listed" ]; then
  ok "register.sh: refused with the validation errors, and $name was not created"
else
  fail "register.sh: exit $rrc, connector listed: '${listed:-no}'"
fi

# --- The same worker over SASL_SSL/SCRAM on the cluster, as the connect user ---------------------
# Only what differs there: the worker must join the cluster with the MSK settings (SCRAM user and
# password, the CA as its trust store, internal topics with three replicas and the names the
# connect user's ACLs allow), list the plugin and validate the shipped configuration as above.
if [ -z "$CLUSTER_PORT" ] || [ -z "$CLUSTER_STATE" ]; then
  say "SKIPPED the cluster run: TRIBUTARY_TEST_CLUSTER_PORT and TRIBUTARY_TEST_CLUSTER_STATE are not set (make test sets them)"
else
  "$CONNECT" stop >/dev/null 2>&1
  t0=$SECONDS
  on_cluster="$(free_port)"
  if (
    export KAFKA_BOOTSTRAP CONNECT_PORT="$on_cluster" CONNECT_STATE_DIR="$work/cluster-state"
    KAFKA_BOOTSTRAP="$(cluster env | sed -n 's/^KAFKA_CLUSTER_BOOTSTRAP=//p')"
    export CONNECT_URL="http://127.0.0.1:$on_cluster"
    # The connect user's ACLs: groups tributary-connect*, topics _tributary-connect-*.
    export CONNECT_GROUP_ID="tributary-connect-test-$run_id"
    export CONNECT_CLIENT_PROPERTIES CONNECT_REPLICATION_FACTOR=3
    CONNECT_CLIENT_PROPERTIES="$(cluster client-properties connect)"
    "$CONNECT" start > "$work/cluster-start.log" 2>&1 || { cat "$work/cluster-start.log"; exit 1; }
    # Any plugin listed proves nothing about the cluster; the worker answers /connectors only
    # once it has joined its group and read its config topic there.
    validate "$work/config.json"
    [ "$vrc" -eq 1 ] && [ -n "$errors" ] && [ -z "$(not_reachability)" ] \
      || { printf '      %s\n' "$errors"; exit 2; }
    # A refused ACL is logged, not fatal, for some of the worker's clients: none may be.
    ! grep -E 'AuthorizationException|Authentication failed|SSL handshake failed' "$CONNECT_STATE_DIR/logs/connect.out"
  ); then
    ok "cluster: a worker as SCRAM user connect over SASL_SSL joined $CLUSTER_PORT-$((CLUSTER_PORT + 2)) and validated the shipped config as above ($((SECONDS - t0))s)"
  else
    fail "cluster: the worker did not join the cluster as user connect, or validated differently; last lines of its log:"
    tail -n 30 "$work/cluster-state/logs/connect.out" 2>/dev/null
  fi
fi

say "took $((SECONDS - START))s"
finish
