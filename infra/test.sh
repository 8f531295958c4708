#!/usr/bin/env bash
# infra/test.sh: the AWS CDK app's tests, offline. Nothing here calls AWS.
#
#   1. npm ci                  the pinned toolchain from package-lock.json (npm's cache: ~/.npm)
#   2. tsc --noEmit            type-checks bin/, lib/ and test/
#   3. jest                    the assertions of test/*.test.ts, counted one by one
#   4. cdk synth               both stacks, with a dummy account, region and certificate; then the
#                              platform again with -c managedGrafana=true, which only adds resources
#                              (the Grafana workspace and its provisioning), linted too
#   5. cfn-lint                the synthesized templates (warnings count as failures)
#   6. checkov                 the same templates; accepted findings are skipped on the resource
#                              itself, with a reason (lib/checkov.ts), and listed below
#
# cfn-lint and checkov come from PyPI, pinned in requirements.txt, installed into a virtualenv
# at ${TRIBUTARY_CACHE:-~/.cache/tributary}/infra-venv, reinstalled when requirements.txt changes.
# Ends with one line `infra: N passed, M failed` (each stage and each jest test counts once) and
# exits non-zero when anything failed. Needs Node 20+ and Python 3 with venv.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
VENV="$CACHE/infra-venv"
WORK="$(mktemp -d /tmp/tributary-infra.XXXXXX)"
OUT="$WORK/cdk.out"
LOG="$WORK/log"
trap 'rm -rf "$WORK"' EXIT

# Offline and deterministic: no credentials, no instance metadata, no telemetry, notices or
# version checks; the account, region and certificate are fixed dummies.
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export CDK_DISABLE_CLI_TELEMETRY=true CDK_DISABLE_VERSION_CHECK=1
CONTEXT=(-c account=123456789012 -c region=us-east-1
  -c certificateArn=arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000)

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "infra: ok   $1"; }
ko() { failed=$((failed + 1)); echo "infra: FAIL $1"; }
# Runs a stage, quiet when it passes, showing its output when it fails.
stage() {
  local name="$1"; shift
  local start=$SECONDS
  if "$@" > "$LOG" 2>&1; then
    ok "$name ($((SECONDS - start))s)"
  else
    cat "$LOG"
    ko "$name ($((SECONDS - start))s)"
    return 1
  fi
}
finish() {
  echo
  echo "infra: $passed passed, $failed failed"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
  exit $?
}

command -v node > /dev/null || { echo "infra: node is required (Node 20+)"; ko "node"; finish; }

# 1. The toolchain. Without it nothing else can run: count the stages that could not.
if ! stage "npm ci" npm ci --no-audit --no-fund --loglevel=error; then
  for s in "tsc" "jest" "cdk synth" "cfn-lint" "checkov"; do ko "$s (not run: npm ci failed)"; done
  finish
fi

# 2. Types.
stage "tsc --noEmit" npx tsc --noEmit

# 3. Jest: every test counts; a run that ends without a summary counts as one failure.
start=$SECONDS
npx jest --ci 2>&1 | tee "$LOG"
jrc=${PIPESTATUS[0]}
summary="$(grep -E '^Tests: ' "$LOG" | tail -n 1)"
j_passed="$(sed -n 's/.* \([0-9][0-9]*\) passed.*/\1/p' <<< "$summary")"
j_failed="$(sed -n 's/.* \([0-9][0-9]*\) failed.*/\1/p' <<< "$summary")"
if [ -z "$summary" ]; then
  ko "jest (no summary)"
else
  passed=$((passed + ${j_passed:-0}))
  failed=$((failed + ${j_failed:-0}))
  echo "infra: jest ${j_passed:-0} passed, ${j_failed:-0} failed ($((SECONDS - start))s)"
  # A suite that does not compile fails without failing a test: count it.
  if [ "$jrc" -ne 0 ] && [ "${j_failed:-0}" -eq 0 ]; then ko "jest (exit $jrc: a suite failed outside its tests)"; fi
fi

# 4. Synth both stacks.
stage "cdk synth" npx cdk synth --quiet --no-notices --no-version-reporting --no-lookups -o "$OUT" "${CONTEXT[@]}"
stage "cdk synth (managedGrafana=true)" npx cdk synth Tributary --quiet --no-notices --no-version-reporting --no-lookups -o "$OUT-grafana" "${CONTEXT[@]}" -c managedGrafana=true
templates=()
for t in "$OUT"/*.template.json "$OUT-grafana"/Tributary.template.json; do [ -f "$t" ] && templates+=("$t"); done
if [ "${#templates[@]}" -eq 0 ]; then
  ko "cfn-lint (not run: no template)"; ko "checkov (not run: no template)"; finish
fi

# 5 and 6. The Python linters, from their virtualenv.
if ! cmp -s requirements.txt "$VENV/.requirements" 2> /dev/null || [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/cfn-lint" ]; then
  echo "infra: installing cfn-lint and checkov into $VENV"
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt; } > "$LOG" 2>&1; then
    cat "$LOG"
    ko "cfn-lint (not run: could not install it)"; ko "checkov (not run: could not install it)"; finish
  fi
  cp requirements.txt "$VENV/.requirements"
fi
stage "cfn-lint" "$VENV/bin/cfn-lint" "${templates[@]}"

# The accepted checkov findings, with their reasons, as the templates record them.
node -e '
  const lines = new Set();
  for (const file of process.argv.slice(1)) {
    const resources = JSON.parse(require("fs").readFileSync(file, "utf8")).Resources || {};
    for (const [id, r] of Object.entries(resources)) {
      for (const s of ((r.Metadata || {}).checkov || {}).skip || []) lines.add(`infra: checkov skips ${s.id} on ${id}: ${s.comment}`);
    }
  }
  for (const line of lines) console.log(line);' "${templates[@]}"
check_args=()
for t in "${templates[@]}"; do check_args+=(-f "$t"); done
stage "checkov" "$VENV/bin/checkov" --framework cloudformation --skip-download --compact --quiet "${check_args[@]}"

finish
