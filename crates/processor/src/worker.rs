//! The processing loop of one consumer-group member: each consumed record goes to its
//! partition's [`Task`]; every commit interval the closed windows' results, the dead letters
//! and the consumed offsets (with each task's checkpoint) commit as one transaction.
//!
//! Kafka errors are classified once ([`tributary_kafka::TxnClass`]), in [`Worker::fail_on`]: a
//! retriable error is retried by the producer itself; an abortable one aborts the transaction;
//! anything else drops the producer. In both latter cases the open transaction is lost
//! ([`Phase::Lost`]) and every partition goes back to its last commit with a new producer
//! ([`Worker::rewind`], in `partitions.rs`). Errors the consumer cannot get over end the member
//! ([`Phase::Failed`]): it is rebuilt, exactly as after a crash.

use crate::metrics as m;
use crate::output::{self, Context, TooLarge};
use crate::phase::{Phase, Rebuild, RewindReason};
use crate::record::{Accepted, DecodeError, Reason, Rejected};
use crate::setup::{Pipeline, ProcessorHealth};
use crate::task::{Outcome, Record, Task};
use crate::window::WindowResult;
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_kafka::dlq::{header, Letter};
use tributary_kafka::group::{GroupContext, GroupFailure, GroupHandler};
use tributary_kafka::{KafkaError, TransactionalProducer, TxnClass};

/// The processor's consumer.
pub(crate) type ProcessorConsumer = BaseConsumer<GroupContext<Worker>>;

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Counts that become metrics once their transaction commits.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    out: HashMap<String, u64>,
    dlq: HashMap<(Reason, usize), u64>,
    /// Window ends (event time, ms) of the results in the transaction.
    window_ends: Vec<i64>,
    /// Results whose categories were capped, by output topic.
    capped: HashMap<String, u64>,
}

/// The mutable half: tasks, the producer and the open transaction. Used by the loop and by
/// the rebalance and statistics callbacks (which run inside `poll`, never concurrently).
pub(crate) struct Worker {
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) health: Arc<ProcessorHealth>,
    pub(crate) producer: TransactionalProducer,
    /// One task per assigned partition, by (input index, partition).
    pub(crate) tasks: HashMap<(usize, i32), Task<String>>,
    pub(crate) pending: Pending,
    /// Something was consumed or produced since the last commit.
    pub(crate) dirty: bool,
    last_commit: Instant,
    commit_interval: Duration,
    pub(crate) phase: Phase,
    /// When the next rewind may run, and how long the one after a quick relapse waits.
    pub(crate) rewind_at: Instant,
    rewind_backoff: Duration,
    /// The first offset read of each partition that has no committed offset yet: where a
    /// rewind takes it back to.
    pub(crate) origins: HashMap<(usize, i32), i64>,
    /// Log-end offsets from the last statistics report not applied yet ([`Worker::catch_up`]).
    pub(crate) log_ends: HashMap<(usize, i32), i64>,
    /// Records waiting in the assigned partitions, at the last [`Worker::catch_up`].
    pub(crate) waiting: i64,
    /// Each partition's position at the last [`Worker::catch_up`] and since when it has been
    /// there with records waiting.
    pub(crate) moved: HashMap<(usize, i32), (i64, Instant)>,
    /// The longest a partition has stood still with records waiting, at the last catch-up.
    pub(crate) stuck_for: Duration,
    /// The last commit, the member's start, or the last moment no input waited: how long the
    /// processor has made no progress ([`Worker::check_progress`]).
    progress_at: Instant,
    /// Health says stalled.
    stalled: bool,
}

/// How long input may wait with no transaction committed before health says the processor is
/// stalled; after twice as long the member is rebuilt (a new consumer and producer, from the
/// committed offsets). Every Kafka call of a commit ends within
/// [`TXN_TIMEOUT`](tributary_kafka::txn::TXN_TIMEOUT), half of this.
pub(crate) const STALL: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("tasks", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl Worker {
    pub(crate) fn new(
        pipeline: Arc<Pipeline>,
        health: Arc<ProcessorHealth>,
        producer: TransactionalProducer,
    ) -> Self {
        let commit_interval = Duration::from_millis(pipeline.config.commit_interval_ms);
        Self {
            pipeline,
            health,
            producer,
            tasks: HashMap::new(),
            pending: Pending::default(),
            dirty: false,
            last_commit: Instant::now(),
            commit_interval,
            phase: Phase::Running,
            rewind_at: Instant::now(),
            rewind_backoff: Duration::ZERO,
            origins: HashMap::new(),
            log_ends: HashMap::new(),
            waiting: 0,
            moved: HashMap::new(),
            stuck_for: Duration::ZERO,
            progress_at: Instant::now(),
            stalled: false,
        }
    }

    /// Health says stalled while input waits and nothing commits, or a partition with records
    /// waiting stands still, for [`STALL`]; after twice that the member is rebuilt, which
    /// logs why.
    fn check_progress(&mut self) {
        if self.waiting == 0 {
            self.progress_at = Instant::now();
        }
        let quiet = self.progress_at.elapsed().max(self.stuck_for);
        if quiet < STALL {
            if self.stalled {
                self.stalled = false;
                self.health.liveness.set_stalled(None);
            }
            return;
        }
        let why =
            format!("no progress for {} s while {} records wait", quiet.as_secs(), self.waiting);
        if !self.stalled {
            tracing::warn!(phase = ?self.phase, "{why}");
            self.stalled = true;
        }
        self.health.liveness.set_stalled(Some(why.clone()));
        if quiet >= 2 * STALL {
            self.fail_consumer("the processor is stalled", &why);
        }
    }

    /// Classifies a Kafka error of the transaction once: retriable errors were the producer's
    /// to retry; after anything else the open transaction is lost — aborted first when Kafka
    /// allows it — and every partition goes back to its last commit ([`Worker::rewind`]).
    pub(crate) fn fail_on(&mut self, err: &KafkaError) {
        if !self.phase.running() {
            return;
        }
        let abortable = err.txn_class() == TxnClass::Abortable;
        if abortable {
            if let Err(a) = self.producer.abort() {
                tracing::warn!(error = %a.cause, "aborting the transaction failed");
            }
            metrics::counter!(m::TRANSACTIONS, "outcome" => "aborted").increment(1);
        }
        let reason = if abortable { RewindReason::Abort } else { RewindReason::Fatal };
        tracing::warn!(error = %err.cause, "{}: {}; rewinding to the last commit", err.what, reason.label());
        self.lose(reason);
    }

    /// The consumer cannot go on (it could not take up new partitions): it is rebuilt.
    pub(crate) fn fail_consumer(&mut self, what: &str, e: &dyn Display) {
        tracing::warn!(error = %e, "{what}; rebuilding the consumer");
        self.phase.fail(Rebuild::Consumer);
    }

    /// The open transaction is lost, for `reason`: schedule a rewind, at once unless the last
    /// one was less than a minute ago (then 0.5 s, doubling up to 10 s).
    pub(crate) fn lose(&mut self, reason: RewindReason) {
        self.phase.lose(reason);
        let now = Instant::now();
        let recent = self.rewind_at + Duration::from_secs(60) > now;
        self.rewind_backoff = if recent {
            (self.rewind_backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(10))
        } else {
            Duration::ZERO
        };
        self.rewind_at = now + self.rewind_backoff;
    }

    /// Hands a record to the open transaction.
    fn send(&mut self, record: BaseRecord<'_, [u8], [u8]>) {
        if let Err(e) = self.producer.send(record) {
            self.fail_on(&e);
        }
    }

    /// Processes one consumed record.
    fn process(&mut self, msg: &BorrowedMessage<'_>) {
        let pipeline = Arc::clone(&self.pipeline);
        let Some(src) = pipeline.input_index(msg.topic()) else { return };
        let offset = msg.offset();
        self.origins.entry((src, msg.partition())).or_insert(offset);
        if !self.phase.running() {
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
        let input = &pipeline.inputs[src];
        let checked = match pipeline.decoder.decode(msg.payload()) {
            Ok(v) => input.filter.check(v, msg.partition(), msg.timestamp().to_millis()),
            Err(DecodeError::Bad(message)) => {
                Err(Rejected { reason: Reason::Undecodable, message })
            }
            Err(DecodeError::Unavailable(e)) => {
                // Not the record's fault: stop and come back to it.
                tracing::warn!(error = %e, "schema registry unavailable");
                self.lose(RewindReason::RegistryUnavailable);
                return;
            }
        };
        self.dirty = true;
        if replaying {
            input.records_replayed.increment(1);
        } else {
            input.records_in.increment(1);
        }
        match checked {
            Ok(Accepted { key, event_id, event_ms, measure, category }) => {
                let category = category.as_deref();
                let r = Record { key, event_id: &event_id, event_ms, measure, category };
                match task.record(offset, r, now) {
                    Outcome::Accepted | Outcome::Replayed => {}
                    Outcome::Duplicate => input.duplicates.increment(1),
                    Outcome::Late(late) => {
                        input.late.increment(1);
                        let message = format!(
                            "the window ending {} had closed (watermark passed its end plus {} ms grace)",
                            output::rfc3339(late.window_end_ms),
                            pipeline.task.window.grace_ms
                        );
                        let topic = &pipeline.config.late_topic;
                        self.dead_letter(msg, src, topic, Reason::Late, &message);
                    }
                }
            }
            Err(rejected) => {
                task.skip(offset, now);
                if !replaying {
                    let topic = &pipeline.config.dlq_topic;
                    self.dead_letter(msg, src, topic, rejected.reason, &rejected.message);
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
        let letter = Letter::dead(topic, msg, reason.code(), message, now_ms());
        self.send(letter.into_base_record());
        *self.pending.dlq.entry((reason, src)).or_default() += 1;
        *self.pending.out.entry(topic.to_owned()).or_default() += 1;
    }

    /// Writes one window result to its output topic.
    fn emit(&mut self, src: usize, r: &WindowResult<String>, now: i64) {
        let pipeline = Arc::clone(&self.pipeline);
        let input = &pipeline.inputs[src];
        let (window, out) = input.outputs.of(r.kind);
        let attributes = match &input.reference {
            None => None,
            Some((name, table)) => {
                let found = table.get(&r.key);
                if found.is_none() {
                    metrics::counter!(m::REFERENCE_MISSES, "table" => name.clone()).increment(1);
                }
                found
            }
        };
        let cx = Context {
            source_topic: &input.topic,
            measured: input.filter.measure.is_some(),
            attributes: attributes.as_deref(),
            now_ms: now,
            processor: pipeline.transactional_id(),
            max_categories: pipeline.config.max_categories,
        };
        let value = match output::encode(&out.encoding, &output::fields(r, window, &cx)) {
            Ok(value) => value,
            Err(e) => {
                // The output schema was changed to one these results do not fit.
                tracing::error!(topic = %out.topic, error = %e, "a window result does not fit the output schema");
                self.phase.fail(Rebuild::OutputSchema);
                return;
            }
        };
        if r.aggregate.categories.len() > cx.max_categories {
            *self.pending.capped.entry(out.topic.clone()).or_default() += 1;
        }
        if let Err(err) = output::check_size(r.key.as_bytes(), &value) {
            // The producer would refuse it, which loses the transaction: a summary goes to
            // the dead-letter topic instead, in this transaction.
            let summary = output::too_large(r, window, &out.topic, &cx, err);
            self.result_too_large(src, &r.key, &summary, &err);
            return;
        }
        let record = BaseRecord::<[u8], [u8]>::to(&out.topic).key(r.key.as_bytes()).payload(&value);
        self.send(record);
        *self.pending.out.entry(out.topic.clone()).or_default() += 1;
        self.pending.window_ends.push(r.end_ms);
    }

    /// Sends the `summary` of a result too large to write to the dead-letter topic, keyed by
    /// the result's key. It names no source record (no `dlq.source.*` headers), so
    /// `tributary dlq replay` passes it over.
    fn result_too_large(&mut self, src: usize, key: &str, summary: &[u8], err: &TooLarge) {
        let pipeline = Arc::clone(&self.pipeline);
        let topic = &pipeline.config.dlq_topic;
        let reason = Reason::ResultTooLarge;
        let error = err.to_string();
        let at = output::rfc3339(now_ms());
        let mut headers = OwnedHeaders::new();
        for (k, v) in [
            (header::REASON, reason.code()),
            (header::ERROR, error.as_str()),
            (header::PROCESSED_AT, at.as_str()),
        ] {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        tracing::warn!(topic = %pipeline.inputs[src].topic, key, error = %err, "a window result is too large for kafka; its summary goes to the dead-letter topic");
        let letter = Letter {
            topic,
            key: Some(key.as_bytes()),
            value: Some(summary),
            timestamp_ms: None,
            headers,
        };
        self.send(letter.into_base_record());
        *self.pending.dlq.entry((reason, src)).or_default() += 1;
        *self.pending.out.entry(topic.clone()).or_default() += 1;
    }

    /// Closes what the watermarks allow, then commits output, dead letters and offsets (with
    /// checkpoints) as one transaction and begins the next.
    pub(crate) fn commit(&mut self, consumer: &ProcessorConsumer) {
        self.last_commit = Instant::now();
        if !self.phase.running() {
            return;
        }
        let now = now_ms();
        let mut results = Vec::new();
        for (&(src, partition), task) in &mut self.tasks {
            results.extend(task.tick(now).into_iter().map(|r| (src, r)));
            if let Some(wm) = task.watermark() {
                let topic = self.pipeline.inputs[src].topic.clone();
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
        if !self.phase.running() {
            // A result or dead letter was not written: committing the offsets (and the
            // checkpoints, which no longer hold the results emitted) would skip it for good.
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for (&(src, partition), task) in &self.tasks {
            let mut e = offsets.add_partition(&self.pipeline.inputs[src].topic, partition);
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
        if let Err(e) = self.producer.commit(&offsets, group) {
            self.fail_on(&e);
            return;
        }
        metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        self.committed();
        if let Err(e) = self.producer.begin() {
            self.fail_on(&e);
        }
    }

    /// A transaction committed: what it held becomes metrics.
    fn committed(&mut self) {
        metrics::counter!(m::TRANSACTIONS, "outcome" => "committed").increment(1);
        let committed_at = now_ms();
        self.health.last_commit_ms.store(committed_at, Ordering::Relaxed);
        self.progress_at = Instant::now();
        self.pipeline.causes.clear();
        let pending = std::mem::take(&mut self.pending);
        for (topic, n) in pending.out {
            metrics::counter!(m::RECORDS_OUT, "topic" => topic).increment(n);
        }
        for ((reason, src), n) in pending.dlq {
            let topic = self.pipeline.inputs[src].topic.clone();
            metrics::counter!(m::DLQ_RECORDS, "reason" => reason.code(), "source_topic" => topic)
                .increment(n);
        }
        for (topic, n) in pending.capped {
            metrics::counter!(m::RESULTS_CAPPED, "topic" => topic).increment(n);
        }
        let latency = metrics::histogram!(m::LATENCY);
        for end in pending.window_ends {
            latency.record((committed_at - end).max(0) as f64 / 1000.0);
        }
        self.dirty = false;
    }
}

impl GroupHandler for Worker {
    type Rebuild = Rebuild;

    fn message(&mut self, _consumer: &ProcessorConsumer, msg: &BorrowedMessage<'_>) {
        self.process(msg);
    }

    fn tick(&mut self, consumer: &ProcessorConsumer) {
        self.check_progress();
        if self.phase.lost().is_some() {
            if Instant::now() >= self.rewind_at {
                self.rewind(consumer);
            }
            return;
        }
        if self.phase.running() {
            self.catch_up(consumer);
        }
        if self.last_commit.elapsed() >= self.commit_interval {
            self.commit(consumer);
        }
    }

    fn assign(&mut self, consumer: &ProcessorConsumer, tpl: &mut TopicPartitionList) {
        self.take_partitions(consumer, tpl);
    }

    fn revoke(&mut self, consumer: &ProcessorConsumer, tpl: &TopicPartitionList) {
        self.commit(consumer);
        self.drop_partitions(tpl);
    }

    fn finish(&mut self, consumer: &ProcessorConsumer) {
        self.commit(consumer);
    }

    fn stats(&mut self, stats: &Statistics) {
        self.note_log_ends(stats);
    }

    fn fail(&mut self, failure: GroupFailure) {
        self.phase.fail(failure.into());
    }

    fn failure(&self) -> Option<Rebuild> {
        self.phase.failure()
    }
}
