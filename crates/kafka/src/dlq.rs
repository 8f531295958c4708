//! The dead-letter topic: read it, say what is in it, and write records back to the topic
//! they came from, exactly once.
//!
//! Three writers share the topic: the processor and the sink write [`Letter::dead`]s,
//! which put `dlq.reason`, `dlq.error`, `dlq.source.topic|partition|offset` and
//! `dlq.processed.at` ([`header`]) next to the record's own headers; Kafka Connect puts
//! `__connect.errors.*`. [`DeadLetter`] reads both, and keeps the record's own headers apart so
//! that a replay writes back only those.
//!
//! A replay reads the topic with a consumer group of its own and commits that group's offsets
//! in the same Kafka transaction as the records it writes, so running it again (after a crash,
//! or on purpose) never writes a dead letter twice: it goes on from where the last run
//! committed. Records that do not match the filter are passed over for good by that group.

mod record;

/// The header a replayed record carries (see [`header::REPLAYED_FROM`]).
pub use record::header::REPLAYED_FROM;
pub use record::{header, DeadLetter, Filter, Letter, CONNECT_REASON, UNKNOWN_REASON};

use crate::txn::{TransactionalProducer, TxnSettings, TXN_TIMEOUT};
use crate::{KafkaConfig, KafkaError, ProducerTuning};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

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

/// A reader that reports the end of each partition, in consumer group `group` when given.
fn reader(kafka: &KafkaConfig, group: Option<&str>) -> Result<Reader, KafkaError> {
    kafka
        .consumer(group)
        .set("enable.partition.eof", "true")
        .create_with_context(EndAware)
        .map_err(|e| KafkaError::new("creating a consumer", e))
}

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
    let consumer = reader(kafka, None)?;
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
    let consumer = reader(kafka, Some(&opts.group))?;
    let parts = partitions(&consumer, dlq_topic)?;
    let start = resume_positions(&consumer, dlq_topic, &parts, &opts.group)?;
    consumer.assign(&start).map_err(|e| KafkaError::new(format!("assigning {dlq_topic}"), e))?;
    let producer = if opts.dry_run {
        None
    } else {
        let settings = TxnSettings {
            // Fences an earlier replay of this group that is still running.
            transactional_id: opts.group.clone(),
            tuning: ProducerTuning { delivery_timeout_ms: 60_000, linger_ms: 5 },
            transaction_timeout_ms: None,
            retry_backoff_ms: None,
        };
        Some(TransactionalProducer::start(kafka, &settings)?)
    };
    let mut report = ReplayReport::default();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut in_batch = 0usize;
    let commit = |producer: &TransactionalProducer, next: &BTreeMap<i32, i64>| {
        commit_replayed(producer, &consumer, dlq_topic, next)
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
        if let Err(e) = producer.send(Letter::replayed(dlq_topic, &target, &d).into_base_record()) {
            let _ = producer.abort();
            return Err(e);
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

/// Where `group` goes on in `topic`: its committed offsets, else the beginning.
fn resume_positions(
    consumer: &Reader,
    topic: &str,
    parts: &[i32],
    group: &str,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, TXN_TIMEOUT)
        .map_err(|e| KafkaError::new(format!("reading the offsets of group {group}"), e))?;
    let mut start = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset(topic, e.partition(), offset)
            .map_err(|e| KafkaError::new("assigning partitions", e))?;
    }
    Ok(start)
}

/// Commits what was written with the group's offsets `next` in `dlq_topic`, and begins the
/// next transaction; on failure, aborts (where Kafka still can) and gives up: a new run goes on
/// from the last commit.
fn commit_replayed(
    producer: &TransactionalProducer,
    consumer: &Reader,
    dlq_topic: &str,
    next: &BTreeMap<i32, i64>,
) -> Result<(), KafkaError> {
    let mut offsets = TopicPartitionList::new();
    for (&p, &o) in next {
        offsets
            .add_partition_offset(dlq_topic, p, Offset::Offset(o))
            .map_err(|e| KafkaError::new("recording offsets", e))?;
    }
    let group = consumer
        .group_metadata()
        .ok_or_else(|| KafkaError::new("reading the group metadata", RdError::Canceled))?;
    let result = producer.commit(&offsets, group).and_then(|()| producer.begin());
    if result.is_err() {
        let _ = producer.abort();
    }
    result
}
