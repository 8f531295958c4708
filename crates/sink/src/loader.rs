//! The loop of one consumer-group member: records are decoded into the buffer (undecodable
//! ones dead-lettered), and flushes hand the buffer to the [`Writer`], which writes rows and
//! offsets to the warehouse in one DuckDB transaction while the loop reads the next batch.
//!
//! Kafka offsets are committed after each flush, for lag monitoring only: the warehouse's own
//! offsets decide where a partition resumes, so a crash between the DuckDB commit and the Kafka
//! commit neither loses nor repeats rows.

use crate::config::SinkConfig;
use crate::metrics as m;
use crate::rows::{self, Fill, RowText, Trigger};
use crate::setup::{now_ms, Route};
use crate::warehouse::{Batch, Warehouse};
use crate::writer::{Writer, MAX_IN_FLIGHT};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tributary_kafka::dlq::Letter;
use tributary_kafka::group::{GroupContext, GroupFailure, GroupHandler, RebuildReason};
use tributary_kafka::EventProducer;
use tributary_schema::decode::{DecodeError, Decoder};

/// The sink's consumer.
pub(crate) type SinkConsumer = BaseConsumer<GroupContext<Loader>>;

/// The dead-letter reason of records that cannot be decoded.
const UNDECODABLE: &str = "undecodable";

/// Why the sink's consumer is rebuilt: the `reason` label of `sink_rebuilds_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// The consumer could not be created.
    Consumer,
    /// The schema registry could not be reached to decode a record.
    RegistryUnavailable,
    /// A dead letter could not be written.
    DeadLetter,
    /// The warehouse could not be read or written.
    Warehouse,
    /// The group gave up on the member (subscribe, rebalance, a fatal consumer error).
    Group(GroupFailure),
}

impl RebuildReason for Rebuild {
    fn label(&self) -> &'static str {
        match self {
            Self::Consumer => "consumer",
            Self::RegistryUnavailable => "registry_unavailable",
            Self::DeadLetter => "dead_letter",
            Self::Warehouse => "warehouse",
            Self::Group(g) => g.label(),
        }
    }
}

impl From<GroupFailure> for Rebuild {
    fn from(g: GroupFailure) -> Self {
        Self::Group(g)
    }
}

/// The buffer and the writer of one member.
pub(crate) struct Loader {
    pub(crate) config: Arc<SinkConfig>,
    pub(crate) routes: Arc<Vec<Route>>,
    pub(crate) decoder: Arc<Decoder>,
    pub(crate) dlq: Arc<EventProducer>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) warehouse: Arc<Mutex<Warehouse>>,
    pub(crate) batch: Batch,
    /// Metadata and content bytes buffered.
    pub(crate) bytes: usize,
    /// When the oldest buffered row came.
    pub(crate) oldest: Option<Instant>,
    /// Why the member must be rebuilt; once set, nothing more is buffered or flushed.
    pub(crate) failed: Option<Rebuild>,
    pub(crate) writer: Writer,
    /// The JSON text of the row being buffered.
    pub(crate) text: RowText,
}

impl Loader {
    fn route_index(&self, topic: &str) -> Option<usize> {
        self.routes.iter().position(|s| &*s.topic == topic)
    }

    fn warehouse(&self) -> MutexGuard<'_, Warehouse> {
        self.warehouse.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Buffers one record (or dead-letters it).
    fn add(&mut self, msg: &BorrowedMessage<'_>) {
        if self.failed.is_some() {
            return;
        }
        let Some(src) = self.route_index(msg.topic()) else { return };
        let routes = Arc::clone(&self.routes);
        let route = &routes[src];
        let decoded = self.decoder.decode_to_text(msg.payload(), self.text.content_mut());
        // Writing JSON text into memory fails only for a value JSON cannot hold.
        let storable = |e: serde_json::Error| format!("not storable as JSON: {e}");
        let written = match decoded {
            Ok(schema_id) => self.text.set_metadata(msg, schema_id).map_err(storable),
            Err(DecodeError::Unavailable(e)) => {
                tracing::warn!(error = %e, "schema registry unavailable");
                self.failed = Some(Rebuild::RegistryUnavailable);
                return;
            }
            // Stored as they are: a dead letter's bytes are whatever failed elsewhere.
            Err(DecodeError::Bad(_)) if route.dead_letters => self
                .text
                .set_content(&rows::undecoded(msg.payload()))
                .and_then(|()| self.text.set_metadata(msg, None))
                .map_err(storable),
            Err(DecodeError::Bad(message)) => Err(message),
        };
        if let Err(message) = written {
            self.dead_letter(msg, &message);
            self.batch
                .offsets
                .insert((Arc::clone(&route.topic), msg.partition()), msg.offset() + 1);
            return;
        }
        let (metadata, content) = self.text.texts();
        self.bytes += metadata.len() + content.len();
        let rows = self.batch.rows.entry(Arc::clone(&route.table)).or_default();
        rows.push(metadata, content);
        self.batch.offsets.insert((Arc::clone(&route.topic), msg.partition()), msg.offset() + 1);
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Sends an undecodable record to the dead-letter topic and waits for Kafka to have it, so
    /// the flush that moves past its offset never loses it.
    fn dead_letter(&mut self, msg: &BorrowedMessage<'_>, message: &str) {
        let config = Arc::clone(&self.config);
        let letter = Letter::dead(&config.dlq_topic, msg, UNDECODABLE, message, now_ms());
        let dlq = Arc::clone(&self.dlq);
        match self.runtime.block_on(dlq.send_letter(letter)) {
            Ok(_) => {
                metrics::counter!(m::DEAD_LETTERS, "reason" => UNDECODABLE).increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing a dead letter");
                self.failed = Some(Rebuild::DeadLetter);
            }
        }
    }

    fn due(&self) -> Option<Trigger> {
        let rows = self.batch.row_count();
        let fill = Fill {
            rows,
            bytes: self.bytes,
            age_secs: self.oldest.map(|t| t.elapsed().as_secs_f64()),
            offsets_only: !self.batch.is_empty() && rows == 0,
        };
        rows::due(&fill, &self.config)
    }

    /// Hands the buffer to the writer, which writes its rows and offsets in one DuckDB
    /// transaction while the next records are read; with [`MAX_IN_FLIGHT`] batches already
    /// handed over, the oldest must be written first.
    fn flush(&mut self, consumer: &SinkConsumer, trigger: Trigger) {
        while self.settle(consumer, false) {}
        while self.writer.in_flight() >= MAX_IN_FLIGHT {
            self.settle(consumer, true);
        }
        if self.failed.is_some() || self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.oldest = None;
        if !self.writer.send(batch, trigger) {
            tracing::error!("the warehouse writer stopped");
            self.failed = Some(Rebuild::Warehouse);
        }
    }

    /// Waits for every batch in flight, settling each.
    fn settle_all(&mut self, consumer: &SinkConsumer) {
        while self.writer.in_flight() > 0 {
            self.settle(consumer, true);
        }
    }

    /// Takes the outcome of the oldest batch in flight (waiting for it when `wait`): commits
    /// its offsets to Kafka (for lag monitoring only), or fails the member when it could not be
    /// written. False when there was none to take.
    fn settle(&mut self, consumer: &SinkConsumer, wait: bool) -> bool {
        match self.writer.outcome(wait) {
            None => return false,
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
                self.failed.get_or_insert(Rebuild::Warehouse);
            }
        }
        true
    }

    /// New partitions resume where the warehouse's rows end.
    fn resume_from_warehouse(&mut self, consumer: &SinkConsumer, tpl: &mut TopicPartitionList) {
        // The batches in flight may hold these partitions' last rows (a partition can come
        // back): read the offsets once they are in.
        self.settle_all(consumer);
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
                        self.failed = Some(Rebuild::Warehouse);
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

    /// Per-partition lag from librdkafka's statistics.
    fn note_lag(&mut self, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            if self.route_index(topic).is_none() {
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

impl GroupHandler for Loader {
    type Rebuild = Rebuild;

    fn assign(&mut self, consumer: &SinkConsumer, tpl: &mut TopicPartitionList) {
        self.resume_from_warehouse(consumer, tpl);
    }

    fn stats(&mut self, stats: &Statistics) {
        self.note_lag(stats);
    }

    /// What is buffered goes to the warehouse before the partitions move.
    fn revoke(&mut self, consumer: &SinkConsumer, _tpl: &TopicPartitionList) {
        self.flush(consumer, Trigger::Rebalance);
        self.settle_all(consumer);
    }

    fn fail(&mut self, failure: GroupFailure) {
        self.failed.get_or_insert(Rebuild::from(failure));
    }

    fn message(&mut self, _consumer: &SinkConsumer, msg: &BorrowedMessage<'_>) {
        self.add(msg);
    }

    fn failure(&self) -> Option<Rebuild> {
        self.failed
    }

    fn tick(&mut self, consumer: &SinkConsumer) {
        while self.settle(consumer, false) {}
        if let Some(trigger) = self.due() {
            self.flush(consumer, trigger);
        }
    }

    fn finish(&mut self, consumer: &SinkConsumer) {
        self.flush(consumer, Trigger::Shutdown);
        self.settle_all(consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_labels_are_the_documented_ones() {
        let labels: Vec<&str> = [
            Rebuild::Consumer,
            Rebuild::RegistryUnavailable,
            Rebuild::DeadLetter,
            Rebuild::Warehouse,
            GroupFailure::Subscribe.into(),
            GroupFailure::Rebalance.into(),
            GroupFailure::ConsumerFatal.into(),
        ]
        .iter()
        .map(RebuildReason::label)
        .collect();
        let documented = [
            "consumer",
            "registry_unavailable",
            "dead_letter",
            "warehouse",
            "subscribe",
            "rebalance",
            "consumer_fatal",
        ];
        assert_eq!(labels, documented, "docs/warehouse.md and the alert rules use these");
    }
}
