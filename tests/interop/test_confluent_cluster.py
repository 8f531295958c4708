"""confluent-kafka for Python over the production-shaped cluster (three nodes, SASL_SSL with
SCRAM-SHA-512, TLS from the cluster's CA, replication factor 3, min.insync.replicas=2, ACLs):
it reads what the gateway (as user gateway) wrote, as the reader user `sink`, and the gateway's
`latest` decodes what it wrote, each client with only the settings docs/deployment.md gives for
MSK. Skipped, saying why, when no cluster is named (scripts/test.sh names the one it shares)."""

import json

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import cluster_client, http
from test_confluent_python import consume_all


def test_python_reads_as_another_user_what_the_gateway_wrote(cluster_platform):
    p = cluster_platform
    sent = [
        {
            "event_id": f"cl-{i}",
            "timestamp": 1_796_040_000_000 + i,
            "event_type": "page_view",
            "user_id": f"user-{i}",
            "payload": {"url": f"/p/{i}"},
        }
        for i in range(5)
    ]
    for e in sent:
        status, body = http("POST", f"{p.gateway}/api/v1/events/{p.topic}", e)
        assert status == 201, body
    registry = SchemaRegistryClient({"url": p.registry})
    # The sink user may read events.* in its own groups (tributary-sink*), nothing more.
    got = consume_all(
        p.topic, len(sent), AvroDeserializer(registry), timeout=60, client=cluster_client("sink"), group="tributary-sink-interop"
    )
    by_id = {value["event_id"]: (msg, value) for msg, value in got}
    assert set(by_id) == {e["event_id"] for e in sent}
    for e in sent:
        msg, value = by_id[e["event_id"]]
        assert msg.key().decode() == e["user_id"]
        assert value["timestamp"] == e["timestamp"]
        assert json.loads(value["payload"]) == e["payload"]


def test_gateway_reads_what_python_wrote_over_the_cluster(cluster_platform):
    p = cluster_platform
    registry = SchemaRegistryClient({"url": p.registry})
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
    # Only the gateway user may write events.*; acks=all waits for min.insync.replicas=2.
    producer = Producer({**cluster_client("gateway"), "enable.idempotence": True, "acks": "all"})
    errors = []
    ctx = SerializationContext(p.topic, MessageField.VALUE)
    for i in range(3):
        value = {"event_id": f"py-cl-{i}", "timestamp": 10 + i, "event_type": "click", "user_id": "py", "payload": '{"k": 1}'}
        producer.produce(
            p.topic, key=b"py", value=serializer(value, ctx), on_delivery=lambda err, _m: err and errors.append(err)
        )
    assert producer.flush(30) == 0 and not errors, errors
    status, body = http("GET", f"{p.gateway}/api/v1/events/{p.topic}/latest?limit=10")
    assert status == 200, body
    seen = {e["event"]["event_id"]: e for e in body["events"]}
    for i in range(3):
        e = seen[f"py-cl-{i}"]
        assert e["event"]["event_type"] == "click"
        assert e["event"]["payload"] == {"k": 1}
        assert isinstance(e["schema_id"], int)
