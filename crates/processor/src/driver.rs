//! The Kafka side: a consumer group over the source topics, one [`Task`] per assigned
//! partition, and a transactional producer that commits window results, dead letters and the
//! consumed offsets (with each task's [`Checkpoint`]) as one transaction per commit interval.
//!
//! Errors are classified once, in [`Core::fail`]: a retriable error is retried in place; an
//! error that requires an abort aborts the transaction; anything else (fatal, fenced, timed
//! out, ambiguous) drops the producer. In both latter cases the consumer and producer are
//! rebuilt — the producer with the same `transactional.id`, which fences any zombie — and every
//! partition restarts from its last committed checkpoint, exactly as after a crash.

use crate::config::ProcessorConfig;
use crate::metrics as m;
use crate::record::{Accepted, DecodeError, Decoder, Filter, Reason, Rejected};
use crate::reference::{References, Table};
use crate::task::{Checkpoint, Outcome, Task, TaskConfig};
use crate::watermark::WatermarkConfig;
use crate::window::{WindowConfig, WindowKind, WindowResult};
use crate::Error;
use chrono::{SecondsFormat, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_core::{aggregate_topic, Catalog, ValueFormat};
use tributary_kafka::group::{
    poll_until_stopped, run_with_rebuilds, GroupContext, GroupHandler, Liveness,
};
use tributary_kafka::{KafkaConfig, ProducerTuning};

/// The processor's consumer.
type Member = BaseConsumer<GroupContext<Core>>;
use tributary_schema::client::RegistryClient;
use tributary_schema::compat::{ParsedSchema, SchemaType};

/// The Avro schema of window results.
pub const AGGREGATE_AVSC: &str = include_str!("../../../schemas/aggregate.avsc");

/// How results of one output topic are encoded.
#[derive(Debug)]
enum Encoding {
    Avro { id: u32, schema: Arc<ParsedSchema> },
    Json,
}

#[derive(Debug)]
struct Output {
    topic: String,
    encoding: Encoding,
}

#[derive(Debug)]
struct Source {
    topic: String,
    /// Per-record counters, registered once (the hot path only increments them).
    records_in: metrics::Counter,
    records_replayed: metrics::Counter,
    late: metrics::Counter,
    filter: Filter,
    /// The tumbling (`1m`) and sliding (`5m`) result topics.
    outputs: [Output; 2],
    reference: Option<(String, Arc<Table>)>,
}

/// What every part of the processor reads and nobody changes.
#[derive(Debug)]
struct Shared {
    config: ProcessorConfig,
    kafka: KafkaConfig,
    sources: Vec<Source>,
    decoder: Decoder,
    task: TaskConfig,
    transactional_id: String,
}

impl Shared {
    fn source_index(&self, topic: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.topic == topic)
    }

    /// A transactional producer, initialised (which fences the previous producer with this
    /// `transactional.id` and aborts what it left open) and in a transaction.
    fn producer(&self) -> Result<ThreadedProducer<DefaultProducerContext>, String> {
        let cfg = &self.config;
        let tuning =
            ProducerTuning { delivery_timeout_ms: cfg.transaction_timeout_ms, linger_ms: 5 };
        let mut c = self.kafka.producer(tuning);
        c.set("transactional.id", &self.transactional_id)
            .set("transaction.timeout.ms", cfg.transaction_timeout_ms.to_string());
        if c.get("retry.backoff.ms").is_none() {
            // Right after a commit the coordinator answers CONCURRENT_TRANSACTIONS until its
            // markers are written; librdkafka retries after retry.backoff.ms (100 ms by
            // default), which capped the processor at ten transactions a second.
            c.set("retry.backoff.ms", "5");
        }
        let producer: ThreadedProducer<DefaultProducerContext> =
            c.create().map_err(|e| format!("creating the producer: {e}"))?;
        // Fences the previous producer with this transactional id and aborts what it left open.
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| format!("init_transactions: {e}"))?;
        producer.begin_transaction().map_err(|e| format!("begin_transaction: {e}"))?;
        Ok(producer)
    }
}

/// What the health endpoint reports.
#[derive(Debug, Default)]
pub struct Status {
    /// Partitions assigned to this instance.
    pub assigned: AtomicUsize,
    /// Wall-clock ms of the last committed transaction.
    pub last_commit_ms: AtomicI64,
    /// The processing loop runs and passes.
    pub liveness: Liveness,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Counts that become metrics once their transaction commits.
#[derive(Debug, Default)]
struct Pending {
    out: HashMap<String, u64>,
    dlq: HashMap<(Reason, usize), u64>,
    /// Window ends (event time, ms) of the results in the transaction.
    window_ends: Vec<i64>,
}

/// The mutable half: tasks, the producer and the open transaction. Used by the loop and by
/// the rebalance and statistics callbacks (which run inside `poll`, never concurrently).
struct Core {
    shared: Arc<Shared>,
    status: Arc<Status>,
    producer: ThreadedProducer<DefaultProducerContext>,
    tasks: HashMap<(usize, i32), Task<String>>,
    pending: Pending,
    /// Something was consumed or produced since the last commit.
    dirty: bool,
    last_commit: Instant,
    commit_interval: Duration,
    /// Why the consumer must be rebuilt; once set, nothing more is processed or committed.
    failed: Option<String>,
    /// Why the open transaction was lost (aborted, or its producer is to be replaced): until
    /// [`Core::rewind`] runs, records are ignored and nothing is committed.
    lost: Option<String>,
    /// When the next rewind may run, and how long the one after a quick relapse waits.
    rewind_at: Instant,
    rewind_backoff: Duration,
    /// The first offset read of each partition that has no committed offset yet: where a
    /// rewind takes it back to.
    origins: HashMap<(usize, i32), i64>,
    /// Log-end offsets from the last statistics report not applied yet ([`Core::catch_up`]).
    log_ends: HashMap<(usize, i32), i64>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("tasks", &self.tasks.len()).finish_non_exhaustive()
    }
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl Core {
    /// Classifies a Kafka error of the transaction once: retriable errors are the caller's to
    /// retry; after anything else the open transaction is lost — aborted first when Kafka
    /// allows it — and every partition goes back to its last commit ([`Core::rewind`]).
    fn fail_on(&mut self, what: &str, e: &RdError) {
        if self.failed.is_some() || self.lost.is_some() {
            return;
        }
        let abortable = matches!(e, RdError::Transaction(t) if t.txn_requires_abort());
        if abortable {
            if let Err(a) = self.producer.abort_transaction(TXN_TIMEOUT) {
                tracing::warn!(error = %a, "aborting the transaction failed");
            }
            metrics::counter!(m::TRANSACTIONS, "outcome" => "aborted").increment(1);
        }
        let kind = if abortable { "abort" } else { "fatal" };
        tracing::warn!(error = %e, "{what}: {kind}; rewinding to the last commit");
        self.lose(kind);
    }

    /// The consumer cannot go on (it could not take up new partitions): it is rebuilt.
    fn fail_consumer(&mut self, what: &str, e: &RdError) {
        tracing::warn!(error = %e, "{what}; rebuilding the consumer");
        self.failed.get_or_insert_with(|| "consumer".to_owned());
    }

    /// The open transaction is lost, for `reason`: schedule a rewind, at once unless the last
    /// one was less than a minute ago (then 0.5 s, doubling up to 10 s).
    fn lose(&mut self, reason: &str) {
        self.lost.get_or_insert_with(|| reason.to_owned());
        let now = Instant::now();
        let recent = self.rewind_at + Duration::from_secs(60) > now;
        self.rewind_backoff = if recent {
            (self.rewind_backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(10))
        } else {
            Duration::ZERO
        };
        self.rewind_at = now + self.rewind_backoff;
    }

    /// Takes every partition back to its last commit, with a new producer, without leaving
    /// the group: a new producer with the same `transactional.id` bumps its epoch, which
    /// fences whatever the old one may still have in flight; each task is rebuilt from its
    /// committed checkpoint and the consumer seeks to the checkpoint's replay start — what a
    /// new owner of the partition would do. Rejoining the group instead would trigger a
    /// rebalance of its own, and a static member that rejoins mid-rebalance can leave the
    /// partitions it was giving up assigned to nobody.
    fn rewind(&mut self, consumer: &Member) {
        let Some(reason) = self.lost.clone() else { return };
        let producer = match self.shared.producer() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "replacing the transactional producer");
                self.lose(&reason);
                return;
            }
        };
        self.producer = producer;
        self.pending = Pending::default();
        self.dirty = false;
        let mut tpl = TopicPartitionList::new();
        for &(src, partition) in self.tasks.keys() {
            tpl.add_partition(&self.shared.sources[src].topic, partition);
        }
        let committed = match consumer.committed_offsets(tpl, TXN_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the committed offsets to rewind to");
                self.lose(&reason);
                return;
            }
        };
        let now = now_ms();
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let Some(src) = self.shared.source_index(e.topic()) else { continue };
            let task = self.task_from(&e, now);
            let start = match e.offset() {
                Offset::Offset(_) => Some(task.start_offset()),
                _ => self.origins.get(&(src, e.partition())).copied(),
            };
            if let Some(start) = start {
                if let Err(err) =
                    seek.add_partition_offset(e.topic(), e.partition(), Offset::Offset(start))
                {
                    tracing::warn!(error = %err, "positioning a partition to rewind");
                    self.failed = Some("rewind".into());
                    return;
                }
            }
            self.tasks.insert((src, e.partition()), task);
        }
        let partitions = seek.count();
        // librdkafka refuses to seek an empty list (for example when the partitions were
        // lost to a session timeout meanwhile).
        let refused = if partitions == 0 {
            None
        } else {
            match consumer.seek_partitions(seek, TXN_TIMEOUT) {
                Ok(done) => {
                    done.elements().iter().find_map(|e| e.error().err().map(|err| err.to_string()))
                }
                Err(e) => Some(e.to_string()),
            }
        };
        if let Some(e) = refused {
            // The consumer cannot go back: start over as a new member.
            tracing::warn!(error = %e, "seeking back to the last commit");
            self.failed = Some("rewind".into());
            return;
        }
        self.lost = None;
        metrics::counter!(m::REWINDS, "reason" => reason.clone()).increment(1);
        tracing::info!(reason = %reason, partitions, "rewound to the last commit");
    }

    fn retriable(e: &RdError) -> bool {
        matches!(e, RdError::Transaction(t) if t.is_retriable() && !t.txn_requires_abort() && !t.is_fatal())
    }

    /// Hands a record to the producer, waiting while its queue is full.
    fn send(&mut self, mut record: BaseRecord<'_, [u8], [u8]>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, r)) => {
                    let what = format!("producing to {}", r.topic);
                    self.fail_on(&what, &e);
                    return;
                }
            }
        }
    }

    /// Processes one consumed record.
    fn process(&mut self, msg: &BorrowedMessage<'_>) {
        let shared = Arc::clone(&self.shared);
        let Some(src) = shared.source_index(msg.topic()) else { return };
        let offset = msg.offset();
        self.origins.entry((src, msg.partition())).or_insert(offset);
        if self.failed.is_some() || self.lost.is_some() {
            return;
        }
        let now = now_ms();
        let Some(task) = self.tasks.get_mut(&(src, msg.partition())) else {
            tracing::warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                "a record of a partition without a task"
            );
            return;
        };
        let replaying = task.replaying(offset);
        let source = &shared.sources[src];
        let checked = match shared.decoder.decode(msg.payload()) {
            Ok(v) => source.filter.check(v, msg.partition(), msg.timestamp().to_millis()),
            Err(DecodeError::Bad(message)) => {
                Err(Rejected { reason: Reason::Undecodable, message })
            }
            Err(DecodeError::Unavailable(e)) => {
                // Not the record's fault: stop and come back to it.
                tracing::warn!(error = %e, "schema registry unavailable");
                self.lose("registry_unavailable");
                return;
            }
        };
        self.dirty = true;
        if replaying {
            source.records_replayed.increment(1);
        } else {
            source.records_in.increment(1);
        }
        match checked {
            Ok(Accepted { key, event_ms, measure, category }) => {
                match task.record(offset, key, event_ms, measure, category.as_deref(), now) {
                    Outcome::Accepted | Outcome::Replayed => {}
                    Outcome::Late(late) => {
                        source.late.increment(1);
                        let message = format!(
                            "the window ending {} had closed (watermark passed its end plus {} ms grace)",
                            rfc3339(late.window_end_ms),
                            shared.task.window.grace_ms
                        );
                        let topic = shared.config.late_topic.clone();
                        self.dead_letter(msg, src, &topic, Reason::Late, &message);
                    }
                }
            }
            Err(rejected) => {
                task.skip(offset, now);
                if !replaying {
                    let topic = shared.config.dlq_topic.clone();
                    self.dead_letter(msg, src, &topic, rejected.reason, &rejected.message);
                }
            }
        }
    }

    /// Sends the original record, bytes untouched, to `topic` with headers saying why.
    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        src: usize,
        topic: &str,
        reason: Reason,
        message: &str,
    ) {
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for h in h.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let at = rfc3339(now_ms());
        for (k, v) in [
            ("dlq.reason", reason.code()),
            ("dlq.error", message),
            ("dlq.source.topic", msg.topic()),
            ("dlq.source.partition", partition.as_str()),
            ("dlq.source.offset", offset.as_str()),
            ("dlq.processed.at", at.as_str()),
        ] {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(p) = msg.payload() {
            record = record.payload(p);
        }
        if let Some(ts) = msg.timestamp().to_millis() {
            record = record.timestamp(ts);
        }
        self.send(record);
        *self.pending.dlq.entry((reason, src)).or_default() += 1;
        *self.pending.out.entry(topic.to_owned()).or_default() += 1;
    }

    /// Writes one window result to its output topic.
    fn emit(&mut self, src: usize, r: &WindowResult<String>, now: i64) {
        let shared = Arc::clone(&self.shared);
        let source = &shared.sources[src];
        let (window, output) = match r.kind {
            WindowKind::Tumbling => ("1m", &source.outputs[0]),
            WindowKind::Sliding => ("5m", &source.outputs[1]),
        };
        let attributes = match &source.reference {
            None => None,
            Some((name, table)) => {
                let found = table.get(&r.key);
                if found.is_none() {
                    metrics::counter!(m::REFERENCE_MISSES, "table" => name.clone()).increment(1);
                }
                found
            }
        };
        let a = &r.aggregate;
        let mut fields = Map::new();
        fields.insert("source_topic".into(), Value::from(source.topic.as_str()));
        fields.insert("window".into(), Value::from(window));
        fields.insert("window_start".into(), Value::from(rfc3339(r.start_ms)));
        fields.insert("window_end".into(), Value::from(rfc3339(r.end_ms)));
        fields.insert("key".into(), Value::from(r.key.as_str()));
        fields.insert("count".into(), Value::from(a.count));
        let measured = source.filter.measure.is_some() && a.measured > 0;
        fields.insert("sum".into(), if measured { Value::from(a.sum) } else { Value::Null });
        fields.insert("avg".into(), a.avg().filter(|_| measured).map_or(Value::Null, Value::from));
        fields.insert("min".into(), a.min.filter(|_| measured).map_or(Value::Null, Value::from));
        fields.insert("max".into(), a.max.filter(|_| measured).map_or(Value::Null, Value::from));
        fields.insert(
            "counts".into(),
            Value::Object(a.categories.iter().map(|(k, n)| (k.clone(), Value::from(*n))).collect()),
        );
        fields.insert(
            "attributes".into(),
            Value::Object(
                attributes
                    .iter()
                    .flat_map(|m| m.iter())
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        );
        fields.insert("processed_at".into(), Value::from(rfc3339(now)));
        fields.insert("processor".into(), Value::from(shared.transactional_id.as_str()));
        let value = match &output.encoding {
            Encoding::Json => serde_json::to_vec(&fields).unwrap_or_default(),
            Encoding::Avro { id, schema } => {
                let Some(avro) = schema.avro() else { return };
                match tributary_schema::codec::encode_record(avro, &fields) {
                    Ok(body) => tributary_schema::frame(*id, &body),
                    Err(e) => {
                        // The output schema was changed to one these results do not fit.
                        tracing::error!(topic = %output.topic, error = %e, "a window result does not fit the output schema");
                        self.failed = Some("output_schema".into());
                        return;
                    }
                }
            }
        };
        let record =
            BaseRecord::<[u8], [u8]>::to(&output.topic).key(r.key.as_bytes()).payload(&value);
        self.send(record);
        *self.pending.out.entry(output.topic.clone()).or_default() += 1;
        self.pending.window_ends.push(r.end_ms);
    }

    /// Closes what the watermarks allow, then commits output, dead letters and offsets (with
    /// checkpoints) as one transaction and begins the next.
    fn commit(&mut self, consumer: &Member) {
        self.last_commit = Instant::now();
        if self.failed.is_some() || self.lost.is_some() {
            return;
        }
        let now = now_ms();
        let mut results = Vec::new();
        for (&(src, partition), task) in &mut self.tasks {
            results.extend(task.tick(now).into_iter().map(|r| (src, r)));
            if let Some(wm) = task.watermark() {
                let topic = self.shared.sources[src].topic.clone();
                metrics::gauge!(m::WATERMARK_LAG, "topic" => topic, "partition" => partition.to_string())
                    .set((now - wm) as f64 / 1000.0);
            }
        }
        for (src, r) in &results {
            self.emit(*src, r, now);
        }
        if !self.dirty && results.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for (&(src, partition), task) in &self.tasks {
            let mut e = offsets.add_partition(&self.shared.sources[src].topic, partition);
            if e.set_offset(Offset::Offset(task.position())).is_err() {
                continue;
            }
            e.set_metadata(task.checkpoint().encode());
        }
        let Some(group) = consumer.group_metadata() else {
            self.fail_consumer("reading the consumer group metadata", &RdError::Canceled);
            return;
        };
        let started = Instant::now();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let t0 = Instant::now();
            let r = if offsets.count() > 0 {
                self.producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)
            } else {
                Ok(())
            };
            // commit_transaction flushes first, and the rdkafka crate's flush sleeps in 100 ms
            // steps while the producer's own thread takes the delivery reports: wait for them
            // here, in short steps, so that flush finds nothing left to do.
            let drained = Instant::now() + TXN_TIMEOUT;
            while self.producer.in_flight_count() > 0 && Instant::now() < drained {
                std::thread::sleep(Duration::from_micros(200));
            }
            let r = r.and_then(|()| self.producer.commit_transaction(TXN_TIMEOUT));
            tracing::trace!(took_ms = t0.elapsed().as_millis() as u64, "transaction");
            match r {
                Err(e) if Self::retriable(&e) && attempt < 5 => {
                    tracing::debug!(error = %e, "retrying the commit");
                    std::thread::sleep(Duration::from_millis(100 * attempt));
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            self.fail_on("committing the transaction", &e);
            return;
        }
        metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::TRANSACTIONS, "outcome" => "committed").increment(1);
        let committed_at = now_ms();
        self.status.last_commit_ms.store(committed_at, Ordering::Relaxed);
        let pending = std::mem::take(&mut self.pending);
        for (topic, n) in pending.out {
            metrics::counter!(m::RECORDS_OUT, "topic" => topic).increment(n);
        }
        for ((reason, src), n) in pending.dlq {
            let topic = self.shared.sources[src].topic.clone();
            metrics::counter!(m::DLQ_RECORDS, "reason" => reason.code(), "source_topic" => topic)
                .increment(n);
        }
        let latency = metrics::histogram!(m::LATENCY);
        for end in pending.window_ends {
            latency.record((committed_at - end).max(0) as f64 / 1000.0);
        }
        self.dirty = false;
        if let Err(e) = self.producer.begin_transaction() {
            self.fail_on("beginning a transaction", &e);
        }
    }

    /// The task of a partition whose committed offset and checkpoint are `e`.
    fn task_from(&self, e: &TopicPartitionListElem<'_>, now: i64) -> Task<String> {
        match (e.offset(), Checkpoint::decode(e.metadata())) {
            (Offset::Offset(position), Some(cp)) if cp.fits(&self.shared.task) => {
                Task::resume(self.shared.task, position, cp, now)
            }
            (Offset::Offset(position), Some(_)) => {
                tracing::warn!(topic = e.topic(), partition = e.partition(), "the window settings changed since the last commit: windows still open then start over empty");
                Task::fresh(self.shared.task, position, now)
            }
            (Offset::Offset(position), None) => Task::fresh(self.shared.task, position, now),
            // Never committed: auto.offset.reset decides, from the first offset there is.
            _ => Task::fresh(self.shared.task, 0, now),
        }
    }

    /// New partitions: each resumes from its committed position and checkpoint; `tpl` gets the
    /// offsets to read from (the checkpoint's replay start).
    fn assign(&mut self, consumer: &Member, tpl: &mut TopicPartitionList) {
        let committed = match consumer.committed_offsets(tpl.clone(), TXN_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                self.fail_consumer("reading the committed offsets of new partitions", &e);
                return;
            }
        };
        let now = now_ms();
        for e in committed.elements() {
            let Some(src) = self.shared.source_index(e.topic()) else { continue };
            let task = self.task_from(&e, now);
            self.origins.remove(&(src, e.partition()));
            if matches!(e.offset(), Offset::Offset(_)) {
                let start = Offset::Offset(task.start_offset());
                if let Err(err) = tpl.set_partition_offset(e.topic(), e.partition(), start) {
                    self.fail_consumer("positioning a new partition", &err);
                }
            }
            tracing::info!(
                topic = e.topic(),
                partition = e.partition(),
                from = task.start_offset(),
                position = task.position(),
                "partition assigned"
            );
            self.tasks.insert((src, e.partition()), task);
        }
        self.status.assigned.store(self.tasks.len(), Ordering::Relaxed);
        metrics::gauge!(m::ASSIGNED).set(self.tasks.len() as f64);
    }

    /// Partitions leaving: commit what they did, then forget them.
    fn revoke(&mut self, consumer: &Member, tpl: &TopicPartitionList) {
        self.commit(consumer);
        for e in tpl.elements() {
            if let Some(src) = self.shared.source_index(e.topic()) {
                self.tasks.remove(&(src, e.partition()));
                self.origins.remove(&(src, e.partition()));
                let labels =
                    [("topic", e.topic().to_owned()), ("partition", e.partition().to_string())];
                metrics::gauge!(m::LAG, &labels).set(0.0);
                metrics::gauge!(m::WATERMARK_LAG, &labels).set(0.0);
            }
        }
        self.status.assigned.store(self.tasks.len(), Ordering::Relaxed);
        metrics::gauge!(m::ASSIGNED).set(self.tasks.len() as f64);
    }

    /// librdkafka's statistics: only each partition's log end is taken from them. The
    /// consumer's position in the same report can be stale — a report built before a rewind
    /// or an assignment sought a partition back still carries the position from before, and
    /// it would make a partition that is about to be read again look caught up (and then,
    /// once quiet, idle) — so [`Core::catch_up`] reads the position live instead.
    fn stats(&mut self, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            let Some(src) = self.shared.source_index(topic) else { continue };
            for (&p, part) in &t.partitions {
                if part.ls_offset >= 0 && self.tasks.contains_key(&(src, p)) {
                    self.log_ends.insert((src, p), part.ls_offset);
                }
            }
        }
    }

    /// Per-partition lag and the caught-up state the idle rule needs, from the last reported
    /// log ends and the consumer's position now: past the last record handed to the loop,
    /// and past any transaction markers or aborted records after it, which it never sees.
    fn catch_up(&mut self, consumer: &Member) {
        if self.log_ends.is_empty() {
            return;
        }
        let positions = match consumer.position() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "reading the consumer's positions");
                return;
            }
        };
        let now = now_ms();
        for e in positions.elements() {
            let Some(src) = self.shared.source_index(e.topic()) else { continue };
            let key = (src, e.partition());
            let (Some(task), Some(&end)) = (self.tasks.get_mut(&key), self.log_ends.get(&key))
            else {
                continue;
            };
            let consumed = match e.offset() {
                Offset::Offset(o) => o,
                // Nothing handed out since the partition was assigned or sought.
                _ => -1,
            };
            let position = task.position().max(consumed);
            let lag = (end - position).max(0);
            metrics::gauge!(m::LAG, "topic" => e.topic().to_owned(), "partition" => e.partition().to_string())
                .set(lag as f64);
            task.set_caught_up(lag == 0, position, now);
        }
        self.log_ends.clear();
    }
}

impl GroupHandler for Core {
    fn assign(&mut self, consumer: &Member, tpl: &mut TopicPartitionList) {
        Core::assign(self, consumer, tpl);
    }

    fn revoke(&mut self, consumer: &Member, tpl: &TopicPartitionList) {
        Core::revoke(self, consumer, tpl);
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
        self.process(msg);
    }

    fn tick(&mut self, consumer: &Member) {
        if self.lost.is_some() {
            if Instant::now() >= self.rewind_at {
                self.rewind(consumer);
            }
            return;
        }
        if self.failed.is_none() {
            self.catch_up(consumer);
        }
        if self.last_commit.elapsed() >= self.commit_interval {
            self.commit(consumer);
        }
    }

    fn finish(&mut self, consumer: &Member) {
        self.commit(consumer);
    }
}

/// A configured processor, ready to [`Processor::run`].
#[derive(Debug)]
pub struct Processor {
    shared: Arc<Shared>,
    status: Arc<Status>,
}

impl Processor {
    /// Checks the configuration against the catalog, registers the output schema, and loads
    /// the reference topics. Runs on a thread outside the async runtime.
    pub fn setup(
        config: ProcessorConfig,
        kafka: KafkaConfig,
        catalog: &Catalog,
        runtime: tokio::runtime::Handle,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, Error> {
        // The counters registered below must reach the exporter, not a no-op recorder.
        m::prometheus();
        let invalid = [
            (config.window_ms < 1_000, "window_ms must be at least 1000"),
            (config.sliding_panes < 1, "sliding_panes must be at least 1"),
            (config.grace_ms < 0, "grace_ms must not be negative"),
            (config.out_of_orderness_ms < 0, "out_of_orderness_ms must not be negative"),
            (config.idle_ms < 1, "idle_ms must be positive"),
            (config.commit_interval_ms == 0, "commit_interval_ms must be positive"),
        ];
        if let Some((_, why)) = invalid.iter().find(|(bad, _)| *bad) {
            return Err(Error::Setup(format!("[processor] {why}")));
        }
        let registry = Arc::new(RegistryClient::from_config(&config.registry));
        let reference_topics: Vec<String> = {
            let mut t: Vec<String> =
                config.sources.iter().filter_map(|s| s.reference.clone()).collect();
            t.sort();
            t.dedup();
            t
        };
        let references = References::start(
            &kafka,
            &reference_topics,
            Duration::from_millis(config.reference_load_timeout_ms),
            stop,
        )?;
        // Partition counts as the cluster has them (the key check must agree with the topic).
        let md_client: BaseConsumer = kafka
            .consumer(None)
            .create()
            .map_err(|e| tributary_kafka::KafkaError::new("creating a metadata client", e))?;
        let md = md_client
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| tributary_kafka::KafkaError::new("fetching topic metadata", e))?;
        let mut sources = Vec::new();
        for s in &config.sources {
            let spec = catalog.get(&s.topic).ok_or_else(|| {
                Error::Setup(format!("source topic {} is not in the topic catalog", s.topic))
            })?;
            let key_field = spec.key_field.clone().ok_or_else(|| {
                Error::Setup(format!("source topic {} has no key_field in the catalog", s.topic))
            })?;
            let mut outputs = Vec::new();
            for window in ["1m", "5m"] {
                let topic = aggregate_topic(&s.topic, window);
                let format = catalog.get(&topic).map_or(ValueFormat::Avro, |t| t.value_format);
                let encoding = match format {
                    ValueFormat::Json => Encoding::Json,
                    ValueFormat::Avro => {
                        let subject = format!("{topic}-value");
                        let id = runtime
                            .block_on(registry.register(&subject, SchemaType::Avro, AGGREGATE_AVSC))
                            .map_err(|e| {
                                Error::Setup(format!("registering the schema of {topic}: {e}"))
                            })?;
                        let schema = runtime
                            .block_on(registry.schema(id))
                            .map_err(|e| Error::Setup(format!("reading schema {id}: {e}")))?
                            .ok_or_else(|| Error::Setup(format!("schema {id} vanished")))?;
                        Encoding::Avro { id, schema }
                    }
                    ValueFormat::Protobuf => {
                        return Err(Error::Setup(format!(
                            "{topic}: window results are written as Avro or JSON, not Protobuf"
                        )))
                    }
                };
                outputs.push(Output { topic, encoding });
            }
            let [tumbling, sliding]: [Output; 2] =
                outputs.try_into().map_err(|_| Error::Setup("two outputs per source".into()))?;
            sources.push(Source {
                topic: s.topic.clone(),
                records_in: metrics::counter!(m::RECORDS_IN, "topic" => s.topic.clone()),
                records_replayed: metrics::counter!(m::RECORDS_REPLAYED, "topic" => s.topic.clone()),
                late: metrics::counter!(m::LATE_RECORDS, "topic" => s.topic.clone()),
                filter: Filter {
                    key_field,
                    measure: s.measure.clone(),
                    count_by: s.count_by.clone(),
                    partitions: md
                        .topics()
                        .iter()
                        .find(|t| t.name() == s.topic && !t.partitions().is_empty())
                        .map_or(spec.partitions, |t| {
                            let n = t.partitions().len() as i32;
                            if n != spec.partitions {
                                tracing::warn!(topic = %s.topic, cluster = n, catalog = spec.partitions, "the topic's partition count differs from the catalog; using the cluster's");
                            }
                            n
                        }),
                    max_future_ms: config.max_future_ms,
                    max_past_ms: config.max_past_ms,
                },
                outputs: [tumbling, sliding],
                reference: s
                    .reference
                    .as_ref()
                    .and_then(|r| references.table(r).map(|t| (r.clone(), t))),
            });
        }
        let task = TaskConfig {
            window: WindowConfig {
                pane_ms: config.window_ms,
                sliding_panes: config.sliding_panes,
                grace_ms: config.grace_ms,
            },
            watermark: WatermarkConfig {
                out_of_orderness_ms: config.out_of_orderness_ms,
                idle_ms: config.idle_ms,
            },
        };
        let transactional_id = config.transactional_id();
        let shared = Shared {
            config,
            kafka,
            sources,
            decoder: Decoder::new(registry, runtime),
            task,
            transactional_id,
        };
        Ok(Self { shared: Arc::new(shared), status: Arc::new(Status::default()) })
    }

    /// What the health endpoint reads.
    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status)
    }

    /// Processes until `stop` is set, rebuilding the consumer and producer after errors.
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

    fn consumer(&self, core: Core) -> Result<Member, String> {
        let mut c = self.shared.kafka.consumer(Some(&self.shared.config.group_id));
        if c.get("partition.assignment.strategy").is_none() {
            c.set("partition.assignment.strategy", "cooperative-sticky");
        }
        if c.get("group.instance.id").is_none() {
            // Static membership: a restarted instance takes its slot back without a rebalance,
            // and two processes configured with the same slot fence each other loudly.
            c.set("group.instance.id", &self.shared.transactional_id);
        }
        if c.get("session.timeout.ms").is_none() {
            // A killed instance's partitions move after this long.
            c.set("session.timeout.ms", "10000");
        }
        c.set("statistics.interval.ms", "1000");
        c.create_with_context(GroupContext::new(core))
            .map_err(|e| format!("creating the consumer: {e}"))
    }

    fn run_once(&self, stop: &AtomicBool) -> Result<(), String> {
        let producer = self.shared.producer().map_err(|e| {
            tracing::warn!(error = %e, "starting the transactional producer");
            "producer".to_owned()
        })?;
        let core = Core {
            shared: Arc::clone(&self.shared),
            status: Arc::clone(&self.status),
            producer,
            tasks: HashMap::new(),
            pending: Pending::default(),
            dirty: false,
            last_commit: Instant::now(),
            commit_interval: Duration::from_millis(self.shared.config.commit_interval_ms),
            failed: None,
            lost: None,
            rewind_at: Instant::now(),
            rewind_backoff: Duration::ZERO,
            origins: HashMap::new(),
            log_ends: HashMap::new(),
        };
        let consumer = self.consumer(core).map_err(|e| {
            tracing::warn!(error = %e, "starting the consumer");
            "consumer".to_owned()
        })?;
        let topics: Vec<&str> = self.shared.sources.iter().map(|s| s.topic.as_str()).collect();
        tracing::info!(transactional_id = %self.shared.transactional_id, topics = ?topics, "processor running");
        let result = poll_until_stopped(&consumer, &topics, stop, &self.status.liveness);
        drop(consumer);
        result
    }
}
