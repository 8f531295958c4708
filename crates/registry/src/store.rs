//! The Kafka side of the registry: the compacted single-partition topic `_schemas`, a reader
//! thread that applies every record to the [`State`] in log order, and writes that return once
//! this instance has applied them (read-your-writes).

use crate::state::{RecordKey, State};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::watch;
use tributary_kafka::{KafkaConfig, KafkaError, ProducerTuning, Refusal};

/// The `_schemas` topic and the state read from it.
pub struct Store {
    topic: String,
    /// Asks for the end of the topic on every write. One client for the life of the store:
    /// a new one per write would pay a connection, TLS and SASL handshake each time, seconds on
    /// a busy SASL_SSL cluster, beyond a client's timeout.
    ends: Arc<Mutex<BaseConsumer>>,
    producer: FutureProducer,
    state: Arc<RwLock<State>>,
    /// Next offset the reader will apply: everything below it is in `state`.
    applied: watch::Receiver<i64>,
    stop: Arc<AtomicBool>,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// A failed topic operation; a refused one (a missing ACL) says so.
fn topic_error(what: String, code: RDKafkaErrorCode) -> KafkaError {
    let what = match Refusal::of(code) {
        Some(refusal) => format!("{what}: {}", refusal.describe()),
        None => what,
    };
    KafkaError::new(what, RdError::AdminOp(code))
}

impl Store {
    /// Creates `topic` if needed (one partition, compacted), starts the reader, and returns
    /// once everything already in the topic has been applied.
    pub async fn open(
        kafka: &KafkaConfig,
        topic: &str,
        replication_factor: Option<i16>,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        ensure_topic(kafka, topic, replication_factor, timeout).await?;
        let producer: FutureProducer = kafka
            .producer(ProducerTuning {
                delivery_timeout_ms: timeout.as_millis() as u64,
                linger_ms: 0,
            })
            .create()
            .map_err(|e| KafkaError::new("creating the registry producer", e))?;
        let state = Arc::new(RwLock::new(State::default()));
        let (applied_tx, applied) = watch::channel(0i64);
        let stop = Arc::new(AtomicBool::new(false));
        let consumer: BaseConsumer = kafka
            .consumer(None)
            .create()
            .map_err(|e| KafkaError::new("creating the registry reader", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| KafkaError::new("assigning _schemas", e))?;
        consumer.assign(&tpl).map_err(|e| KafkaError::new(format!("reading {topic}"), e))?;
        {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            let topic = topic.to_owned();
            std::thread::Builder::new()
                .name("registry-reader".into())
                .spawn(move || read_loop(&consumer, &topic, &state, &applied_tx, &stop))
                .map_err(|_| KafkaError::new("starting the registry reader", RdError::Canceled))?;
        }
        let ends: BaseConsumer = kafka
            .consumer(None)
            .create()
            .map_err(|e| KafkaError::new("creating a metadata client", e))?;
        let store = Self {
            topic: topic.to_owned(),
            ends: Arc::new(Mutex::new(ends)),
            producer,
            state,
            applied,
            stop,
            timeout,
        };
        store.sync().await?;
        Ok(store)
    }

    /// The state as applied so far.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until every record written to the topic before this call has been applied.
    pub async fn sync(&self) -> Result<(), KafkaError> {
        let ends = Arc::clone(&self.ends);
        let topic = self.topic.clone();
        let timeout = self.timeout;
        let end = tokio::task::spawn_blocking(move || {
            // Writes hold the registry's write lock already; this one only guards the client.
            let c = ends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Right after a broker (re)start the partition may have no leader for a moment:
            // retry within the timeout rather than fail the caller.
            let deadline = std::time::Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match c.fetch_watermarks(&topic, 0, Timeout::After(left.max(Duration::from_millis(100)))) {
                    Ok((_, high)) => return Ok(high),
                    Err(e) if std::time::Instant::now() < deadline => {
                        tracing::debug!(topic = %topic, error = %e, "fetching the end of the schema log; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(KafkaError::new(format!("fetching the end of {topic}"), e)),
                }
            }
        })
        .await
        .map_err(|_| KafkaError::new("fetching the end of _schemas", RdError::Canceled))??;
        self.wait_applied(end).await
    }

    async fn wait_applied(&self, offset: i64) -> Result<(), KafkaError> {
        let mut rx = self.applied.clone();
        tokio::time::timeout(self.timeout, rx.wait_for(|&a| a >= offset))
            .await
            .map_err(|_| {
                KafkaError::new(
                    format!("waiting to read {} up to offset {offset}", self.topic),
                    RdError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
                )
            })?
            .map_err(|_| KafkaError::new("the registry reader stopped", RdError::Canceled))?;
        Ok(())
    }

    /// Writes one record (a `None` value is a tombstone) and returns once it is applied here.
    pub async fn write(&self, key: &RecordKey, value: Option<Vec<u8>>) -> Result<(), KafkaError> {
        let key = serde_json::to_vec(key).unwrap_or_default();
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).key(&key[..]).partition(0);
        if let Some(v) = &value {
            record = record.payload(&v[..]);
        }
        let delivered = self
            .producer
            .send(record, Timeout::After(self.timeout))
            .await
            .map_err(|(e, _)| KafkaError::new(format!("writing to {}", self.topic), e))?;
        self.wait_applied(delivered.offset + 1).await
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_loop(
    consumer: &BaseConsumer,
    topic: &str,
    state: &RwLock<State>,
    applied: &watch::Sender<i64>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let key = m.key().unwrap_or_default();
                state
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .apply(key, m.payload());
                applied.send_replace(m.offset() + 1);
            }
            Some(Err(e)) => tracing::debug!(topic, error = %e, "reading the schema log"),
        }
    }
}

async fn ensure_topic(
    kafka: &KafkaConfig,
    topic: &str,
    replication_factor: Option<i16>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    // Reach the cluster first, so that a refused login or TLS handshake is named (an admin
    // request would just say OperationTimedOut).
    tributary_kafka::cause::reach(kafka, timeout).await?;
    let admin: AdminClient<DefaultClientContext> =
        kafka.base().create().map_err(|e| KafkaError::new("creating the admin client", e))?;
    // -1: the cluster's default.replication.factor (CreateTopics v4+).
    let factor = TopicReplication::Fixed(replication_factor.map_or(-1, i32::from));
    let new = NewTopic::new(topic, 1, factor)
        .set("cleanup.policy", "compact")
        .set("min.compaction.lag.ms", "0");
    let opts = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(|e| KafkaError::new(format!("creating {topic}"), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(topic_error(format!("creating {t}"), code)),
        }
    }
    // The log only orders records within one partition; refuse a topic with more.
    let c: BaseConsumer = kafka
        .consumer(None)
        .create()
        .map_err(|e| KafkaError::new("creating a metadata client", e))?;
    let topic_owned = topic.to_owned();
    let partitions = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let md = c.fetch_metadata(Some(&topic_owned), Timeout::After(timeout));
            if let Ok(md) = &md {
                if let Some(t) =
                    md.topics().iter().find(|t| t.name() == topic_owned && t.error().is_none())
                {
                    if !t.partitions().is_empty() && t.partitions().iter().all(|p| p.leader() >= 0)
                    {
                        return Ok(t.partitions().len());
                    }
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(KafkaError::new(
                    format!("waiting for {topic_owned} to have a leader"),
                    RdError::MetadataFetch(RDKafkaErrorCode::LeaderNotAvailable),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .map_err(|_| KafkaError::new("checking the schema topic", RdError::Canceled))??;
    if partitions != 1 {
        return Err(topic_error(
            format!("{topic} has {partitions} partitions; the schema log needs exactly 1"),
            RDKafkaErrorCode::InvalidPartitions,
        ));
    }
    Ok(())
}
