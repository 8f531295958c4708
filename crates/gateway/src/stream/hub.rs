//! Shared Kafka readers for streams: one tail reader per topic that fans every record out to
//! the live subscribers, and a bounded pool of permits for the readers that catch a client up
//! (and for `GET .../latest`).
//!
//! The tail reader is one librdkafka consumer assigned every partition of its topic at the
//! end. It owns its subscriber list and its positions (next offset per partition) and takes
//! new subscribers between records, so a subscriber's starting positions are exactly the
//! records it will be sent: nothing before them, everything after. Each subscriber has a
//! bounded channel; a subscriber whose channel is full is marked lagged and dropped, never
//! waited for. A reader with no subscribers for `ws_reader_idle_secs` closes.

use crate::AppState;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tributary_kafka::reader::{positioned_reader, ConsumedRecord, ReaderTuning, StartAt};
use tributary_kafka::KafkaError;

/// A record as every live subscriber gets it: decoded and serialized once.
#[derive(Debug)]
pub struct LiveRecord {
    pub partition: i32,
    pub offset: i64,
    /// The record's view as a JSON object (`{"partition":..}`).
    pub json: String,
}

/// What a subscriber receives when it joins a tail reader.
pub struct Subscription {
    /// The next offset per partition the reader will send: the subscriber gets every record
    /// at or after these, and none before.
    pub positions: BTreeMap<i32, i64>,
    pub rx: mpsc::Receiver<Arc<LiveRecord>>,
    /// Set when the subscriber fell a whole channel behind and was dropped.
    pub lagged: Arc<AtomicBool>,
}

impl Subscription {
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

/// A request to join a tail reader.
struct Join {
    reply: oneshot::Sender<Subscription>,
}

/// One live subscriber, as the tail reader holds it.
struct Subscriber {
    tx: mpsc::Sender<Arc<LiveRecord>>,
    lagged: Arc<AtomicBool>,
}

/// Where the join channel of a topic's tail reader is kept; its lock serializes starts.
type TailSlot = Arc<tokio::sync::Mutex<Option<mpsc::Sender<Join>>>>;

/// A place in the reader pool, counted in `gateway_pool_readers` while held.
pub struct PoolPermit {
    _permit: OwnedSemaphorePermit,
}

impl PoolPermit {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(crate::metrics::POOL_READERS).increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::POOL_READERS).decrement(1.0);
    }
}

/// The tail readers of every topic and the catch-up pool of one gateway.
pub struct Hubs {
    slots: Mutex<HashMap<String, TailSlot>>,
    pool: Arc<Semaphore>,
    pool_size: usize,
}

impl Hubs {
    /// Hubs with at most `pool_size` catch-up or `latest` readers at once.
    pub fn new(pool_size: usize) -> Self {
        let pool_size = pool_size.max(1);
        Self {
            slots: Mutex::new(HashMap::new()),
            pool: Arc::new(Semaphore::new(pool_size)),
            pool_size,
        }
    }

    /// A permit for one catch-up or `latest` reader, waiting at most `wait` (`None` when none
    /// came free in time).
    pub async fn reader_permit(&self, wait: Duration) -> Option<PoolPermit> {
        let acquire = self.pool.clone().acquire_owned();
        tokio::time::timeout(wait, acquire).await.ok().and_then(Result::ok).map(PoolPermit::new)
    }

    /// A permit for one catch-up reader, waiting as long as it takes.
    pub async fn reader_permit_wait(&self) -> Option<PoolPermit> {
        self.pool.clone().acquire_owned().await.ok().map(PoolPermit::new)
    }

    /// Most readers of the pool at once.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Joins the tail reader of `topic`, starting it if none runs.
    pub async fn join(&self, state: &AppState, topic: &str) -> Result<Subscription, KafkaError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            slots.entry(topic.to_owned()).or_default().clone()
        };
        // A reader may close (idle) between taking its sender and joining: then start anew.
        for _ in 0..3 {
            let ctrl = {
                let mut current = slot.lock().await;
                match current.as_ref() {
                    Some(ctrl) if !ctrl.is_closed() => ctrl.clone(),
                    _ => {
                        let ctrl = start_tail(state, topic).await?;
                        *current = Some(ctrl.clone());
                        ctrl
                    }
                }
            };
            let (reply, answer) = oneshot::channel();
            if ctrl.send(Join { reply }).await.is_ok() {
                if let Ok(sub) = answer.await {
                    return Ok(sub);
                }
            }
        }
        Err(reader_gone(topic))
    }
}

/// The error of a stream reader that could not be started or joined.
fn reader_gone(topic: &str) -> KafkaError {
    KafkaError::new(
        format!("starting the stream reader of {topic}"),
        RdError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
    )
}

/// Starts the tail reader of `topic`; its join channel.
async fn start_tail(state: &AppState, topic: &str) -> Result<mpsc::Sender<Join>, KafkaError> {
    let kafka = state.inner.kafka.clone();
    let name = topic.to_owned();
    let cfg = &state.inner.config;
    let tuning = ReaderTuning { prefetch_kbytes: cfg.ws_prefetch_kbytes, partition_eof: false };
    let timeout = Duration::from_millis(cfg.health_timeout_ms);
    let (consumer, positions) = tokio::task::spawn_blocking(move || {
        positioned_reader(&kafka, &name, &StartAt::Latest, tuning, timeout)
    })
    .await
    .map_err(|_| reader_gone(topic))??;
    let (ctrl, joins) = mpsc::channel(64);
    let tail = Tail {
        state: state.clone(),
        topic: topic.to_owned(),
        positions,
        subscribers: Vec::new(),
        capacity: cfg.ws_subscriber_buffer.max(1),
    };
    tracing::debug!(topic, "stream reader started");
    metrics::gauge!(crate::metrics::STREAM_READERS).increment(1.0);
    tokio::spawn(tail.run(consumer, joins));
    Ok(ctrl)
}

/// The tail reader of one topic.
struct Tail {
    state: AppState,
    topic: String,
    positions: BTreeMap<i32, i64>,
    subscribers: Vec<Subscriber>,
    capacity: usize,
}

impl Tail {
    async fn run(mut self, consumer: StreamConsumer, mut joins: mpsc::Receiver<Join>) {
        let idle_after = Duration::from_secs(self.state.inner.config.ws_reader_idle_secs);
        let mut shutdown = self.state.inner.shutdown.clone();
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut idle_since = Some(Instant::now());
        loop {
            tokio::select! {
                () = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                join = joins.recv() => match join {
                    Some(join) => self.add(join),
                    None => break,
                },
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        let record = ConsumedRecord::from_message(&msg);
                        drop(msg);
                        self.fan_out(record).await;
                    }
                    Err(err) => {
                        // librdkafka reconnects by itself; a partition error is worth a line.
                        tracing::debug!(topic = %self.topic, error = %err, "stream read error");
                    }
                },
                _ = check.tick() => {
                    self.subscribers.retain(|s| !s.tx.is_closed());
                    if !self.subscribers.is_empty() {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= idle_after {
                        break;
                    }
                }
            }
        }
        // Joins already queued see their reply dropped and start a new reader.
        joins.close();
        // Closing a librdkafka consumer blocks: not on a runtime thread.
        tokio::task::spawn_blocking(move || drop(consumer));
        tracing::debug!(topic = %self.topic, "stream reader closed");
        metrics::gauge!(crate::metrics::STREAM_READERS).decrement(1.0);
    }

    fn add(&mut self, join: Join) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let sub = Subscription { positions: self.positions.clone(), rx, lagged: lagged.clone() };
        if join.reply.send(sub).is_ok() {
            self.subscribers.push(Subscriber { tx, lagged });
        }
    }

    /// Sends `record` to every subscriber with room for it; drops the others.
    async fn fan_out(&mut self, record: ConsumedRecord) {
        self.positions.insert(record.partition, record.offset + 1);
        if self.subscribers.is_empty() {
            return;
        }
        let (partition, offset) = (record.partition, record.offset);
        let view = self.state.view(record).await;
        let json = serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_owned());
        let live = Arc::new(LiveRecord { partition, offset, json });
        self.subscribers.retain(|s| match s.tx.try_send(live.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.lagged.store(true, Ordering::Release);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        });
    }
}
