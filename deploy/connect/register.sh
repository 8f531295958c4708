#!/usr/bin/env bash
# Registers (or updates) a connector on a Kafka Connect cluster through its REST API, or only
# validates its configuration.
#
#   register.sh [FILE]              PUT /connectors/NAME/config (creates or updates: idempotent),
#                                   then print the connector's status
#   register.sh --validate [FILE]   PUT /connector-plugins/CLASS/config/validate and print each
#                                   error as 'FIELD: MESSAGE' on stdout; exit 1 when there is one
#
# FILE (default: snowflake-sink.json beside this script) is {"name": ..., "config": {...}}. It is
# sent as it is: secrets stay ${env:NAME} references that each worker resolves from its own
# environment through its EnvVarConfigProvider, so they never pass through this script, the REST
# call or the config topic.
#
# Settings (environment):
#   CONNECT_URL        the REST API of any worker of the cluster   (default http://127.0.0.1:8083)
#   CONNECT_WAIT_SECS  how long to wait for the REST API to answer (default 120)
#   CONNECT_CURL_OPTS  extra curl options, e.g. TLS or basic auth for the REST API
#
# Exit codes: 0 done (or no validation error), 1 validation errors or a failed connector/task,
# 2 usage, an unreadable file or an unexpected answer from the worker.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
URL="${CONNECT_URL:-http://127.0.0.1:8083}"
URL="${URL%/}"
WAIT_SECS="${CONNECT_WAIT_SECS:-120}"
read -r -a CURL_OPTS <<< "${CONNECT_CURL_OPTS:-}"

log() { printf 'register: %s\n' "$*" >&2; }
die() { log "$*"; exit 2; }

mode=register
file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --validate) mode=validate ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$file" ] || die "one connector file at a time"; file="$1" ;;
  esac
  shift
done
file="${file:-$HERE/snowflake-sink.json}"

command -v curl >/dev/null || die "curl is required"
command -v jq >/dev/null || die "jq is required (apt-get install jq)"
[ -r "$file" ] || die "cannot read $file"
jq -e 'type == "object" and (.name | type == "string") and (.config | type == "object")' "$file" >/dev/null 2>&1 \
  || die "$file is not {\"name\": ..., \"config\": {...}}"
name="$(jq -r '.name' "$file")"
class="$(jq -r '.config["connector.class"] // empty' "$file")"
[ -n "$class" ] || die "$file has no config.connector.class"
# Connect wants every value as a string, and the name inside the config equal to the path's.
config="$(jq -c --arg name "$name" '.config | map_values(tostring) + {name: $name}' "$file")"

# curl with the body on stdout and the HTTP status on the last line.
call() { # method, path, [body]
  local args=(-sS -m 120 -X "$1" -H 'Content-Type: application/json' -H 'Accept: application/json'
    -w '\n%{http_code}' "${CURL_OPTS[@]}")
  [ $# -lt 3 ] || args+=(--data-binary "$3")
  curl "${args[@]}" "$URL$2" || printf '\n000'
}
status_of() { tail -n 1 <<< "$1"; }
body_of() { sed '$d' <<< "$1"; }

wait_for_worker() {
  local deadline=$((SECONDS + WAIT_SECS)) answer
  while :; do
    answer="$(call GET /connectors 2>/dev/null)"
    [ "$(status_of "$answer")" = 200 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      die "the Connect REST API at $URL did not answer GET /connectors with 200 within ${WAIT_SECS}s"
    fi
    sleep 1
  done
}

validate() {
  local answer code body
  answer="$(call PUT "/connector-plugins/$class/config/validate" "$config")"
  code="$(status_of "$answer")"
  body="$(body_of "$answer")"
  if [ "$code" != 200 ]; then
    die "validation of $class failed: HTTP $code $(jq -r '.message // empty' <<< "$body" 2>/dev/null || true)"
  fi
  # Keys the plugin and Connect do not define are ignored by Connect: often a typo, or a key of
  # another generation of the connector.
  local unknown
  unknown="$(jq -r --argjson cfg "$config" '
      ([.configs[].definition.name] | map({(.): true}) | add) as $known
      | [$cfg | keys[] | select($known[.] | not) | select(test("^(key|value|header)\\.converter\\.") | not)]
      | join(", ")' <<< "$body")"
  [ -z "$unknown" ] || log "not defined by $class (ignored by Connect): $unknown"
  # One line per message; Connect's messages often start with the field name already.
  jq -r '.configs[] | .value | select((.errors | length) > 0)
         | .name as $n | .errors[] | gsub("[\r\n]+"; " ")
         | if startswith($n + ":") then . else "\($n): \(.)" end' <<< "$body"
  local count
  count="$(jq -r '.error_count' <<< "$body")"
  if [ "$count" = 0 ]; then
    log "$name: no validation error ($class)"
  else
    log "$name: $count field(s) with errors ($class)"
    return 1
  fi
}

register() {
  local answer code body
  answer="$(call PUT "/connectors/$name/config" "$config")"
  code="$(status_of "$answer")"
  body="$(body_of "$answer")"
  case "$code" in
    201) log "$name: created" ;;
    200) log "$name: updated" ;;
    400)
      # Connect validates before it stores anything: the connector was not created or changed.
      log "$name: rejected, nothing was registered: $(jq -r '.message // .' <<< "$body" 2>/dev/null || printf '%s' "$body")"
      return 1 ;;
    *) die "PUT /connectors/$name/config answered HTTP $code: $(jq -r '.message // .' <<< "$body" 2>/dev/null || printf '%s' "$body")" ;;
  esac
  # The connector starts asynchronously; report its state once it has one (up to 30 s).
  local deadline=$((SECONDS + 30)) state=""
  while :; do
    answer="$(call GET "/connectors/$name/status")"
    if [ "$(status_of "$answer")" = 200 ]; then
      body="$(body_of "$answer")"
      state="$(jq -r '.connector.state' <<< "$body")"
      if [ "$state" != UNASSIGNED ] && [ "$(jq '.tasks | length' <<< "$body")" -gt 0 ] || [ "$state" = FAILED ]; then
        break
      fi
    fi
    [ $SECONDS -lt $deadline ] || break
    sleep 1
  done
  if [ -z "$state" ]; then
    log "$name: no status yet; ask GET $URL/connectors/$name/status"
    return 0
  fi
  jq -r '"connector \(.name): \(.connector.state) on \(.connector.worker_id)",
         (.connector.trace // empty | split("\n")[0] | "  \(.)"),
         (.tasks[] | "task \(.id): \(.state) on \(.worker_id)", (.trace // empty | split("\n")[0] | "  \(.)"))' <<< "$body"
  if jq -e '.connector.state == "FAILED" or any(.tasks[]; .state == "FAILED")' <<< "$body" >/dev/null; then
    return 1
  fi
}

wait_for_worker
if [ "$mode" = validate ]; then validate; else register; fi
