#!/usr/bin/env bash
# End-to-end latency in docs/performance.md (the spec's "p95 < 1 second"): events POSTed one by
# one to the running gateway at a fixed rate, timed until Kafka acknowledged them (201), until a
# Kafka consumer read them, and until the gateway's WebSocket stream delivered them
# (crates/gateway/examples/e2e_latency.rs). Side by side, in the same run: Kafka's own
# EndToEndLatency tool (produce one record with acks=all, wait until a consumer reads it, repeat)
# on a topic of its own on the same broker.
#
# Needs `make up` running. Settings (environment): BENCH_E2E_RATE (1000), BENCH_E2E_SECS (30),
# BENCH_E2E_TOPIC (events.clickstream), BENCH_E2E_REFERENCE_RECORDS (10000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOPIC="${BENCH_E2E_TOPIC:-events.clickstream}"
curl -fsS -m 2 -o /dev/null http://127.0.0.1:8080/api/v1/health \
  || { echo "error: the gateway is not answering on 127.0.0.1:8080; run 'make up' first" >&2; exit 1; }

cd "$ROOT"
cargo build --release -q -p tributary-gateway --example e2e_latency
example="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}/release/examples/e2e_latency"

echo "== tributary: POST → 201 → Kafka consumer → WebSocket stream, ${BENCH_E2E_RATE:-1000}/s for ${BENCH_E2E_SECS:-30} s on $TOPIC" >&2
"$example" --topic "$TOPIC" --rate "${BENCH_E2E_RATE:-1000}" --seconds "${BENCH_E2E_SECS:-30}"

echo "== reference: Kafka's EndToEndLatency, ${BENCH_E2E_REFERENCE_RECORDS:-10000} records of 300 bytes, acks=all" >&2
reference="bench-e2e-$RANDOM$RANDOM"
deploy/kafka/kafka.sh tool kafka-topics --bootstrap-server 127.0.0.1:9092 --create --topic "$reference" \
  --partitions 1 --replication-factor 1 >/dev/null
deploy/kafka/kafka.sh tool kafka-e2e-latency 127.0.0.1:9092 "$reference" \
  "${BENCH_E2E_REFERENCE_RECORDS:-10000}" all 300 2>/dev/null | grep -E "Avg latency|Percentiles"
deploy/kafka/kafka.sh tool kafka-topics --bootstrap-server 127.0.0.1:9092 --delete --topic "$reference" >/dev/null
