//! The dead-letter topic: read it, say what is in it, and write records back to the topic
//! they came from, exactly once.
//!
//! Three writers share the topic, each with its own headers: the processor and the sink put
//! `dlq.reason`, `dlq.error`, `dlq.source.topic|partition|offset` and `dlq.processed.at` next to
//! the record's own headers; Kafka Connect puts `__connect.errors.*`. [`DeadLetter`] reads
//! both, and keeps the record's own headers apart so that a replay writes back only those.
//!
//! A replay reads the topic with a consumer group of its own and commits that group's offsets
//! in the same Kafka transaction as the records it writes, so running it again (after a crash,
//! or on purpose) never writes a dead letter twice: it goes on from where the last run
//! committed. Records that do not match the filter are passed over for good by that group.

use crate::{KafkaConfig, KafkaError, ProducerTuning};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The reason given to Kafka Connect's dead letters (which say why in an exception instead).
pub const CONNECT_REASON: &str = "connect";
/// The reason given to records that carry no reason header at all.
pub const UNKNOWN_REASON: &str = "unknown";
/// The header a replayed record carries: `<dlq topic>/<partition>/<offset>` it was read from.
pub const REPLAYED_FROM: &str = "dlq.replayed.from";

/// One record of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    /// `dlq.reason`; [`CONNECT_REASON`] for Kafka Connect's; [`UNKNOWN_REASON`] without either.
    pub reason: String,
    /// `dlq.error`, or Connect's exception class and message.
    pub error: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    /// `dlq.processed.at` (RFC 3339), when there is one.
    pub processed_at: Option<String>,
    /// The record's timestamp (the original record's: dead letters keep it).
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The original record's own headers, without the dead-letter ones.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let mut ours: BTreeMap<&str, String> = BTreeMap::new();
        let mut headers = Vec::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                if h.key.starts_with("dlq.") || h.key.starts_with("__connect.errors.") {
                    let text = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    ours.insert(h.key, text.unwrap_or_default());
                } else {
                    headers.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
                }
            }
        }
        let connect = ours.keys().any(|k| k.starts_with("__connect.errors."));
        let reason = ours
            .get("dlq.reason")
            .cloned()
            .unwrap_or_else(|| if connect { CONNECT_REASON } else { UNKNOWN_REASON }.to_owned());
        let error = ours.get("dlq.error").cloned().or_else(|| {
            let class = ours.get("__connect.errors.exception.class.name")?;
            Some(match ours.get("__connect.errors.exception.message") {
                Some(message) => format!("{class}: {message}"),
                None => class.clone(),
            })
        });
        let field = |ours_key: &str, connect_key: &str| {
            ours.get(ours_key).or_else(|| ours.get(connect_key)).cloned()
        };
        Self {
            partition: m.partition(),
            offset: m.offset(),
            reason,
            error,
            source_topic: field("dlq.source.topic", "__connect.errors.topic"),
            source_partition: field("dlq.source.partition", "__connect.errors.partition")
                .and_then(|p| p.parse().ok()),
            source_offset: field("dlq.source.offset", "__connect.errors.offset")
                .and_then(|o| o.parse().ok()),
            processed_at: ours.get("dlq.processed.at").cloned(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Which dead letters a command is about; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<String>,
    pub source_topic: Option<String>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == d.reason)
            && self.source_topic.as_ref().is_none_or(|t| Some(t) == d.source_topic.as_ref())
    }
}

/// The readers here ask librdkafka to say when they reach the end of a partition; it also
/// reports that, after the fact, as a client error, which is no error here.
struct EndAware;

impl ClientContext for EndAware {
    fn error(&self, error: RdError, reason: &str) {
        let end = RDKafkaErrorCode::PartitionEOF;
        if !matches!(error, RdError::PartitionEOF(_)) && error.rdkafka_error_code() != Some(end) {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for EndAware {}

type Reader = BaseConsumer<EndAware>;

/// How long reading may go without any progress before it gives up.
const STALL: Duration = Duration::from_secs(30);

/// Partitions of `topic` as the cluster has them.
fn partitions(consumer: &Reader, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| KafkaError::new(format!("reading the metadata of {topic}"), e))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(KafkaError::new(
            format!("reading {topic}: the topic does not exist"),
            RdError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        ));
    }
    Ok(parts)
}

/// Polls `consumer` until every partition in `pending` reached its end (as it was when
/// reading started), handing each record to `f`.
fn read_to_end(
    consumer: &Reader,
    topic: &str,
    mut pending: BTreeSet<i32>,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let mut last_progress = Instant::now();
    while !pending.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                f(&m)?;
            }
            Some(Err(RdError::PartitionEOF(p))) => {
                last_progress = Instant::now();
                pending.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reading the dead-letter topic"),
            None if last_progress.elapsed() > STALL => {
                return Err(KafkaError::new(
                    format!("reading {topic}: no progress for {} s", STALL.as_secs()),
                    RdError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// Reads all of `topic` that is committed (to its end when the call started; later records
/// wait for the next call), handing every record to `f` in partition order.
pub fn scan(
    kafka: &KafkaConfig,
    topic: &str,
    mut f: impl FnMut(DeadLetter),
) -> Result<(), KafkaError> {
    let consumer: Reader = kafka
        .consumer(None)
        .set("enable.partition.eof", "true")
        .create_with_context(EndAware)
        .map_err(|e| KafkaError::new("creating a consumer", e))?;
    let parts = partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| KafkaError::new("assigning partitions", e))?;
    }
    consumer.assign(&tpl).map_err(|e| KafkaError::new(format!("assigning {topic}"), e))?;
    read_to_end(&consumer, topic, parts.into_iter().collect(), |m| {
        f(DeadLetter::from_message(m));
        Ok(())
    })
}

/// What [`replay`] is to do.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub filter: Filter,
    /// Write everything here instead of each record's source topic.
    pub to: Option<String>,
    /// The consumer group (and transactional id) whose committed offsets say what was
    /// replayed already.
    pub group: String,
    /// Count what would be replayed; write and commit nothing.
    pub dry_run: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters read (after what the group had done before).
    pub read: u64,
    /// Of those, matching the filter.
    pub matched: u64,
    /// Written back (on a dry run: would be), by destination topic.
    pub written: BTreeMap<String, u64>,
    /// Matching, but with no source topic to go back to (and no `to`): passed over.
    pub without_source: u64,
}

/// Records per transaction.
const BATCH: usize = 1_000;

/// Writes the dead letters of `dlq_topic` that match `opts.filter` back to their source topic
/// (or `opts.to`): the original key, value, timestamp and headers, plus [`REPLAYED_FROM`].
/// Exactly once per group: see the module documentation.
pub fn replay(
    kafka: &KafkaConfig,
    dlq_topic: &str,
    opts: &ReplayOptions,
) -> Result<ReplayReport, KafkaError> {
    let consumer: Reader = kafka
        .consumer(Some(&opts.group))
        .set("enable.partition.eof", "true")
        .create_with_context(EndAware)
        .map_err(|e| KafkaError::new("creating a consumer", e))?;
    let parts = partitions(&consumer, dlq_topic)?;
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition(dlq_topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .map_err(|e| KafkaError::new(format!("reading the offsets of group {}", opts.group), e))?;
    let mut start = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset(dlq_topic, e.partition(), offset)
            .map_err(|e| KafkaError::new("assigning partitions", e))?;
    }
    consumer.assign(&start).map_err(|e| KafkaError::new(format!("assigning {dlq_topic}"), e))?;

    let producer = if opts.dry_run {
        None
    } else {
        let tuning = ProducerTuning { delivery_timeout_ms: 60_000, linger_ms: 5 };
        let producer: ThreadedProducer<DefaultProducerContext> = kafka
            .producer(tuning)
            .set("transactional.id", &opts.group)
            .create()
            .map_err(|e| KafkaError::new("creating the producer", e))?;
        // Fences an earlier replay of this group that is still running.
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| KafkaError::new("initialising transactions", e))?;
        producer.begin_transaction().map_err(|e| KafkaError::new("beginning a transaction", e))?;
        Some(producer)
    };

    let mut report = ReplayReport::default();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut in_batch = 0usize;
    let commit = |producer: &ThreadedProducer<DefaultProducerContext>,
                  next: &BTreeMap<i32, i64>|
     -> Result<(), KafkaError> {
        let mut offsets = TopicPartitionList::new();
        for (&p, &o) in next {
            offsets
                .add_partition_offset(dlq_topic, p, Offset::Offset(o))
                .map_err(|e| KafkaError::new("recording offsets", e))?;
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| KafkaError::new("reading the group metadata", RdError::Canceled))?;
        let t = Duration::from_secs(30);
        let result = producer
            .send_offsets_to_transaction(&offsets, &group, t)
            .and_then(|()| producer.commit_transaction(t))
            .and_then(|()| producer.begin_transaction());
        result.map_err(|e| {
            let _ = producer.abort_transaction(t);
            KafkaError::new("committing the replay", e)
        })
    };
    read_to_end(&consumer, dlq_topic, parts.into_iter().collect(), |m| {
        report.read += 1;
        next.insert(m.partition(), m.offset() + 1);
        let d = DeadLetter::from_message(m);
        if !opts.filter.matches(&d) {
            return Ok(());
        }
        report.matched += 1;
        let target = match opts.to.as_ref().or(d.source_topic.as_ref()) {
            Some(t) if t != dlq_topic => t.clone(),
            _ => {
                report.without_source += 1;
                return Ok(());
            }
        };
        let Some(producer) = &producer else {
            // A dry run counts what it would write.
            *report.written.entry(target).or_default() += 1;
            return Ok(());
        };
        let from = format!("{dlq_topic}/{}/{}", d.partition, d.offset);
        let mut headers = OwnedHeaders::new();
        for (k, v) in &d.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        headers = headers.insert(Header { key: REPLAYED_FROM, value: Some(&from) });
        let mut record = BaseRecord::<[u8], [u8]>::to(&target).headers(headers);
        if let Some(k) = &d.key {
            record = record.key(k);
        }
        if let Some(v) = &d.value {
            record = record.payload(v);
        }
        if let Some(ts) = d.timestamp {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    let _ = producer.abort_transaction(Duration::from_secs(30));
                    return Err(KafkaError::new(format!("writing to {target}"), e));
                }
            }
        }
        *report.written.entry(target).or_default() += 1;
        in_batch += 1;
        if in_batch >= BATCH {
            commit(producer, &next)?;
            in_batch = 0;
        }
        Ok(())
    })?;
    if let Some(producer) = &producer {
        // The offsets move past everything read, replayed or passed over.
        if !next.is_empty() {
            commit(producer, &next)?;
        }
    }
    Ok(report)
}
