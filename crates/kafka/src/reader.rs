//! Reading without a consumer group: the newest records of a topic, and positioned readers
//! for live streams (a topic's shared tail reader and the readers that catch a stream up).
//! Both read `read_committed`.

use crate::config::KafkaConfig;
use crate::error::KafkaError;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A record read from Kafka, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp in epoch milliseconds, when the record has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ConsumedRecord {
    /// Copies a borrowed message out of librdkafka's buffers.
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Where a positioned reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// Next offset to read per partition; partitions not listed start at the earliest offset.
    Offsets(BTreeMap<i32, i64>),
}

/// Time left until `deadline`, as a librdkafka timeout; an error once it has passed.
fn left(deadline: Instant, what: &str) -> Result<Timeout, KafkaError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(KafkaError::new(
            what.to_owned(),
            RdError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
        ));
    }
    Ok(Timeout::After(left))
}

/// Low and high watermarks of every partition of `topic`, all within one `deadline`.
fn watermarks(
    consumer: &impl Consumer,
    topic: &str,
    deadline: Instant,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let what = format!("fetching offsets of {topic}");
    let md = consumer
        .fetch_metadata(Some(topic), left(deadline, &what)?)
        .map_err(|e| KafkaError::new(format!("fetching metadata of {topic}"), e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::new(
            format!("fetching metadata of {topic}"),
            RdError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        ));
    };
    if let Some(err) = t.error() {
        return Err(KafkaError::new(
            format!("fetching metadata of {topic}"),
            RdError::MetadataFetch(err.into()),
        ));
    }
    t.partitions()
        .iter()
        .map(|p| {
            let (low, high) =
                consumer.fetch_watermarks(topic, p.id(), left(deadline, &what)?).map_err(|e| {
                    KafkaError::new(format!("fetching offsets of {topic}/{}", p.id()), e)
                })?;
            Ok((p.id(), low, high))
        })
        .collect()
}

/// The newest `limit` committed records of `topic` across all partitions, newest first
/// (by record timestamp, then offset). Blocking; run it on a blocking thread.
pub fn read_latest(
    config: &KafkaConfig,
    topic: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let deadline = Instant::now() + timeout;
    let mut cc = config.consumer(None);
    cc.set("enable.partition.eof", "true").set("fetch.wait.max.ms", "50");
    let consumer: BaseConsumer =
        cc.create().map_err(|e| KafkaError::new("creating a reader", e))?;
    let marks = watermarks(&consumer, topic, deadline)?;
    let mut tpl = TopicPartitionList::new();
    let mut pending = 0usize;
    let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
    for &(p, low, high) in &marks {
        if high > low {
            let start = (high - limit_i).max(low);
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(|e| KafkaError::new("assigning partitions", e))?;
            pending += 1;
        }
    }
    if pending == 0 {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl).map_err(|e| KafkaError::new("assigning partitions", e))?;
    let ends: BTreeMap<i32, i64> = marks.iter().map(|&(p, _, h)| (p, h)).collect();
    let mut done: BTreeMap<i32, bool> = BTreeMap::new();
    let mut out = Vec::new();
    while done.len() < pending {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(Timeout::After(left.min(Duration::from_millis(200)))) {
            None => {}
            Some(Ok(m)) => {
                let rec = ConsumedRecord::from_message(&m);
                if ends.get(&rec.partition).is_some_and(|&h| rec.offset + 1 >= h) {
                    done.insert(rec.partition, true);
                }
                out.push(rec);
            }
            Some(Err(RdError::PartitionEOF(p))) => {
                done.insert(p, true);
            }
            Some(Err(e)) => return Err(KafkaError::new(format!("reading {topic}"), e)),
        }
    }
    out.sort_by(|a, b| {
        b.timestamp_ms
            .cmp(&a.timestamp_ms)
            .then(b.offset.cmp(&a.offset))
            .then(a.partition.cmp(&b.partition))
    });
    out.truncate(limit);
    Ok(out)
}

/// How a positioned reader is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderTuning {
    /// librdkafka's prefetch for the reader, in KiB (at least 64).
    pub prefetch_kbytes: u32,
    /// Report reaching the end of each partition (`PartitionEOF`), as a reader that catches up
    /// to a known position needs.
    pub partition_eof: bool,
}

/// A reader of every partition of `topic`, positioned as `start` says, and the next offset it
/// will read per partition (the first resume position). Blocking; run it on a blocking thread.
pub fn positioned_reader(
    config: &KafkaConfig,
    topic: &str,
    start: &StartAt,
    tuning: ReaderTuning,
    timeout: Duration,
) -> Result<(StreamConsumer, BTreeMap<i32, i64>), KafkaError> {
    let mut cc = config.consumer(None);
    // Bound what librdkafka buffers for one reader: a slow reader must not hold megabytes.
    // A reader that catches up waits for the end of every partition: an empty fetch should
    // come back at once, not after the tail's 100 ms.
    let fetch_wait = if tuning.partition_eof { "10" } else { "100" };
    cc.set("queued.max.messages.kbytes", tuning.prefetch_kbytes.max(64).to_string())
        .set("fetch.wait.max.ms", fetch_wait)
        .set("enable.partition.eof", if tuning.partition_eof { "true" } else { "false" });
    let consumer: StreamConsumer =
        cc.create().map_err(|e| KafkaError::new("creating a stream reader", e))?;
    // The reader asks for the offsets itself: a second client per reader doubled the cost
    // of every stream that catches up.
    let marks = watermarks(&consumer, topic, Instant::now() + timeout)?;
    let mut positions = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &(p, low, high) in &marks {
        let next = match start {
            StartAt::Earliest => low,
            StartAt::Latest => high,
            // A resume position below the retained range restarts at the earliest retained
            // record: those in between are gone from Kafka, not skipped by us.
            StartAt::Offsets(map) => map.get(&p).copied().unwrap_or(low).clamp(low, high.max(low)),
        };
        positions.insert(p, next);
        tpl.add_partition_offset(topic, p, Offset::Offset(next))
            .map_err(|e| KafkaError::new("assigning partitions", e))?;
    }
    consumer.assign(&tpl).map_err(|e| KafkaError::new("assigning partitions", e))?;
    Ok((consumer, positions))
}
