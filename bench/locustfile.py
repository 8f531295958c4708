"""The spec's load test: Locust against the gateway, mixing the four ways clients use it.

Run by bench/locust.sh (headless, bounded, its report in bench/results/locust-<UTC>.md); by hand:

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:28180

Two kinds of users:

- ApiUser (FastHttpUser), each at a fixed pace of BENCH_LOCUST_RPS_PER_USER requests/s
  (constant_throughput, so the offered load is users x pace whatever the latency), picks
      6 in 10  POST /api/v1/events/{topic}              one event          ("POST single")
      1 in 10  POST /api/v1/events/{topic}/batch        BENCH_LOCUST_BATCH events ("POST batch")
      3 in 10  GET  /api/v1/events/{topic}/latest?limit=20                  ("GET latest")
  The weights follow who calls the gateway: most requests come from devices and pages that send
  their events one at a time; a few backends send batches, which carry most of the events (with
  50 per batch, 5 of every 5.6 events); dashboards poll `latest`.
- StreamUser, BENCH_LOCUST_STREAMS of them (fixed_count): a dashboard holding a live WebSocket
  stream (`from=latest`) of the same topic open for BENCH_LOCUST_STREAM_SECONDS, reading every
  frame, then reconnecting. Reported: "WS subscribe" (upgrade until the `subscribed` frame),
  "WS frame delay" (every 20th event frame: received minus the record's ingest_time header, both
  clocks this machine's, millisecond resolution) and "WS session" (one per session, its
  response_length the frames read).

What counts as a failure: a write answered other than 201 (single) or other than 200 with every
event `accepted` (batch); a `latest` other than 200; a stream that could not open, or ended with
an `error` frame (slow_consumer, ...) or a dropped connection before its time. Locust exits 1
when any request failed (bench/locust.sh reports the counts per request).

Every event has a unique event_id (so nothing is a duplicate) and a user_id out of
BENCH_LOCUST_KEYS, and is ~300 bytes of clickstream JSON, as in bench/run.sh.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import datetime, timezone

import websocket  # websocket-client; gevent's monkey patching (done by Locust) makes it cooperative
from locust import FastHttpUser, User, constant_throughput, events, task

TOPIC = os.environ.get("BENCH_TOPIC", "events.clickstream")
RPS_PER_USER = float(os.environ.get("BENCH_LOCUST_RPS_PER_USER", "5"))
BATCH = int(os.environ.get("BENCH_LOCUST_BATCH", "50"))
STREAMS = int(os.environ.get("BENCH_LOCUST_STREAMS", "5"))
STREAM_SECONDS = float(os.environ.get("BENCH_LOCUST_STREAM_SECONDS", "20"))
KEYS = int(os.environ.get("BENCH_LOCUST_KEYS", "5000"))
FRAME_SAMPLE = 20

EVENT_TYPES = ["page_view", "page_view", "page_view", "click", "click", "add_to_cart", "search", "scroll"]
PAGES = ["/", "/products/shoes", "/products/jackets", "/products/bags", "/cart", "/checkout", "/search"]
REFERRERS = ["https://www.google.com/", "https://news.example.org/", "direct", "https://mail.example.com/"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "Mozilla/5.0 (Macintosh) Safari/605.1.15"]
RUN = uuid.uuid4().hex[:8]
_seq = 0


def event() -> dict:
    global _seq
    _seq += 1
    return {
        "event_id": f"locust-{RUN}-{os.getpid()}-{_seq}",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event_type": random.choice(EVENT_TYPES),
        "user_id": f"user-{random.randrange(KEYS):06d}",
        "payload": {
            "duration_ms": random.randint(20, 30000),
            "referrer": random.choice(REFERRERS),
            "session_id": f"s-{random.randrange(100000):06d}",
            "url": f"{random.choice(PAGES)}/item-{random.randint(1, 99999)}",
            "user_agent": random.choice(AGENTS),
        },
    }


class ApiUser(FastHttpUser):
    wait_time = constant_throughput(RPS_PER_USER)

    @task(6)
    def post_single(self) -> None:
        with self.client.post(
            f"/api/v1/events/{TOPIC}", json=event(), name="POST single", catch_response=True
        ) as r:
            if r.status_code != 201:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")

    @task(1)
    def post_batch(self) -> None:
        body = [event() for _ in range(BATCH)]
        with self.client.post(
            f"/api/v1/events/{TOPIC}/batch", json=body, name="POST batch", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")
                return
            try:
                accepted = r.json().get("accepted")
            except ValueError:
                r.failure("unparsable batch answer")
                return
            if accepted != BATCH:
                r.failure(f"{accepted} of {BATCH} events accepted")

    @task(3)
    def get_latest(self) -> None:
        with self.client.get(
            f"/api/v1/events/{TOPIC}/latest?limit=20", name="GET latest", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")


def fire(name: str, started: float, response_time_ms: float, length: int = 0, exc: Exception | None = None):
    events.request.fire(
        request_type="WS", name=name, response_time=response_time_ms, response_length=length,
        exception=exc, context={}, start_time=started, url=None, response=None,
    )


class StreamError(Exception):
    pass


def ingest_delay_ms(frame: str) -> float | None:
    try:
        ingest = json.loads(frame)["headers"]["ingest_time"]
    except (ValueError, KeyError, TypeError):
        return None
    t = datetime.fromisoformat(ingest.replace("Z", "+00:00")).timestamp()
    return (time.time() - t) * 1000


class StreamUser(User):
    fixed_count = STREAMS
    wait_time = constant_throughput(1000)  # reconnect at once after a session

    @task
    def hold_stream(self) -> None:
        url = self.host.replace("http://", "ws://").replace("https://", "wss://")
        url = f"{url}/api/v1/stream/{TOPIC}?from=latest"
        started = time.time()
        t0 = time.perf_counter()
        try:
            ws = websocket.create_connection(url, timeout=10, enable_multithread=False)
            first = json.loads(ws.recv())
            if first.get("type") != "subscribed":
                raise StreamError(f"first frame {first.get('type')}: {first.get('error')}")
        except Exception as e:  # noqa: BLE001 - every way of not opening is a failure to report
            if isinstance(e, websocket.WebSocketBadStatusException):
                e = StreamError(f"handshake answered {e.status_code}")  # its text has a date: one row per second
            fire("WS subscribe", started, (time.perf_counter() - t0) * 1000, exc=e)
            time.sleep(1)
            return
        fire("WS subscribe", started, (time.perf_counter() - t0) * 1000)
        frames, problem = 0, None
        session_start = time.time()
        deadline = time.perf_counter() + STREAM_SECONDS
        try:
            ws.settimeout(1.0)
            while time.perf_counter() < deadline:
                try:
                    data = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if not data:
                    raise StreamError("connection closed by the gateway")
                frames += 1
                if frames % FRAME_SAMPLE == 0 or '"type":"error"' in data[:40]:
                    if data.startswith('{"type":"error"'):
                        raise StreamError(f"error frame: {json.loads(data).get('error')}")
                    delay = ingest_delay_ms(data)
                    if delay is not None:
                        fire("WS frame delay", time.time(), delay)
        except Exception as e:  # noqa: BLE001 - includes GreenletExit's siblings only; see finally
            problem = e
        finally:
            # Also runs when Locust stops the user (GreenletExit): the partial session is counted.
            fire("WS session", session_start, (time.time() - session_start) * 1000, frames, problem)
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
