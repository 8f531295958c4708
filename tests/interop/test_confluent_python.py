"""confluent-kafka for Python, a client no one here wrote, against Tributary (on the broker and on
the cluster, conftest.py): it reads what the gateway writes with its schema registry client and
Avro deserializer, registers a schema that the gateway then uses, and writes records that the
gateway decodes."""

import json
import secrets
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import http


def consume_all(platform, topic, count, deserializer, timeout=60):
    """The first `count` records of `topic`, deserialized, read_committed, as the platform's
    reader."""
    client, group = platform.reader()
    consumer = Consumer(
        {
            **client,
            "group.id": f"{group}-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            ctx = SerializationContext(msg.topic(), MessageField.VALUE)
            out.append((msg, deserializer(msg.value(), ctx)))
    finally:
        consumer.close()
    assert len(out) == count, f"read {len(out)} of {count} records"
    return out


def produce_all(platform, records):
    """Writes (topic, key, value) records with an idempotent producer as the platform's writer;
    every one acknowledged with acks=all."""
    producer = Producer({**platform.writer(), "enable.idempotence": True, "acks": "all"})
    errors = []
    for topic, key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(30) == 0 and not errors, errors


def post(platform, event):
    status, body = http("POST", f"{platform.gateway}/api/v1/events/{platform.topic}", event)
    assert status == 201, body
    return body


def test_python_reads_gateway_events_with_its_avro_deserializer(platform):
    sent = [
        {
            "event_id": f"py-{i}",
            "timestamp": 1_796_040_000_000 + i,
            "event_type": "page_view",
            "user_id": f"user-{i}",
            "payload": {"url": f"/p/{i}"},
        }
        for i in range(5)
    ]
    for e in sent:
        post(platform, e)
    registry = SchemaRegistryClient({"url": platform.registry})
    got = consume_all(platform, platform.topic, len(sent), AvroDeserializer(registry))
    by_id = {value["event_id"]: (msg, value) for msg, value in got}
    for e in sent:
        msg, value = by_id[e["event_id"]]
        assert value["timestamp"] == e["timestamp"]
        assert value["event_type"] == "page_view"
        assert value["user_id"] == e["user_id"]
        assert json.loads(value["payload"]) == e["payload"]
        assert value["device_id"] is None and value["metadata"] is None
        assert msg.key().decode() == e["user_id"]
    # The schema the deserializer fetched is the one registered for the topic.
    latest = registry.get_latest_version(f"{platform.topic}-value")
    assert latest.schema.schema_type == "AVRO"
    assert {f["name"] for f in json.loads(latest.schema.schema_str)["fields"]} >= {
        "event_id",
        "timestamp",
        "event_type",
        "user_id",
        "payload",
    }


def test_gateway_uses_a_schema_python_registered(platform):
    post(platform, {"event_id": "first", "timestamp": 1, "event_type": "t", "user_id": "u", "payload": {}})
    registry = SchemaRegistryClient({"url": platform.registry})
    subject = f"{platform.topic}-value"
    current = json.loads(registry.get_latest_version(subject).schema.schema_str)
    current["fields"].append({"name": "channel", "type": "string", "default": "web"})
    new_id = registry.register_schema(subject, Schema(json.dumps(current), "AVRO"))
    assert registry.test_compatibility(subject, Schema(json.dumps(current), "AVRO"))

    post(platform, {"event_id": "second", "timestamp": 2, "event_type": "t", "user_id": "u", "payload": {}})
    got = consume_all(platform, platform.topic, 2, AvroDeserializer(registry))
    values = {v["event_id"]: (m, v) for m, v in got}
    msg, second = values["second"]
    assert int.from_bytes(msg.value()[1:5], "big") == new_id, "written with the schema Python registered"
    assert second["channel"] == "web"


def test_gateway_decodes_records_python_wrote(platform):
    registry = SchemaRegistryClient({"url": platform.registry})
    schema = json.dumps(
        {
            "type": "record",
            "name": "Event",
            "namespace": "dev.tributary",
            "fields": [
                {"name": "event_id", "type": "string"},
                {"name": "timestamp", "type": "long"},
                {"name": "event_type", "type": "string"},
                {"name": "user_id", "type": ["null", "string"], "default": None},
                {"name": "payload", "type": "string"},
            ],
        }
    )
    serializer = AvroSerializer(registry, schema)
    ctx = SerializationContext(platform.topic, MessageField.VALUE)
    values = [
        {"event_id": f"from-python-{i}", "timestamp": 10 + i, "event_type": "click", "user_id": "py", "payload": '{"k": 1}'}
        for i in range(3)
    ]
    produce_all(platform, [(platform.topic, b"py", serializer(v, ctx)) for v in values])
    status, body = http("GET", f"{platform.gateway}/api/v1/events/{platform.topic}/latest?limit=10")
    assert status == 200, body
    seen = {e["event"]["event_id"]: e for e in body["events"]}
    for i in range(3):
        e = seen[f"from-python-{i}"]
        assert e["event"]["event_type"] == "click"
        assert e["event"]["payload"] == {"k": 1}
        assert isinstance(e["schema_id"], int)
