//! A consumer-group member for long-running loaders (the processor, the sink): partition
//! changes and statistics go to one handler, behind a mutex the poll loop also uses, and a
//! failed member is rebuilt from scratch with a backoff.
//!
//! librdkafka runs rebalance and statistics callbacks inside `poll`, on the polling thread, so
//! the loop must never hold the handler while it polls.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a group member does when partitions move and statistics arrive.
pub trait GroupHandler: Send + Sized + 'static {
    /// Partitions arrive: set in `tpl` the offset each is to be read from (or leave it for
    /// `auto.offset.reset`).
    fn assign(&mut self, consumer: &BaseConsumer<GroupContext<Self>>, tpl: &mut TopicPartitionList);
    /// Partitions leave: finish what was done with them (commit, flush).
    fn revoke(&mut self, consumer: &BaseConsumer<GroupContext<Self>>, tpl: &TopicPartitionList);
    /// librdkafka's statistics (every `statistics.interval.ms`).
    fn stats(&mut self, stats: &Statistics);
    /// The member cannot go on and must be rebuilt; `reason` is a short code.
    fn fail(&mut self, reason: &str);
    /// Why the member must be rebuilt, once [`GroupHandler::fail`] (or anything else) said so.
    fn failure(&self) -> Option<String>;
    /// One consumed record.
    fn message(&mut self, consumer: &BaseConsumer<GroupContext<Self>>, msg: &BorrowedMessage<'_>);
    /// Called after every poll (with or without a record): commit or flush when due.
    fn tick(&mut self, consumer: &BaseConsumer<GroupContext<Self>>);
    /// The member is asked to stop: finish the open work (commit, flush).
    fn finish(&mut self, consumer: &BaseConsumer<GroupContext<Self>>);
}

/// Whether a member's poll loop is running and has passed lately: what `/health` reports.
#[derive(Debug, Default)]
pub struct Liveness {
    running: AtomicBool,
    last_loop_ms: AtomicI64,
}

impl Liveness {
    /// How long the loop may go without passing before the member counts as hung.
    pub const STALE_MS: i64 = 30_000;

    fn now_ms() -> i64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn beat(&self) {
        self.last_loop_ms.store(Self::now_ms(), Ordering::Relaxed);
    }

    /// Running, and the loop passed within [`Liveness::STALE_MS`] of `now_ms`.
    pub fn alive_at(&self, now_ms: i64) -> bool {
        self.running.load(Ordering::Relaxed)
            && now_ms - self.last_loop_ms.load(Ordering::Relaxed) < Self::STALE_MS
    }

    /// [`Liveness::alive_at`] now.
    pub fn alive(&self) -> bool {
        self.alive_at(Self::now_ms())
    }
}

/// Subscribes `consumer` to `topics` and polls until `stop` is set (`Ok`, after
/// [`GroupHandler::finish`]) or the handler reports a failure (`Err` with its reason). A fatal
/// consumer error — for example `FENCED_INSTANCE_ID`, another process in this slot — is a
/// failure too. `liveness` says running while it polls, and notes every pass. The consumer
/// leaves the group at the end.
pub fn poll_until_stopped<H: GroupHandler>(
    consumer: &BaseConsumer<GroupContext<H>>,
    topics: &[&str],
    stop: &AtomicBool,
    liveness: &Liveness,
) -> Result<(), String> {
    liveness.running.store(true, Ordering::Relaxed);
    let result = poll_loop(consumer, topics, stop, liveness);
    liveness.running.store(false, Ordering::Relaxed);
    result
}

fn poll_loop<H: GroupHandler>(
    consumer: &BaseConsumer<GroupContext<H>>,
    topics: &[&str],
    stop: &AtomicBool,
    liveness: &Liveness,
) -> Result<(), String> {
    consumer.subscribe(topics).map_err(|e| {
        tracing::warn!(error = %e, "subscribing");
        "subscribe".to_owned()
    })?;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            consumer.context().handler().finish(consumer);
            break Ok(());
        }
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(msg)) => consumer.context().handler().message(consumer, &msg),
            Some(Err(RdError::MessageConsumptionFatal(code))) => {
                tracing::error!(error = %code, "the consumer failed for good");
                consumer.context().handler().fail("consumer_fatal");
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer"),
            None => {}
        }
        let mut handler = consumer.context().handler();
        liveness.beat();
        handler.tick(consumer);
        if let Some(reason) = handler.failure() {
            break Err(reason);
        }
    };
    // Leaving the group revokes the partitions; a failed handler does nothing more with them.
    consumer.unsubscribe();
    result
}

/// The consumer context that hands everything to a [`GroupHandler`].
pub struct GroupContext<H> {
    handler: Mutex<H>,
}

impl<H> std::fmt::Debug for GroupContext<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupContext").finish_non_exhaustive()
    }
}

impl<H> GroupContext<H> {
    pub fn new(handler: H) -> Self {
        Self { handler: Mutex::new(handler) }
    }

    /// The handler; never hold it across `poll`.
    pub fn handler(&self) -> MutexGuard<'_, H> {
        self.handler.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<H: GroupHandler> ClientContext for GroupContext<H> {
    fn stats(&self, statistics: Statistics) {
        self.handler().stats(&statistics);
    }
}

impl<H: GroupHandler> ConsumerContext for GroupContext<H> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.handler().assign(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.handler().revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error");
                self.handler().fail("rebalance");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a rebalance");
            self.handler().fail("rebalance");
        }
    }
}

/// Runs `attempt` until it returns `Ok` (a clean stop) or `stop` is set. After each failure it
/// reports the reason to `on_rebuild` and waits, 0.5 s doubling to 10 s (back to 0.5 s after an
/// attempt that ran for a minute), so a broken dependency is retried without a busy loop.
pub fn run_with_rebuilds(
    stop: &AtomicBool,
    mut attempt: impl FnMut() -> Result<(), String>,
    on_rebuild: impl Fn(&str),
) {
    const FIRST: Duration = Duration::from_millis(500);
    let mut backoff = FIRST;
    loop {
        let started = Instant::now();
        let Err(reason) = attempt() else { return };
        on_rebuild(&reason);
        tracing::warn!(reason = %reason, backoff_ms = backoff.as_millis() as u64, "rebuilding the consumer");
        if started.elapsed() > Duration::from_secs(60) {
            backoff = FIRST;
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_only_while_running_and_passing() {
        let l = Liveness::default();
        assert!(!l.alive(), "not before the loop runs");
        l.running.store(true, Ordering::Relaxed);
        l.beat();
        let beat = l.last_loop_ms.load(Ordering::Relaxed);
        assert!(l.alive_at(beat + Liveness::STALE_MS - 1));
        assert!(!l.alive_at(beat + Liveness::STALE_MS), "a loop that stopped passing is hung");
        l.running.store(false, Ordering::Relaxed);
        assert!(!l.alive_at(beat), "not after it stopped");
    }
}
