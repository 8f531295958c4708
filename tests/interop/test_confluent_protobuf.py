"""confluent-kafka for Python with its Protobuf serializer and deserializer against Tributary:
the classes come from schemas/event.proto compiled by protoc (grpcio-tools), not from anything
Tributary generates."""

import importlib
import os
import sys
import tempfile

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import http
from test_confluent_python import consume_all, produce_all

SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "..", "schemas")


@pytest.fixture(scope="module")
def event_pb2():
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{SCHEMAS}", f"--python_out={out}", os.path.join(SCHEMAS, "event.proto")])
    assert rc == 0, "protoc compiles schemas/event.proto"
    sys.path.insert(0, out)
    try:
        return importlib.import_module("event_pb2")
    finally:
        sys.path.remove(out)


def test_python_reads_gateway_protobuf(platform, event_pb2):
    for i in range(3):
        status, body = http(
            "POST",
            f"{platform.gateway}/api/v1/events/{platform.proto_topic}",
            {"event_id": f"pb-{i}", "timestamp": 1000 + i, "event_type": "click", "user_id": f"u{i}", "payload": {"i": i}},
        )
        assert status == 201, body
    deserializer = ProtobufDeserializer(event_pb2.Event, {"use.deprecated.format": False})
    got = {v.event_id: (m, v) for m, v in consume_all(platform, platform.proto_topic, 3, deserializer)}
    for i in range(3):
        msg, value = got[f"pb-{i}"]
        assert value.timestamp == 1000 + i
        assert value.event_type == "click"
        assert value.user_id == f"u{i}"
        assert value.payload == f'{{"i":{i}}}'
        assert not value.HasField("device_id")
        assert msg.key().decode() == f"u{i}"


def test_gateway_decodes_protobuf_python_wrote(platform, event_pb2):
    registry = SchemaRegistryClient({"url": platform.registry})
    serializer = ProtobufSerializer(event_pb2.Event, registry, {"use.deprecated.format": False})
    ctx = SerializationContext(platform.proto_topic, MessageField.VALUE)
    values = [
        event_pb2.Event(event_id=f"py-pb-{i}", timestamp=5 + i, event_type="view", user_id="py", payload='{"k": 2}')
        for i in range(2)
    ]
    produce_all(platform, [(platform.proto_topic, b"py", serializer(v, ctx)) for v in values])
    # The Python client registered the schema as a base64 descriptor; the registry took it.
    latest = registry.get_latest_version(f"{platform.proto_topic}-value")
    assert latest.schema.schema_type == "PROTOBUF"
    status, body = http("GET", f"{platform.gateway}/api/v1/events/{platform.proto_topic}/latest?limit=10")
    assert status == 200, body
    seen = {e["event"]["event_id"]: e for e in body["events"]}
    for i in range(2):
        e = seen[f"py-pb-{i}"]
        assert e["event"]["event_type"] == "view"
        assert e["event"]["payload"] == {"k": 2}
        assert e["schema_id"] == latest.schema_id
