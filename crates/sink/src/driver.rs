//! The Kafka side of the sink: a consumer group over the configured topics, a buffer, and
//! flushes that write rows and offsets to the warehouse in one DuckDB transaction — on a writer
//! thread, while the poll loop reads and decodes the next batch.
//!
//! Kafka offsets are committed after each flush, for lag monitoring only: the warehouse's own
//! offsets decide where a partition resumes, so a crash between the DuckDB commit and the Kafka
//! commit neither loses nor repeats rows.

use crate::config::SinkConfig;
use crate::metrics as m;
use crate::warehouse::{Batch, Row, Warehouse};
use crate::Error;
use base64::Engine as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tributary_core::{Catalog, TopicRole};
use tributary_kafka::group::{
    poll_until_stopped, run_with_rebuilds, GroupContext, GroupHandler, Liveness,
};
use tributary_kafka::{EventProducer, KafkaConfig, OutgoingRecord, ProducerTuning};

/// The sink's consumer.
type Member = BaseConsumer<GroupContext<Core>>;
use tributary_schema::client::RegistryClient;
use tributary_schema::decode::{DecodeError, Decoder};

#[derive(Debug)]
struct Source {
    topic: Arc<str>,
    table: Arc<str>,
    /// Dead letters are stored whatever their bytes are, never dead-lettered again.
    dead_letters: bool,
}

/// What the health endpoint reports.
#[derive(Debug, Default)]
pub struct Status {
    /// The poll loop runs and passes.
    pub liveness: Liveness,
    pub last_flush_ms: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Why a flush happened: the `trigger` label.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Count,
    Bytes,
    Time,
    Rebalance,
    Shutdown,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Count => "count",
            Trigger::Bytes => "bytes",
            Trigger::Time => "time",
            Trigger::Rebalance => "rebalance",
            Trigger::Shutdown => "shutdown",
        }
    }
}

struct Core {
    config: Arc<SinkConfig>,
    sources: Arc<Vec<Source>>,
    decoder: Arc<Decoder>,
    dlq: Arc<EventProducer>,
    runtime: tokio::runtime::Handle,
    warehouse: Arc<Mutex<Warehouse>>,
    batch: Batch,
    bytes: usize,
    oldest: Option<Instant>,
    failed: Option<String>,
    writer: Writer,
}

/// The warehouse writes, on a thread of their own: a flush hands its batch over and returns,
/// so the next batch is read and decoded while this one is written. One batch at a time: a
/// flush waits for the one before it, so batches commit in order, and none is written after
/// one that failed (its offsets would skip the failed batch's rows).
struct Writer {
    batches: Option<std::sync::mpsc::SyncSender<(Batch, Trigger)>>,
    /// Per batch, in order: its offsets once it is in the warehouse, or why it is not.
    results: std::sync::mpsc::Receiver<Result<Offsets, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The partitions of the batch being written, with their next offsets.
    in_flight: Option<Offsets>,
}

/// The next offset per (topic, partition) of a batch.
type Offsets = HashMap<(Arc<str>, i32), i64>;

impl Writer {
    fn start(warehouse: Arc<Mutex<Warehouse>>, status: Arc<Status>) -> Self {
        let (batches, inbox) = std::sync::mpsc::sync_channel::<(Batch, Trigger)>(1);
        let (outbox, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sink-writer".into())
            .spawn(move || {
                for (batch, trigger) in inbox {
                    let started = Instant::now();
                    let result = warehouse
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .write(&batch);
                    let failed = result.is_err();
                    let sent = outbox.send(match result {
                        Ok(()) => {
                            metrics::histogram!(m::FLUSH_DURATION)
                                .record(started.elapsed().as_secs_f64());
                            metrics::histogram!(m::FLUSH_ROWS).record(batch.row_count() as f64);
                            metrics::counter!(m::FLUSHES, "trigger" => trigger.label())
                                .increment(1);
                            for (table, r) in &batch.rows {
                                metrics::counter!(m::ROWS_WRITTEN, "table" => table.to_string())
                                    .increment(r.len() as u64);
                            }
                            status.last_flush_ms.store(now_ms(), Ordering::Relaxed);
                            Ok(batch.offsets)
                        }
                        Err(e) => Err(e.to_string()),
                    });
                    if failed || sent.is_err() {
                        break;
                    }
                }
            })
            .ok();
        Self { batches: Some(batches), results, thread, in_flight: None }
    }

    /// Hands `batch` to the writer thread; false when the thread is gone.
    fn send(&mut self, batch: Batch, trigger: Trigger) -> bool {
        let offsets = batch.offsets.clone();
        let sent = self.batches.as_ref().is_some_and(|b| b.send((batch, trigger)).is_ok());
        if sent {
            self.in_flight = Some(offsets);
        }
        sent
    }

    /// The outcome of the batch in flight: waits for it when `wait`, else only looks.
    /// `None` when nothing is in flight (or, without waiting, it is not written yet).
    fn outcome(&mut self, wait: bool) -> Option<Result<Offsets, String>> {
        self.in_flight.as_ref()?;
        let r = if wait {
            self.results.recv().map_err(|_| "the warehouse writer stopped".to_owned())
        } else {
            match self.results.try_recv() {
                Ok(r) => Ok(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    Err("the warehouse writer stopped".to_owned())
                }
            }
        };
        self.in_flight = None;
        Some(r.and_then(|w| w))
    }

    /// Whether the buffer of the batch in flight holds `topic` [`partition`].
    fn holds(&self, topic: &str, partition: i32) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|o| o.keys().any(|(t, p)| &**t == topic && *p == partition))
    }
}

impl Drop for Writer {
    /// Lets the batch in flight finish before anything else opens the warehouse: a new
    /// consumer that read the offsets before it committed would load its rows again.
    fn drop(&mut self) {
        self.batches = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Core {
    fn source(&self, topic: &str) -> Option<usize> {
        self.sources.iter().position(|s| &*s.topic == topic)
    }

    fn warehouse(&self) -> MutexGuard<'_, Warehouse> {
        self.warehouse.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Buffers one record (or dead-letters it).
    fn add(&mut self, msg: &BorrowedMessage<'_>) {
        if self.failed.is_some() {
            return;
        }
        let Some(src) = self.source(msg.topic()) else { return };
        let sources = Arc::clone(&self.sources);
        let source = &sources[src];
        let decoded = self.decoder.decode_with_id(msg.payload());
        let (schema_id, content) = match decoded {
            Ok(v) => v,
            Err(DecodeError::Unavailable(e)) => {
                tracing::warn!(error = %e, "schema registry unavailable");
                self.failed = Some("registry_unavailable".into());
                return;
            }
            Err(DecodeError::Bad(_)) if source.dead_letters => {
                // Stored as they are: a dead letter's bytes are whatever failed elsewhere.
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(msg.payload().unwrap_or_default());
                (None, json!({ "undecoded_base64": b64 }))
            }
            Err(DecodeError::Bad(message)) => {
                self.dead_letter(msg, &message);
                self.batch
                    .offsets
                    .insert((Arc::clone(&source.topic), msg.partition()), msg.offset() + 1);
                return;
            }
        };
        let row =
            Row { metadata: metadata(msg, schema_id).to_string(), content: content.to_string() };
        self.bytes += row.metadata.len() + row.content.len();
        self.batch.rows.entry(Arc::clone(&source.table)).or_default().push(row);
        self.batch.offsets.insert((Arc::clone(&source.topic), msg.partition()), msg.offset() + 1);
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Sends an undecodable record to the dead-letter topic and waits for Kafka to have it, so
    /// the flush that moves past its offset never loses it.
    fn dead_letter(&mut self, msg: &BorrowedMessage<'_>, message: &str) {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let headers: [(&str, &[u8]); 6] = [
            ("dlq.reason", b"undecodable"),
            ("dlq.error", message.as_bytes()),
            ("dlq.source.topic", msg.topic().as_bytes()),
            ("dlq.source.partition", partition.as_bytes()),
            ("dlq.source.offset", offset.as_bytes()),
            ("dlq.processed.at", at.as_bytes()),
        ];
        let record = OutgoingRecord {
            topic: &self.config.dlq_topic,
            key: msg.key(),
            value: msg.payload().unwrap_or_default(),
            headers: &headers,
            timestamp_ms: msg.timestamp().to_millis(),
        };
        let dlq = Arc::clone(&self.dlq);
        match self.runtime.block_on(dlq.send(record)) {
            Ok(_) => {
                metrics::counter!(m::DEAD_LETTERS, "reason" => "undecodable").increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing a dead letter");
                self.failed = Some("dead_letter".into());
            }
        }
    }

    fn due(&self) -> Option<Trigger> {
        let c = &self.config;
        if self.batch.row_count() >= c.buffer_count_records {
            Some(Trigger::Count)
        } else if self.bytes >= c.buffer_size_bytes {
            Some(Trigger::Bytes)
        } else if self.oldest.is_some_and(|t| t.elapsed().as_secs_f64() >= c.buffer_flush_time_secs)
            || (!self.batch.is_empty() && self.batch.row_count() == 0)
        {
            Some(Trigger::Time)
        } else {
            None
        }
    }

    /// Hands the buffer to the writer, which writes its rows and offsets in one DuckDB
    /// transaction while the next records are read; the batch before it must be written
    /// first.
    fn flush(&mut self, consumer: &Member, trigger: Trigger) {
        self.settle(consumer, true);
        if self.failed.is_some() || self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.oldest = None;
        if !self.writer.send(batch, trigger) {
            tracing::error!("the warehouse writer stopped");
            self.failed = Some("warehouse".into());
        }
    }

    /// Takes the outcome of the batch in flight (waiting for it when `wait`): commits its
    /// offsets to Kafka (for lag monitoring only), or fails the member when it could not be
    /// written.
    fn settle(&mut self, consumer: &Member, wait: bool) {
        match self.writer.outcome(wait) {
            None => {}
            Some(Ok(offsets)) => {
                let mut tpl = TopicPartitionList::new();
                for ((topic, partition), next) in &offsets {
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
                }
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!(error = %e, "committing offsets to Kafka (monitoring only)");
                }
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "writing to the warehouse");
                self.failed.get_or_insert_with(|| "warehouse".into());
            }
        }
    }

    /// New partitions resume where the warehouse's rows end.
    fn assign(&mut self, consumer: &Member, tpl: &mut TopicPartitionList) {
        // The batch in flight may hold these partitions' last rows (a partition can come
        // back): read the offsets once it is in.
        self.settle(consumer, true);
        let mut by_topic: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        for e in tpl.elements() {
            if !by_topic.contains_key(e.topic()) {
                let read = self.warehouse().offsets(e.topic());
                match read {
                    Ok(o) => {
                        by_topic.insert(e.topic().to_owned(), o);
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "reading offsets from the warehouse");
                        self.failed = Some("warehouse".into());
                        return;
                    }
                }
            }
        }
        let partitions: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        for (topic, partition) in partitions {
            let next = by_topic.get(&topic).and_then(|o| o.get(&partition)).copied();
            tracing::info!(topic = %topic, partition, from = ?next, "partition assigned");
            if let Some(next) = next {
                let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(next));
            }
        }
    }

    fn stats(&mut self, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            if self.source(topic).is_none() {
                continue;
            }
            for (&p, part) in &t.partitions {
                if p < 0 || part.ls_offset < 0 || part.committed_offset < 0 {
                    continue;
                }
                // The committed offset is one past the last row written; on a transactional
                // topic a commit marker follows it, which would count as one record behind
                // for ever. With nothing of the partition waiting in the buffer, everything
                // the consumer has passed (markers included) is in the warehouse.
                let buffered = self.batch.offsets.keys().any(|(t, q)| **t == **topic && *q == p)
                    || self.writer.holds(topic, p);
                let done = if buffered {
                    part.committed_offset
                } else {
                    part.committed_offset.max(part.app_offset)
                };
                let lag = (part.ls_offset - done).max(0);
                metrics::gauge!(m::LAG, "topic" => topic.clone(), "partition" => p.to_string())
                    .set(lag as f64);
            }
        }
    }
}

/// Record metadata as the Snowflake connector writes it.
fn metadata(msg: &BorrowedMessage<'_>, schema_id: Option<u32>) -> Value {
    let mut md = Map::new();
    md.insert("topic".into(), json!(msg.topic()));
    md.insert("partition".into(), json!(msg.partition()));
    md.insert("offset".into(), json!(msg.offset()));
    match msg.timestamp() {
        Timestamp::CreateTime(t) => {
            md.insert("CreateTime".into(), json!(t));
        }
        Timestamp::LogAppendTime(t) => {
            md.insert("LogAppendTime".into(), json!(t));
        }
        Timestamp::NotAvailable => {}
    }
    if let Some(k) = msg.key() {
        md.insert("key".into(), json!(String::from_utf8_lossy(k)));
    }
    if let Some(id) = schema_id {
        md.insert("schema_id".into(), json!(id));
    }
    if let Some(h) = msg.headers() {
        let headers: Map<String, Value> = h
            .iter()
            .map(|x| {
                (x.key.to_owned(), json!(x.value.map(|v| String::from_utf8_lossy(v).into_owned())))
            })
            .collect();
        md.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(md)
}

impl GroupHandler for Core {
    fn assign(&mut self, consumer: &Member, tpl: &mut TopicPartitionList) {
        Core::assign(self, consumer, tpl);
    }

    /// What is buffered goes to the warehouse before the partitions move.
    fn revoke(&mut self, consumer: &Member, _tpl: &TopicPartitionList) {
        self.flush(consumer, Trigger::Rebalance);
        self.settle(consumer, true);
    }

    fn stats(&mut self, stats: &Statistics) {
        Core::stats(self, stats);
    }

    fn fail(&mut self, reason: &str) {
        self.failed.get_or_insert_with(|| reason.to_owned());
    }

    fn failure(&self) -> Option<String> {
        self.failed.clone()
    }

    fn message(&mut self, _consumer: &Member, msg: &BorrowedMessage<'_>) {
        self.add(msg);
    }

    fn tick(&mut self, consumer: &Member) {
        self.settle(consumer, false);
        if let Some(trigger) = self.due() {
            self.flush(consumer, trigger);
        }
    }

    fn finish(&mut self, consumer: &Member) {
        self.flush(consumer, Trigger::Shutdown);
        self.settle(consumer, true);
    }
}

/// A configured sink, ready to [`Sink::run`].
pub struct Sink {
    config: Arc<SinkConfig>,
    kafka: KafkaConfig,
    sources: Arc<Vec<Source>>,
    decoder: Arc<Decoder>,
    dlq: Arc<EventProducer>,
    runtime: tokio::runtime::Handle,
    warehouse: Arc<Mutex<Warehouse>>,
    status: Arc<Status>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("topics", &self.sources.len()).finish_non_exhaustive()
    }
}

impl Sink {
    /// Opens the warehouse and creates a table per topic. Runs outside the async runtime.
    pub fn setup(
        config: SinkConfig,
        kafka: KafkaConfig,
        catalog: &Catalog,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, Error> {
        if config.buffer_count_records == 0
            || config.buffer_size_bytes == 0
            || config.buffer_flush_time_secs <= 0.0
        {
            return Err(Error::Setup("[sink] buffer_count_records, buffer_size_bytes and buffer_flush_time_secs must be positive".into()));
        }
        let topics: Vec<String> = if config.topics.is_empty() {
            catalog
                .iter()
                .filter(|t| {
                    matches!(t.role, TopicRole::Source | TopicRole::Output | TopicRole::DeadLetter)
                })
                .map(|t| t.name.clone())
                .collect()
        } else {
            config.topics.clone()
        };
        let path = config.database_path();
        let warehouse = Warehouse::open(&path, config.warehouse_threads)
            .map_err(|e| Error::Setup(format!("opening the warehouse {}: {e}", path.display())))?;
        let mut sources = Vec::new();
        for topic in topics {
            let role = catalog.get(&topic).map(|t| t.role);
            let table = config.table_for(&topic);
            warehouse
                .ensure_table(&table, role == Some(TopicRole::Output))
                .map_err(|e| Error::Setup(format!("creating table raw.{table}: {e}")))?;
            sources.push(Source {
                topic: topic.into(),
                table: table.into(),
                dead_letters: role == Some(TopicRole::DeadLetter),
            });
        }
        let registry = Arc::new(RegistryClient::from_config(&config.registry));
        let dlq = EventProducer::new(&kafka, ProducerTuning::default())?;
        Ok(Self {
            config: Arc::new(config),
            kafka,
            sources: Arc::new(sources),
            decoder: Arc::new(Decoder::new(registry, runtime.clone())),
            dlq: Arc::new(dlq),
            runtime,
            warehouse: Arc::new(Mutex::new(warehouse)),
            status: Arc::new(Status::default()),
        })
    }

    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status)
    }

    /// A second connection for queries while the sink writes.
    pub fn reader(&self) -> Result<duckdb::Connection, Error> {
        self.warehouse
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reader()
            .map_err(|e| Error::Setup(format!("opening a reader: {e}")))
    }

    /// Loads until `stop` is set, rebuilding the consumer after errors.
    pub fn run(&self, stop: &AtomicBool) -> Result<(), Error> {
        run_with_rebuilds(
            stop,
            || self.run_once(stop),
            |reason| {
                metrics::counter!(m::REBUILDS, "reason" => reason.to_owned()).increment(1);
            },
        );
        Ok(())
    }

    fn run_once(&self, stop: &AtomicBool) -> Result<(), String> {
        let core = Core {
            config: Arc::clone(&self.config),
            sources: Arc::clone(&self.sources),
            decoder: Arc::clone(&self.decoder),
            dlq: Arc::clone(&self.dlq),
            runtime: self.runtime.clone(),
            warehouse: Arc::clone(&self.warehouse),
            batch: Batch::default(),
            bytes: 0,
            oldest: None,
            failed: None,
            writer: Writer::start(Arc::clone(&self.warehouse), Arc::clone(&self.status)),
        };
        let mut c = self.kafka.consumer(Some(&self.config.group_id));
        if c.get("partition.assignment.strategy").is_none() {
            c.set("partition.assignment.strategy", "cooperative-sticky");
        }
        c.set("statistics.interval.ms", "5000");
        let consumer: Member = c.create_with_context(GroupContext::new(core)).map_err(|e| {
            tracing::warn!(error = %e, "creating the consumer");
            "consumer".to_owned()
        })?;
        let topics: Vec<&str> = self.sources.iter().map(|s| &*s.topic).collect();
        tracing::info!(topics = ?topics, database = %self.config.database_path().display(), "sink running");
        let result = poll_until_stopped(&consumer, &topics, stop, &self.status.liveness);
        drop(consumer);
        result
    }
}
