"""The spec's own design for single-event ingestion, for the gateway benchmark to compare with.

A FastAPI service with one route, POST /api/v1/events/{topic}, written as the spec describes it:
the event validated by a Pydantic model, produced with confluent-kafka (acks=all, idempotent,
5 in flight, snappy, linger.ms=10, like the gateway), keyed by user_id (else device_id), with
event_type and ingest_time headers, and answered 201 with the partition and offset once Kafka
acknowledged it. It has none of the gateway's other features (no dedupe window, topic catalog,
schemas, auth, metrics): it is the floor of what the spec asks, to measure against.

Run by bench/run.sh (2 uvicorn workers): KAFKA_BOOTSTRAP selects the broker.
"""

import asyncio
import datetime as dt
import os
import threading
from typing import Any, Optional

from confluent_kafka import KafkaException, Producer
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """The spec's event: unknown fields are refused, as the gateway does."""

    model_config = ConfigDict(extra="forbid")
    event_id: str
    timestamp: dt.datetime
    event_type: str
    user_id: Optional[str] = None
    device_id: Optional[str] = None
    payload: dict[str, Any]
    metadata: Optional[dict[str, Any]] = None


class EventResponse(BaseModel):
    status: str
    event_id: str
    partition: int
    offset: int


app = FastAPI()
producer: Optional[Producer] = None
stopping = threading.Event()


def poll_forever() -> None:
    """Serves delivery callbacks on a thread of its own, as confluent-kafka's examples do."""
    while not stopping.is_set():
        producer.poll(0.1)


@app.on_event("startup")
def start() -> None:
    global producer
    producer = Producer({
        "bootstrap.servers": os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "compression.type": "snappy",
        "linger.ms": 10,
    })
    threading.Thread(target=poll_forever, daemon=True).start()


@app.on_event("shutdown")
def stop() -> None:
    stopping.set()
    producer.flush(10)


@app.post("/api/v1/events/{topic}", status_code=201, response_model=EventResponse)
async def publish(topic: str, event: Event) -> EventResponse:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def delivered(err, msg) -> None:
        outcome = (err, msg.partition(), msg.offset())
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(outcome))

    ingest = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    key = event.user_id or event.device_id
    try:
        producer.produce(
            topic,
            value=event.model_dump_json(exclude_none=True).encode(),
            key=key.encode() if key else None,
            headers=[("event_type", event.event_type.encode()), ("ingest_time", ingest.encode())],
            on_delivery=delivered,
        )
    except (BufferError, KafkaException) as e:
        raise HTTPException(status_code=503, detail=f"kafka unavailable: {e}") from e
    err, partition, offset = await done
    if err is not None:
        raise HTTPException(status_code=503, detail=f"kafka unavailable: {err}")
    return EventResponse(status="accepted", event_id=event.event_id, partition=partition, offset=offset)
