#!/usr/bin/env bash
# CPU per acknowledged request and memory of one or more gateway binaries, measured alternately
# against the same broker: the A/B method behind docs/performance.md "A leaner gateway".
#
#   bench/gateway_ab.sh [-r ROUNDS] BIN...
#
# For each round and each BIN in turn: start `BIN gateway` on GW_AB_LISTEN (default
# 127.0.0.1:28080) from an empty directory, warm it up (3 s of wrk), then GW_AB_SECONDS (15) of
# wrk with GW_AB_CONNECTIONS (256) connections and bench/post_event.lua; print one line with the
# gateway's CPU seconds (utime+stime from /proc/<pid>/stat) over the run divided by the 2xx
# answers, requests/s, p50/p99, and VmRSS/VmHWM after the run; stop it. The broker
# (KAFKA_BOOTSTRAP, default 127.0.0.1:9092) must be running with the catalog topics applied.
# GW_AB_BATCH=N loads the batch endpoint instead (bench/post_batch.lua, N events a request,
# 8 connections unless GW_AB_CONNECTIONS says otherwise): CPU is then divided over the events
# accepted, and ok= counts them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS=1
if [ "${1:-}" = "-r" ]; then ROUNDS="$2"; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [-r ROUNDS] BIN..." >&2; exit 2; }
LISTEN="${GW_AB_LISTEN:-127.0.0.1:28080}"
SECS="${GW_AB_SECONDS:-15}"
BATCH="${GW_AB_BATCH:-}"
if [ -n "$BATCH" ]; then
  CONNS="${GW_AB_CONNECTIONS:-8}" SCRIPT="post_batch.lua" PATH_TAIL="/batch" COUNTED="accepted"
else
  CONNS="${GW_AB_CONNECTIONS:-256}" SCRIPT="post_event.lua" PATH_TAIL="" COUNTED="ok"
fi
TOPIC="${GW_AB_TOPIC:-events.clickstream}"
BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
HZ="$(getconf CLK_TCK)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gateway-ab.XXXXXX")"
PID=""
cleanup() { [ -z "$PID" ] || { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; rm -rf "$WORK"; }
trap cleanup EXIT

cpu() { awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$PID/stat"; }
mem() { awk -v k="$1" '$1 == k":" { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }

for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    (cd "$WORK" && exec "$bin" gateway --bootstrap-servers "$BOOTSTRAP" --listen "$LISTEN") >"$WORK/gw.log" 2>&1 </dev/null &
    PID=$!
    for _ in $(seq 150); do curl -fsS -m 1 -o /dev/null "http://$LISTEN/api/v1/health" 2>/dev/null && break; sleep 0.2; done
    url="http://$LISTEN/api/v1/events/$TOPIC$PATH_TAIL"
    nonce="ab$(date +%s%N)"
    wrk -t2 -c"$CONNS" -d3s -s "$HERE/$SCRIPT" "$url" -- "${nonce}w" 5000 $BATCH >/dev/null 2>&1 || true
    c0="$(cpu)"
    out="$(wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 10s --latency -s "$HERE/$SCRIPT" "$url" -- "$nonce" 5000 $BATCH 2>&1 || true)"
    c1="$(cpu)"
    r="$(grep '^BENCH_RESULT ' <<<"$out" | tail -n 1)"
    ok="$(field "$COUNTED" "$r")"
    printf 'round=%s bin=%s conns=%s rps=%s ok=%s non2xx=%s cpu_s=%.2f us_per_req=%.1f p50_ms=%.1f p99_ms=%.1f rss_mib=%s hwm_mib=%s\n' \
      "$round" "$bin" "$CONNS" "$(field rps "$r")" "$ok" "$(field non2xx "$r")" "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" \
      "$(awk -v a="$c0" -v b="$c1" -v n="$ok" 'BEGIN{ if (n > 0) print (b-a)*1e6/n; else print 0 }')" \
      "$(awk -v u="$(field p50_us "$r")" 'BEGIN{print u/1000}')" "$(awk -v u="$(field p99_us "$r")" 'BEGIN{print u/1000}')" \
      "$(mem VmRSS)" "$(mem VmHWM)"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
done
