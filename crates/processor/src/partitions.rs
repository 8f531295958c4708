//! Partitions arriving, leaving and going back: each partition's task is rebuilt from its
//! committed offset and checkpoint when it is assigned and when a rewind takes it back to its
//! last commit; its lag comes from librdkafka's statistics and the consumer's position.

use crate::metrics as m;
use crate::phase::Rebuild;
use crate::resume::Reset;
use crate::task::{Checkpoint, Task};
use crate::worker::{now_ms, Pending, ProcessorConsumer, Worker};
use rdkafka::consumer::Consumer;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tributary_kafka::txn::TXN_TIMEOUT;

impl Worker {
    /// The task of a partition whose committed offset and checkpoint are `e`.
    fn task_from(&self, e: &TopicPartitionListElem<'_>, now: i64) -> Task<String> {
        let config = self.pipeline.task;
        match (e.offset(), Checkpoint::decode(e.metadata())) {
            (Offset::Offset(position), Some(cp)) if cp.fits(&config) => {
                Task::resume(config, position, cp, now)
            }
            (Offset::Offset(position), Some(_)) => {
                tracing::warn!(topic = e.topic(), partition = e.partition(), "the window settings changed since the last commit: windows still open then start over empty");
                Task::fresh(config, position, now)
            }
            (Offset::Offset(position), None) => Task::fresh(config, position, now),
            // Never committed: from where it was started in this process, if it was.
            _ => {
                let key = self.pipeline.input_index(e.topic()).map(|src| (src, e.partition()));
                let origin = key.and_then(|k| self.origins.get(&k)).copied();
                Task::fresh(config, origin.unwrap_or(0), now)
            }
        }
    }

    /// Where a partition without a committed offset starts: with `--reset latest` at its end
    /// now (also the origin a rewind goes back to), else where `auto.offset.reset=earliest`
    /// puts it.
    fn start_uncommitted(
        &mut self,
        consumer: &ProcessorConsumer,
        src: usize,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, rdkafka::error::KafkaError> {
        // Either way its position is committed at once, so that a restart resumes it.
        self.dirty = true;
        if self.pipeline.reset != Some(Reset::Latest) {
            return Ok(None);
        }
        let (_, end) = consumer.fetch_watermarks(topic, partition, TXN_TIMEOUT)?;
        self.origins.insert((src, partition), end);
        Ok(Some(end))
    }

    /// Takes every partition back to its last commit, with a new producer, without leaving
    /// the group: a new producer with the same `transactional.id` bumps its epoch, which
    /// fences whatever the old one may still have in flight; each task is rebuilt from its
    /// committed checkpoint and the consumer seeks to the checkpoint's replay start — what a
    /// new owner of the partition would do. Rejoining the group instead would trigger a
    /// rebalance of its own, and a static member that rejoins mid-rebalance can leave the
    /// partitions it was giving up assigned to nobody.
    pub(crate) fn rewind(&mut self, consumer: &ProcessorConsumer) {
        let Some(reason) = self.phase.lost() else { return };
        let producer = match self.pipeline.producer() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "replacing the transactional producer");
                self.lose(reason);
                return;
            }
        };
        self.producer = producer;
        self.pending = Pending::default();
        self.dirty = false;
        let mut tpl = TopicPartitionList::new();
        for &(src, partition) in self.tasks.keys() {
            tpl.add_partition(&self.pipeline.inputs[src].topic, partition);
        }
        let committed = match consumer.committed_offsets(tpl, TXN_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the committed offsets to rewind to");
                self.lose(reason);
                return;
            }
        };
        let now = now_ms();
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let Some(src) = self.pipeline.input_index(e.topic()) else { continue };
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
                    self.phase.fail(Rebuild::Rewind);
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
            self.phase.fail(Rebuild::Rewind);
            return;
        }
        self.phase.rewound();
        metrics::counter!(m::REWINDS, "reason" => reason.label()).increment(1);
        tracing::info!(reason = reason.label(), partitions, "rewound to the last commit");
    }

    /// New partitions: each resumes from its committed position and checkpoint; `tpl` gets the
    /// offsets to read from (the checkpoint's replay start).
    pub(crate) fn take_partitions(
        &mut self,
        consumer: &ProcessorConsumer,
        tpl: &mut TopicPartitionList,
    ) {
        let committed = match consumer.committed_offsets(tpl.clone(), TXN_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                self.fail_consumer("reading the committed offsets of new partitions", &e);
                return;
            }
        };
        let now = now_ms();
        for e in committed.elements() {
            let Some(src) = self.pipeline.input_index(e.topic()) else { continue };
            self.origins.remove(&(src, e.partition()));
            let start = if matches!(e.offset(), Offset::Offset(_)) {
                None
            } else {
                match self.start_uncommitted(consumer, src, e.topic(), e.partition()) {
                    Ok(start) => start,
                    Err(err) => {
                        self.fail_consumer("reading where a new partition ends", &err);
                        return;
                    }
                }
            };
            let task = self.task_from(&e, now);
            if start.is_some() || matches!(e.offset(), Offset::Offset(_)) {
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
        self.count_assigned();
    }

    /// Partitions leaving (after their work is committed): forget them.
    pub(crate) fn drop_partitions(&mut self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            if let Some(src) = self.pipeline.input_index(e.topic()) {
                self.tasks.remove(&(src, e.partition()));
                self.origins.remove(&(src, e.partition()));
                self.moved.remove(&(src, e.partition()));
                let labels =
                    [("topic", e.topic().to_owned()), ("partition", e.partition().to_string())];
                metrics::gauge!(m::LAG, &labels).set(0.0);
                metrics::gauge!(m::WATERMARK_LAG, &labels).set(0.0);
            }
        }
        self.count_assigned();
    }

    fn count_assigned(&self) {
        self.health.assigned.store(self.tasks.len(), Ordering::Relaxed);
        metrics::gauge!(m::ASSIGNED).set(self.tasks.len() as f64);
    }

    /// librdkafka's statistics: only each partition's log end is taken from them. The
    /// consumer's position in the same report can be stale — a report built before a rewind
    /// or an assignment sought a partition back still carries the position from before, and
    /// it would make a partition that is about to be read again look caught up (and then,
    /// once quiet, idle) — so [`Worker::catch_up`] reads the position live instead.
    pub(crate) fn note_log_ends(&mut self, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            let Some(src) = self.pipeline.input_index(topic) else { continue };
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
    pub(crate) fn catch_up(&mut self, consumer: &ProcessorConsumer) {
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
        self.waiting = 0;
        self.stuck_for = Duration::ZERO;
        for e in positions.elements() {
            let Some(src) = self.pipeline.input_index(e.topic()) else { continue };
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
            self.waiting += lag;
            let moved = self.moved.entry(key).or_insert((position, Instant::now()));
            if lag == 0 || moved.0 != position {
                *moved = (position, Instant::now());
            }
            self.stuck_for = self.stuck_for.max(moved.1.elapsed());
            metrics::gauge!(m::LAG, "topic" => e.topic().to_owned(), "partition" => e.partition().to_string())
                .set(lag as f64);
            task.set_caught_up(lag == 0, position, now);
        }
        self.log_ends.clear();
    }
}
