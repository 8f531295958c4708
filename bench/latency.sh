#!/usr/bin/env bash
# The gateway's latency profile in docs/performance.md ("A latency profile", issue 13): one gateway
# alone with `[kafka.extra] "linger.ms" = <L>` for each L of BENCH_LATENCY_LINGERS, timed at a
# steady BENCH_LATENCY_RATE single events/s (open loop, crates/gateway/examples/e2e_latency.rs,
# BENCH_LATENCY_SECS long, after BENCH_LATENCY_WARMUP (5) seconds at that rate that are not
# reported) and then at saturation (wrk, 256 connections, 15 s, bench/post_event.lua).
#
# Needs the broker on 127.0.0.1:9092 and the registry on 127.0.0.1:8081 (`make up`, or
# `make kafka-up` and `tributary registry`); the gateway listens on 127.0.0.1:28380.
# BENCH_LATENCY_EXTRA adds lines to [kafka.extra] (e.g. '"socket.nagle.disable" = "true"').
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
BIN="${TRIBUTARY_BIN:-$TARGET/release/tributary}"
TOPIC="${BENCH_LATENCY_TOPIC:-events.clickstream}"
cd "$ROOT"
scripts/cargo.sh build --release -q -p tributary-gateway --example e2e_latency
example="$TARGET/release/examples/e2e_latency"
for linger in ${BENCH_LATENCY_LINGERS:-10 5 2 1}; do
  work="$(mktemp -d /tmp/tributary-bench-latency.XXXXXX)"
  printf '[kafka.extra]\n"linger.ms" = "%s"\n%s\n[gateway]\nlisten = "127.0.0.1:28380"\n' \
    "$linger" "${BENCH_LATENCY_EXTRA:-}" > "$work/tributary.toml"
  (cd "$work" && exec "$BIN" --config "$work/tributary.toml" gateway > "$work/gateway.log" 2>&1) &
  pid=$!
  for _ in $(seq 100); do curl -fsS -m 1 -o /dev/null http://127.0.0.1:28380/api/v1/health && break; sleep 0.2; done
  # A warm-up at the same rate, not reported (as bench/run.sh does): the gateway has just
  # started, and its first seconds include connecting to the broker and fetching the schema.
  "$example" --gateway http://127.0.0.1:28380 --topic "$TOPIC" --rate "${BENCH_LATENCY_RATE:-5000}" \
    --seconds "${BENCH_LATENCY_WARMUP:-5}" > /dev/null 2>&1 || true
  echo "== linger.ms=$linger: ${BENCH_LATENCY_RATE:-5000} events/s for ${BENCH_LATENCY_SECS:-30} s"
  "$example" --gateway http://127.0.0.1:28380 --topic "$TOPIC" --rate "${BENCH_LATENCY_RATE:-5000}" \
    --seconds "${BENCH_LATENCY_SECS:-30}" 2>&1 | grep -E "^(sent|POST)" || true
  echo "== linger.ms=$linger: saturation, wrk 256 connections 15 s"
  wrk -t2 -c256 -d15s -s bench/post_event.lua "http://127.0.0.1:28380/api/v1/events/$TOPIC" -- "lat$linger$RANDOM" 5000 2>&1 \
    | grep BENCH_RESULT | tr ' ' '\n' | grep -E "^(rps|p50_us|p99_us|non2xx)=" | paste -sd' '
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$work"
done
