"""Window-result latency: for every result the processor committed to aggregates.* since a
start time, the delay from the window's end (event time) to the record's timestamp (the moment
the processor produced it, a few milliseconds before its transaction committed).

Usage: window_latency.py BOOTSTRAP REGISTRY_URL START_MS ALLOWANCE_MS
ALLOWANCE_MS is out_of_orderness_ms + grace_ms: no window can close earlier than that after its
end, so latency minus it is the time the processor took once the window could close.
"""
import sys
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    bootstrap, registry, start_ms, allowance_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    topics = [f"aggregates.{s}.{w}" for s in ("iot.sensors", "clickstream", "transactions") for w in ("1m", "5m")]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-latency", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    parts = []
    for t in topics:
        md = consumer.list_topics(t, timeout=10).topics[t]
        for p in md.partitions:
            parts.append(TopicPartition(t, p, 0))
    # Start at the first record at or after start_ms.
    parts = consumer.offsets_for_times([TopicPartition(p.topic, p.partition, start_ms) for p in parts], timeout=10)
    consumer.assign(parts)
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    delays = []
    idle = 0
    while idle < 10:
        msgs = consumer.consume(1000, timeout=0.5)
        if not msgs:
            idle += 1
            continue
        idle = 0
        for m in msgs:
            if m.error() or m.value() is None:
                continue
            v = deserialize(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
            end = datetime.fromisoformat(v["window_end"].replace("Z", "+00:00")).timestamp() * 1000
            delays.append(m.timestamp()[1] - end)
    consumer.close()
    if not delays:
        print("no window results found", file=sys.stderr)
        sys.exit(1)
    delays.sort()
    q = lambda f: delays[min(len(delays) - 1, int(f * len(delays)))]
    print(f"results={len(delays)} p50_ms={q(0.5):.0f} p90_ms={q(0.9):.0f} p99_ms={q(0.99):.0f} max_ms={delays[-1]:.0f} "
          f"after_close_p50_ms={q(0.5) - allowance_ms:.0f} after_close_p99_ms={q(0.99) - allowance_ms:.0f}")


if __name__ == "__main__":
    main()
