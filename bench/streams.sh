#!/usr/bin/env bash
# Live streams under load (docs/performance.md "Live streams at scale").
#
# For each count in BENCH_STREAMS, runs the `stream_burst` harness (crates/gateway/tests/
# stream_load.rs): a gateway in a child process on the broker at TRIBUTARY_TEST_BOOTSTRAP,
# that many `from=latest` streams opened in one burst, LOAD_EVENTS single-event writes
# (one every LOAD_WRITE_INTERVAL_MS) while they are open. It prints one Markdown row per count:
# streams opened and refused, the gateway's VmRSS and Threads (/proc/<pid>/status) idle, after
# the burst and at peak, write latency, and per-event delivery latency (write start -> frame
# received, over every stream).
#
# Settings (environment): BENCH_STREAMS (default "400 1000"), LOAD_EVENTS (default 100),
# LOAD_WRITE_INTERVAL_MS (default 50), LOAD_FROM (latest, the default, or earliest), TRIBUTARY_TEST_BOOTSTRAP (default 127.0.0.1:9092),
# BENCH_RESULTS_DIR (default bench/results). Results also go to
# $BENCH_RESULTS_DIR/streams-<UTC timestamp>.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RESULTS_DIR="${BENCH_RESULTS_DIR:-$HERE/results}"
STREAMS="${BENCH_STREAMS:-400 1000}"
export TRIBUTARY_TEST_BOOTSTRAP="${TRIBUTARY_TEST_BOOTSTRAP:-127.0.0.1:9092}"
# Each stream is two sockets on loopback (client and gateway side).
ulimit -n 20000 2>/dev/null || true

mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/streams-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# Live streams, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD)"
  echo
} >"$out"
cd "$ROOT"
cargo test --release -p tributary-gateway --test stream_load --no-run >&2
for n in $STREAMS; do
  echo "streams: $n" >&2
  LOAD_STREAMS="$n" cargo test --release -p tributary-gateway --test stream_load -- \
    --ignored --exact stream_burst --nocapture 2>/dev/null | grep '^|' | tee -a "$out"
  echo >>"$out"
done
echo "results: $out" >&2
