//! The transactional producer against the shared broker (`TRIBUTARY_TEST_BOOTSTRAP`): what a
//! committed and an aborted transaction leave to `read_committed` and `read_uncommitted`
//! readers, and the group offsets committed with a transaction.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use tributary_kafka::txn::{TransactionalProducer, TxnSettings};
use tributary_kafka::{KafkaConfig, ProducerTuning};

fn kafka() -> KafkaConfig {
    KafkaConfig { bootstrap_servers: tributary_test_support::bootstrap(), ..KafkaConfig::default() }
}

fn record<'a>(topic: &'a str, value: &'a str) -> BaseRecord<'a, [u8], [u8]> {
    BaseRecord::to(topic).key(&b"k"[..]).payload(value.as_bytes())
}

async fn create_topic(kafka: &KafkaConfig, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = kafka.base().create().expect("admin client");
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let done = admin.create_topics([&new], &AdminOptions::new()).await.expect("create topics");
    assert!(done.iter().all(Result::is_ok), "creating {topic}: {done:?}");
}

/// Every record of `topic` partition 0 that a reader at `isolation` sees, as text.
fn read_all(kafka: &KafkaConfig, topic: &str, isolation: &str) -> Vec<String> {
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = kafka
        .consumer(None)
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                seen.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return seen,
            _ => {}
        }
    }
    panic!("reading {topic} ({isolation}) did not reach the end: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_records_and_offsets_count_and_aborted_ones_do_not() {
    let kafka = kafka();
    let topic = tributary_test_support::random_topic("txn");
    let input = tributary_test_support::random_topic("txn-in");
    create_topic(&kafka, &topic).await;
    create_topic(&kafka, &input).await;
    let group = format!("{topic}-group");
    let (kafka2, topic2, input2, group2) =
        (kafka.clone(), topic.clone(), input.clone(), group.clone());
    tokio::task::spawn_blocking(move || {
        let settings = TxnSettings {
            transactional_id: format!("{topic2}-txn"),
            tuning: ProducerTuning { delivery_timeout_ms: 10_000, linger_ms: 5 },
            transaction_timeout_ms: Some(10_000),
            retry_backoff_ms: Some(5),
        };
        let producer = TransactionalProducer::start(&kafka2, &settings).expect("start");
        let consumer: BaseConsumer = kafka2.consumer(Some(&group2)).create().expect("consumer");
        let group_md = consumer.group_metadata().expect("group metadata");
        for v in ["a", "b", "c"] {
            producer.send(record(&topic2, v)).expect("send");
        }
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&input2, 0, Offset::Offset(42)).expect("offset");
        producer.commit(&offsets, group_md).expect("commit");
        producer.begin().expect("begin");
        for v in ["x", "y"] {
            producer.send(record(&topic2, v)).expect("send");
        }
        // An abort purges what is still queued: let these reach the log first, so that the
        // read_uncommitted reader has aborted records to see.
        let written = Instant::now() + Duration::from_secs(10);
        while producer.in_flight() > 0 && Instant::now() < written {
            std::thread::sleep(Duration::from_millis(5));
        }
        producer.abort().expect("abort");
        producer.begin().expect("begin after the abort");
        let group_md = consumer.group_metadata().expect("group metadata");
        producer.commit(&TopicPartitionList::new(), group_md).expect("an empty commit");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&input2, 0);
        let committed =
            consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        let e = committed.find_partition(&input2, 0).expect("the input partition");
        assert_eq!(e.offset(), Offset::Offset(42), "the offsets commit with the transaction");
    })
    .await
    .expect("the transactions");
    assert_eq!(read_all(&kafka, &topic, "read_committed"), ["a", "b", "c"]);
    assert_eq!(read_all(&kafka, &topic, "read_uncommitted"), ["a", "b", "c", "x", "y"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let kafka = kafka();
    let topic = tributary_test_support::random_topic("txn-fence");
    create_topic(&kafka, &topic).await;
    let outcome = tokio::task::spawn_blocking(move || {
        let settings = TxnSettings {
            transactional_id: format!("{topic}-txn"),
            tuning: ProducerTuning { delivery_timeout_ms: 10_000, linger_ms: 5 },
            transaction_timeout_ms: Some(10_000),
            retry_backoff_ms: None,
        };
        let first = TransactionalProducer::start(&kafka, &settings).expect("first");
        first.send(record(&topic, "zombie")).expect("send");
        let _second = TransactionalProducer::start(&kafka, &settings).expect("second");
        let consumer: BaseConsumer = kafka.consumer(Some(&topic)).create().expect("consumer");
        let group_md = consumer.group_metadata().expect("group metadata");
        first.commit(&TopicPartitionList::new(), group_md).map_err(|e| e.txn_class())
    })
    .await
    .expect("the producers");
    assert_eq!(outcome, Err(tributary_kafka::TxnClass::Fatal), "the zombie is fenced for good");
}
