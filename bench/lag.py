"""Consumer lag under sustained load (bench/lag.sh runs this; docs/performance.md).

An open-loop load generator and a sampler in one asyncio process, one clock:

- the generator POSTs batches of ~300-byte clickstream events to the gateway's batch endpoint on a
  fixed schedule (batch i is due at start + i * batch / rate), whatever the answers do: a slow
  answer never delays the next send (no coordinated omission). Each batch goes out on one of
  `connections` keep-alive HTTP/1.1 connections; when all are busy the batch waits for one and the
  wait counts in its latency, measured from when it was due. Every event has a unique event_id
  and a user_id out of `keys`, so all partitions are written and nothing is a duplicate.
- every `interval` seconds the sampler reads the processor's and the sink's lag gauges
  (processor_lag_records, sink_lag_records, summed over partitions) from their /metrics, and each
  service's VmRSS and CPU time from /proc/<pid>/{status,stat}.

After the load it keeps sampling until both lags are 0 (at most `drain` seconds) and then prints
a Markdown report on stdout. Exit status 1 when a batch answered other than 200, an event was not
accepted, a connection failed, or the lags did not drain.

Standard library only, so that it runs on any Python 3.9+ without the Locust venv.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

CLK_TCK = os.sysconf("SC_CLK_TCK")
EVENT_TYPES = ["page_view", "page_view", "page_view", "click", "click", "add_to_cart", "search", "scroll"]
PAGES = ["/", "/products/shoes", "/products/jackets", "/products/bags", "/cart", "/checkout", "/search"]
REFERRERS = ["https://www.google.com/", "https://news.example.org/", "direct", "https://mail.example.com/"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "Mozilla/5.0 (Macintosh) Safari/605.1.15"]


def payload_suffixes(rng: random.Random, n: int = 512) -> list[str]:
    """Pre-rendered `event_type ... payload` tails, so that a batch costs string joins only."""
    out = []
    for _ in range(n):
        payload = {
            "duration_ms": rng.randint(20, 30000),
            "referrer": rng.choice(REFERRERS),
            "session_id": f"s-{rng.randint(0, 99999):06d}",
            "url": f"{rng.choice(PAGES)}/item-{rng.randint(1, 99999)}",
            "user_agent": rng.choice(AGENTS),
        }
        out.append(f'"event_type":"{rng.choice(EVENT_TYPES)}","payload":{json.dumps(payload, separators=(",", ":"))}}}')
    return out


@dataclass
class Totals:
    """What the generator saw, overall and since the last sample."""

    batches: int = 0
    events_sent: int = 0
    accepted: int = 0
    non_200: int = 0
    not_accepted: int = 0
    errors: int = 0
    statuses: dict = field(default_factory=dict)
    latencies_ms: list = field(default_factory=list)  # per batch, from due time to answer
    first_errors: list = field(default_factory=list)


class Connection:
    """One keep-alive HTTP/1.1 connection (the gateway answers with Content-Length)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode() + body)
            await self.writer.drain()
            status_line = await self.reader.readuntil(b"\r\n")
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await self.reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            return status, await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def http_get(url: str, timeout: float = 5.0) -> bytes:
    """A one-off GET (for /metrics)."""
    u = urlsplit(url)
    conn = Connection(u.hostname or "127.0.0.1", u.port or 80)
    try:
        status, body = await asyncio.wait_for(conn.request("GET", u.path or "/"), timeout)
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}")
        return body
    finally:
        conn.close()


def gauge_sum(text: bytes, name: str) -> int | None:
    """Sum of a gauge over its series; None when the exposition has no such series yet."""
    total, seen = 0, False
    prefix = name.encode()
    for line in text.splitlines():
        if line.startswith(prefix) and line[len(prefix) : len(prefix) + 1] in (b"{", b" "):
            total += int(float(line.rsplit(b" ", 1)[1]))
            seen = True
    return total if seen else None


def proc_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def proc_cpu_secs(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


class Generator:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        u = urlsplit(args.gateway)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.path = f"/api/v1/events/{args.topic}/batch"
        rng = random.Random(args.seed)
        self.suffixes = payload_suffixes(rng)
        self.rng = rng
        self.run_id = f"lag-{os.getpid():x}-{int(time.time()):x}"
        self.seq = 0
        self.pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(args.connections):
            self.pool.put_nowait(Connection(self.host, self.port))
        self.totals = Totals()
        self.in_flight: set[asyncio.Task] = set()

    def body(self, n: int) -> bytes:
        ts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        parts = []
        rng, keys, suffixes = self.rng, self.args.keys, self.suffixes
        for _ in range(n):
            self.seq += 1
            parts.append(
                f'{{"event_id":"{self.run_id}-{self.seq}","timestamp":"{ts}",'
                f'"user_id":"user-{rng.randrange(keys):06d}",{suffixes[self.seq % len(suffixes)]}'
            )
        return ("[" + ",".join(parts) + "]").encode()

    async def send(self, due: float, n: int) -> None:
        body = self.body(n)
        conn = await self.pool.get()
        t = self.totals
        try:
            status, answer = await asyncio.wait_for(conn.request("POST", self.path, body), self.args.timeout)
            t.statuses[status] = t.statuses.get(status, 0) + 1
            accepted = answer.count(b'"status":"accepted"')
            t.accepted += accepted
            if status != 200:
                t.non_200 += 1
                if len(t.first_errors) < 5:
                    t.first_errors.append(f"{status}: {answer[:300].decode(errors='replace')}")
            if accepted != n:
                t.not_accepted += n - accepted
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            conn.close()
            t.errors += 1
            if len(t.first_errors) < 5:
                t.first_errors.append(f"{type(e).__name__}: {e}")
        finally:
            self.pool.put_nowait(conn)
        t.latencies_ms.append((time.monotonic() - due) * 1000)

    async def run(self, start: float) -> None:
        """Sends batches on schedule until `seconds` have passed, then waits for the last answers."""
        period = self.args.batch / self.args.rate
        end = start + self.args.seconds
        i = 0
        while True:
            due = start + i * period
            if due >= end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.send(due, self.args.batch))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            self.totals.batches += 1
            self.totals.events_sent += self.args.batch
            i += 1
        if self.in_flight:
            await asyncio.wait(self.in_flight, timeout=self.args.timeout + 5)
        while not self.pool.empty():
            self.pool.get_nowait().close()


def pct(values: list, p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def sample(args, gen: Generator, pids: dict, start: float, rows: list, prev: dict) -> dict:
    now = time.monotonic()
    proc = sink = None
    try:
        proc = gauge_sum(await http_get(args.processor_metrics), "processor_lag_records")
    except Exception as e:  # noqa: BLE001 - a failed scrape is reported as n/a, not fatal
        print(f"lag: processor metrics: {e}", file=sys.stderr)
    try:
        sink = gauge_sum(await http_get(args.sink_metrics), "sink_lag_records")
    except Exception as e:  # noqa: BLE001
        print(f"lag: sink metrics: {e}", file=sys.stderr)
    cpu = {name: proc_cpu_secs(pid) for name, pid in pids.items()}
    cpu["loadgen"] = time.process_time()
    row = {
        "t": now - start,
        "accepted": gen.totals.accepted,
        "sent": gen.totals.events_sent,
        "processor_lag": proc,
        "sink_lag": sink,
        "rss": {name: proc_rss_mib(pid) for name, pid in pids.items()},
        "cpu": cpu,
        "batch_p99_ms": pct(gen.totals.latencies_ms[prev.get("lat_index", 0) :], 99),
    }
    dt = now - prev.get("now", start)
    row["rate"] = (row["accepted"] - prev.get("accepted", 0)) / dt if dt > 0 else 0.0
    row["cpu_pct"] = {
        n: (100 * (c - prev["cpu"][n]) / dt if c is not None and prev.get("cpu", {}).get(n) is not None and dt > 0 else None)
        for n, c in cpu.items()
    }
    rows.append(row)
    fmt = lambda v: "n/a" if v is None else f"{v:,}"  # noqa: E731
    print(
        f"lag: t={row['t']:.0f}s rate={row['rate']:,.0f}/s processor_lag={fmt(proc)} sink_lag={fmt(sink)} "
        f"rss={ {k: round(v) for k, v in row['rss'].items() if v is not None} }",
        file=sys.stderr,
    )
    return {"now": now, "accepted": row["accepted"], "cpu": cpu, "lat_index": len(gen.totals.latencies_ms)}


async def main_async(args: argparse.Namespace) -> int:
    pids = {}
    for spec in args.pid:
        name, _, pid = spec.partition("=")
        if pid.isdigit():
            pids[name] = int(pid)
    gen = Generator(args)
    rows: list = []
    start = time.monotonic()
    prev = await sample(args, gen, pids, start, rows, {"now": start})
    load = asyncio.create_task(gen.run(start))
    next_sample = start + args.interval
    while not load.done():
        await asyncio.wait({load}, timeout=max(0.0, next_sample - time.monotonic()))
        if time.monotonic() >= next_sample:
            prev = await sample(args, gen, pids, start, rows, prev)
            next_sample += args.interval
    load_end = time.monotonic() - start
    drained_at = None
    drain_deadline = time.monotonic() + args.drain
    while True:
        last = rows[-1]
        if last["t"] >= load_end and last["processor_lag"] == 0 and last["sink_lag"] == 0:
            drained_at = last["t"]
            break
        if time.monotonic() >= drain_deadline:
            break
        await asyncio.sleep(max(0.0, min(next_sample, drain_deadline) - time.monotonic()))
        prev = await sample(args, gen, pids, start, rows, prev)
        next_sample = time.monotonic() + args.interval
    print(report(args, gen, rows, load_end, drained_at, list(pids)))
    t = gen.totals
    ok = t.non_200 == 0 and t.not_accepted == 0 and t.errors == 0 and drained_at is not None
    return 0 if ok else 1


def report(args, gen: Generator, rows: list, load_end: float, drained_at, services: list) -> str:
    t = gen.totals
    fmt = lambda v, d=0: "n/a" if v is None else f"{v:,.{d}f}"  # noqa: E731
    out = []
    out.append(
        f"Load: {args.rate:,} events/s offered for {args.seconds} s in batches of {args.batch} "
        f"({args.rate / args.batch:,.1f} requests/s) to `{args.topic}`, open loop, "
        f"at most {args.connections} requests in flight; samples every {args.interval} s.\n"
    )
    head = ["t s", "events/s acknowledged", "processor lag", "sink lag", "batch p99 ms"]
    head += [f"{s} RSS MiB" for s in services]
    head += [f"{s} CPU %" for s in services + ["loadgen"]]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---:|" * len(head))
    for r in rows:
        cells = [f"{r['t']:.0f}", fmt(r["rate"]), fmt(r["processor_lag"]), fmt(r["sink_lag"]), fmt(r["batch_p99_ms"])]
        cells += [fmt(r["rss"].get(s), 1) for s in services]
        cells += [fmt(r["cpu_pct"].get(s)) for s in services + ["loadgen"]]
        out.append("| " + " | ".join(cells) + " |")
    during = [r for r in rows if 0 < r["t"] <= load_end + 0.5]
    max_p = max((r["processor_lag"] or 0 for r in rows), default=0)
    max_s = max((r["sink_lag"] or 0 for r in rows), default=0)
    out.append("")
    out.append("Summary:")
    out.append(f"- events: {t.events_sent:,} sent in {t.batches:,} batches, {t.accepted:,} acknowledged "
               f"({t.accepted / max(load_end, 1e-9):,.0f}/s over {load_end:.1f} s)")
    out.append(f"- answers: {dict(sorted(t.statuses.items()))}; non-200 {t.non_200}, events not accepted "
               f"{t.not_accepted}, connection errors or timeouts {t.errors}")
    out.append(f"- batch latency from due time: p50 {fmt(pct(t.latencies_ms, 50), 1)} ms, p99 "
               f"{fmt(pct(t.latencies_ms, 99), 1)} ms, max {fmt(max(t.latencies_ms, default=None), 1)} ms")
    out.append(f"- lag: processor max {max_p:,}, sink max {max_s:,} records; "
               + (f"both 0 at t = {drained_at:.0f} s ({drained_at - load_end:.0f} s after the load stopped)"
                  if drained_at is not None else f"NOT drained within {args.drain} s after the load"))
    if during:
        mid = during[len(during) // 2]
        for s in services:
            a, m, e = during[0]["rss"].get(s), mid["rss"].get(s), during[-1]["rss"].get(s)
            out.append(f"- {s} RSS: start {fmt(a, 1)}, middle (t = {mid['t']:.0f} s) {fmt(m, 1)}, "
                       f"end {fmt(e, 1)} MiB")
    for e in t.first_errors:
        out.append(f"- first errors: {e}")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", required=True, help="gateway base URL, http://127.0.0.1:28180")
    p.add_argument("--topic", required=True)
    p.add_argument("--processor-metrics", required=True)
    p.add_argument("--sink-metrics", required=True)
    p.add_argument("--rate", type=int, default=20000, help="events per second offered")
    p.add_argument("--batch", type=int, default=500, help="events per request")
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--drain", type=float, default=120.0, help="longest wait for lag 0 after the load")
    p.add_argument("--connections", type=int, default=32, help="most requests in flight")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as failed")
    p.add_argument("--keys", type=int, default=5000, help="distinct user_id values")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--pid", action="append", default=[], help="NAME=PID of a service to sample (repeat)")
    args = p.parse_args()
    if args.rate < 1 or args.batch < 1 or args.seconds < 1 or args.connections < 1:
        p.error("rate, batch, seconds and connections must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
