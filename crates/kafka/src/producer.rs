//! The acknowledged-write producer: a record counts as written only when the broker says so.

use crate::config::{KafkaConfig, ProducerTuning};
use crate::error::KafkaError;
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;

/// Where the broker put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// One record to write. Borrowed so the hot path copies bytes only into librdkafka.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingRecord<'a> {
    pub topic: &'a str,
    /// Record key; partitioned with murmur2 when present.
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Record timestamp in epoch milliseconds; the broker's producer time when `None`.
    pub timestamp_ms: Option<i64>,
}

/// Brokers a metadata request could see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub brokers: usize,
    pub topics: usize,
}

/// Idempotent `acks=all` producer configured as the spec says.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
    tuning: ProducerTuning,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").field("tuning", &self.tuning).finish_non_exhaustive()
    }
}

impl EventProducer {
    /// Creates the producer. No connection is made until the first request.
    pub fn new(config: &KafkaConfig, tuning: ProducerTuning) -> Result<Self, KafkaError> {
        let inner = config
            .producer(tuning)
            .create()
            .map_err(|e| KafkaError::new("creating the kafka producer", e))?;
        Ok(Self { inner, tuning })
    }

    /// Writes one record and waits for the broker's acknowledgement, or for the delivery
    /// timeout, whichever comes first.
    pub async fn send(&self, record: OutgoingRecord<'_>) -> Result<Delivered, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in record.headers {
            headers = headers.insert(Header { key: name, value: Some(*value) });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(record.topic).payload(record.value).headers(headers);
        if let Some(key) = record.key {
            fr = fr.key(key);
        }
        if let Some(ts) = record.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        // A full local queue waits at most as long as a delivery may take.
        let queue_timeout = Duration::from_millis(self.tuning.delivery_timeout_ms);
        match self.inner.send(fr, Timeout::After(queue_timeout)).await {
            Ok(d) => Ok(Delivered { partition: d.partition, offset: d.offset }),
            Err((e, _)) => Err(KafkaError::new(format!("producing to {}", record.topic), e)),
        }
    }

    /// Asks a broker for cluster metadata, within `timeout`. Used by health checks.
    pub async fn cluster_info(&self, timeout: Duration) -> Result<ClusterInfo, KafkaError> {
        let producer = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, Timeout::After(timeout))
        })
        .await
        .map_err(|_| KafkaError::new("fetching cluster metadata", RdError::Canceled))?;
        let md = result.map_err(|e| KafkaError::new("fetching cluster metadata", e))?;
        if md.brokers().is_empty() {
            return Err(KafkaError::new(
                "fetching cluster metadata",
                RdError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::AllBrokersDown),
            ));
        }
        Ok(ClusterInfo { brokers: md.brokers().len(), topics: md.topics().len() })
    }

    /// Waits until every queued record is delivered or failed, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|_| KafkaError::new("flushing the producer", RdError::Canceled))?
            .map_err(|e| KafkaError::new("flushing the producer", e))
    }

    /// Records waiting in librdkafka's queue (not yet acknowledged).
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
