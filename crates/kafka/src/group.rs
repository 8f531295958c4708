//! A consumer-group member for long-running loaders (the processor, the sink): its settings
//! ([`Membership`]), partition changes and statistics going to one handler behind a mutex the
//! poll loop also uses, and a failed member rebuilt from scratch with a backoff.
//!
//! librdkafka runs rebalance and statistics callbacks inside `poll`, on the polling thread, so
//! the loop must never hold the handler while it polls.

use crate::cause::{Causes, Refusal};
use crate::{KafkaConfig, KafkaError};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How a long-running member joins its group. [`Membership::client_config`] is the one place
/// the group defaults are decided; `[kafka.extra]` may override each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership<'a> {
    /// The consumer group.
    pub group_id: &'a str,
    /// Static membership (`group.instance.id`): a restarted instance takes its slot back
    /// without a rebalance, and two processes configured with the same slot fence each other
    /// loudly. `None`: a dynamic member.
    pub instance_id: Option<&'a str>,
    /// `session.timeout.ms`: a killed member's partitions move after this long. `None`:
    /// librdkafka's default.
    pub session_timeout_ms: Option<u64>,
    /// How often librdkafka reports statistics ([`GroupHandler::stats`]), in ms.
    pub statistics_interval_ms: u64,
    /// The prefetch queue (`queued.max.messages.kbytes`) when the member needs another than
    /// [`KafkaConfig::consumer`]'s; `[kafka.extra]` still wins.
    pub prefetch_kbytes: Option<u32>,
}

impl Membership<'_> {
    /// The consumer settings of [`KafkaConfig::consumer`] plus the group's: incremental
    /// (`cooperative-sticky`) rebalancing, so that partitions that stay do not stop, and the
    /// settings above.
    pub fn client_config(&self, kafka: &KafkaConfig) -> ClientConfig {
        let mut c = kafka.consumer(Some(self.group_id));
        let mut default = |key: &str, value: &str| {
            if c.get(key).is_none() {
                c.set(key, value);
            }
        };
        default("partition.assignment.strategy", "cooperative-sticky");
        if let Some(id) = self.instance_id {
            default("group.instance.id", id);
        }
        if let Some(ms) = self.session_timeout_ms {
            default("session.timeout.ms", &ms.to_string());
        }
        c.set("statistics.interval.ms", self.statistics_interval_ms.to_string());
        if let Some(kb) = self.prefetch_kbytes {
            if !kafka.extra.contains_key("queued.max.messages.kbytes") {
                c.set("queued.max.messages.kbytes", kb.to_string());
            }
        }
        c
    }

    /// A consumer with these settings whose partition changes and statistics go to `handler`.
    pub fn create<H: GroupHandler>(
        &self,
        kafka: &KafkaConfig,
        handler: H,
    ) -> Result<BaseConsumer<GroupContext<H>>, KafkaError> {
        self.client_config(kafka)
            .create_with_context(GroupContext::new(handler))
            .map_err(|e| KafkaError::new("creating the consumer", e))
    }
}

/// Why the group itself gave up on a member; part of every service's rebuild reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFailure {
    /// Subscribing to the topics failed.
    Subscribe,
    /// A fatal consumer error, for example `FENCED_INSTANCE_ID` (another process in this slot).
    ConsumerFatal,
    /// A rebalance failed or could not be applied.
    Rebalance,
}

impl GroupFailure {
    /// The `reason` label of the services' rebuild counters.
    pub fn label(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::ConsumerFatal => "consumer_fatal",
            Self::Rebalance => "rebalance",
        }
    }
}

/// Why a service rebuilds its member: a small set whose [`RebuildReason::label`] is the
/// `reason` label of its rebuild counter.
pub trait RebuildReason: From<GroupFailure> + Copy + Send + 'static {
    /// The metric label.
    fn label(&self) -> &'static str;
}

/// What a group member does when partitions move and statistics arrive.
pub trait GroupHandler: Send + Sized + 'static {
    /// Why the member must be rebuilt.
    type Rebuild: RebuildReason;

    /// Partitions arrive: set in `tpl` the offset each is to be read from (or leave it for
    /// `auto.offset.reset`).
    fn assign(&mut self, consumer: &BaseConsumer<GroupContext<Self>>, tpl: &mut TopicPartitionList);
    /// Partitions leave: finish what was done with them (commit, flush).
    fn revoke(&mut self, consumer: &BaseConsumer<GroupContext<Self>>, tpl: &TopicPartitionList);
    /// librdkafka's statistics (every `statistics.interval.ms`).
    fn stats(&mut self, stats: &Statistics);
    /// The group cannot go on with the member, which must be rebuilt.
    fn fail(&mut self, failure: GroupFailure);
    /// Why the member must be rebuilt, once [`GroupHandler::fail`] (or anything else) said so.
    fn failure(&self) -> Option<Self::Rebuild>;
    /// One consumed record.
    fn message(&mut self, consumer: &BaseConsumer<GroupContext<Self>>, msg: &BorrowedMessage<'_>);
    /// Called after every poll (with or without a record): commit or flush when due.
    fn tick(&mut self, consumer: &BaseConsumer<GroupContext<Self>>);
    /// The member is asked to stop: finish the open work (commit, flush).
    fn finish(&mut self, consumer: &BaseConsumer<GroupContext<Self>>);
}

/// Whether a member's poll loop is running and has passed lately, and whether Kafka refuses
/// it: what `/health` reports.
#[derive(Debug, Default)]
pub struct Liveness {
    running: AtomicBool,
    last_loop_ms: AtomicI64,
    /// Refusals (credentials, TLS, ACLs) reported to the member's clients; a recent one makes
    /// the member unhealthy and is the reason its health gives.
    pub causes: Causes,
    /// Why the member makes no progress although the loop passes (set by the service), for
    /// example input waiting and nothing committed for a while.
    stalled: Mutex<Option<String>>,
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

    /// [`Liveness::alive_at`] now, Kafka refused nothing lately and the member is not stalled
    /// ([`Liveness::reason`]).
    pub fn alive(&self) -> bool {
        self.alive_at(Self::now_ms()) && self.reason().is_none()
    }

    /// Why the member is unhealthy although its loop may pass: Kafka refused it lately, or it
    /// makes no progress ([`Liveness::set_stalled`]). The `reason` of its health answer.
    pub fn reason(&self) -> Option<String> {
        let stalled = || self.stalled.lock().unwrap_or_else(PoisonError::into_inner).clone();
        self.causes.recent().map(Refusal::describe).or_else(stalled)
    }

    /// The member makes no progress, for `why`; `None`: it does again.
    pub fn set_stalled(&self, why: Option<String>) {
        *self.stalled.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Running, but the loop has not passed within [`Liveness::STALE_MS`] of `now_ms`: stuck,
    /// as opposed to waiting between rebuilds (not running), which the service does by itself.
    pub fn hung_at(&self, now_ms: i64) -> bool {
        self.running.load(Ordering::Relaxed)
            && now_ms - self.last_loop_ms.load(Ordering::Relaxed) >= Self::STALE_MS
    }

    /// [`Liveness::hung_at`] now.
    pub fn hung(&self) -> bool {
        self.hung_at(Self::now_ms())
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
) -> Result<(), H::Rebuild> {
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
) -> Result<(), H::Rebuild> {
    consumer.subscribe(topics).map_err(|e| {
        tracing::warn!(error = %e, "subscribing");
        H::Rebuild::from(GroupFailure::Subscribe)
    })?;
    // The loop's heartbeat reads the clock; behind a backlog, once per record would cost more
    // than some records do, and every 16th pass is still many times a second.
    let mut passes: u32 = 0;
    liveness.beat();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            consumer.context().handler().finish(consumer);
            break Ok(());
        }
        let polled = consumer.poll(Duration::from_millis(20));
        passes = passes.wrapping_add(1);
        if polled.is_none() || passes % 16 == 0 {
            liveness.beat();
        }
        match polled {
            Some(Ok(msg)) => {
                liveness.causes.clear();
                consumer.context().handler().message(consumer, &msg);
            }
            Some(Err(RdError::MessageConsumptionFatal(code))) => {
                tracing::error!(error = %code, "the consumer failed for good");
                liveness.causes.note(&RdError::MessageConsumptionFatal(code));
                consumer.context().handler().fail(GroupFailure::ConsumerFatal);
            }
            // A refusal is logged once by `note`; anything else each time.
            Some(Err(e)) if liveness.causes.note(&e) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer"),
            None => {}
        }
        let mut handler = consumer.context().handler();
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
                self.handler().fail(GroupFailure::Rebalance);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a rebalance");
            self.handler().fail(GroupFailure::Rebalance);
        }
    }
}

/// Runs members one after another until `stop` is set: `start` creates one (its consumer,
/// with its handler), which is subscribed to `topics` and polled ([`poll_until_stopped`]) until
/// it stops or fails; after a failure the next is started as [`run_with_rebuilds`] says, each
/// reason going to `on_rebuild`. A member's consumer is dropped (its handler with it) before
/// the next one is started.
pub fn run_members<H: GroupHandler>(
    stop: &AtomicBool,
    topics: &[&str],
    liveness: &Liveness,
    mut start: impl FnMut() -> Result<BaseConsumer<GroupContext<H>>, H::Rebuild>,
    on_rebuild: impl Fn(H::Rebuild),
) {
    let attempt = || {
        let consumer = start()?;
        let result = poll_until_stopped(&consumer, topics, stop, liveness);
        drop(consumer);
        result
    };
    run_with_rebuilds(stop, attempt, on_rebuild);
}

/// Runs `attempt` until it returns `Ok` (a clean stop) or `stop` is set. After each failure it
/// reports the reason to `on_rebuild` and waits, 0.5 s doubling to 10 s (back to 0.5 s after an
/// attempt that ran for a minute), so a broken dependency is retried without a busy loop.
pub fn run_with_rebuilds<R: RebuildReason>(
    stop: &AtomicBool,
    mut attempt: impl FnMut() -> Result<(), R>,
    on_rebuild: impl Fn(R),
) {
    const FIRST: Duration = Duration::from_millis(500);
    let mut backoff = FIRST;
    loop {
        let started = Instant::now();
        let Err(reason) = attempt() else { return };
        on_rebuild(reason);
        tracing::warn!(
            reason = reason.label(),
            backoff_ms = backoff.as_millis() as u64,
            "rebuilding the consumer"
        );
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
    fn waiting_between_rebuilds_is_not_ready_but_not_hung() {
        let l = Liveness::default();
        assert!(!l.alive_at(1_000_000) && !l.hung_at(1_000_000), "not running yet");
        l.running.store(true, Ordering::Relaxed);
        l.last_loop_ms.store(1_000_000, Ordering::Relaxed);
        assert!(l.alive_at(1_000_000 + Liveness::STALE_MS - 1));
        assert!(!l.hung_at(1_000_000 + Liveness::STALE_MS - 1));
        assert!(!l.alive_at(1_000_000 + Liveness::STALE_MS), "stale: not ready");
        assert!(l.hung_at(1_000_000 + Liveness::STALE_MS), "running and stale: hung");
        l.running.store(false, Ordering::Relaxed);
        assert!(!l.hung_at(2_000_000), "stopped running: waiting, not hung");
    }

    #[test]
    fn membership_defaults_yield_to_kafka_extra() {
        use crate::config::ExtraValue;
        let m = Membership {
            group_id: "g",
            instance_id: Some("g-0"),
            session_timeout_ms: Some(10_000),
            statistics_interval_ms: 1_000,
            prefetch_kbytes: Some(2048),
        };
        let c = m.client_config(&KafkaConfig::default());
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        assert_eq!(c.get("group.instance.id"), Some("g-0"));
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
        assert_eq!(c.get("statistics.interval.ms"), Some("1000"));
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        let dynamic =
            Membership { instance_id: None, session_timeout_ms: None, prefetch_kbytes: None, ..m };
        let c = dynamic.client_config(&KafkaConfig::default());
        assert_eq!((c.get("group.instance.id"), c.get("session.timeout.ms")), (None, None));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("8192"), "the consumer's own");
        let mut kafka = KafkaConfig::default();
        kafka
            .extra
            .insert("partition.assignment.strategy".into(), ExtraValue::Plain("range".into()));
        kafka.extra.insert("session.timeout.ms".into(), ExtraValue::Plain("45000".into()));
        kafka.extra.insert("queued.max.messages.kbytes".into(), ExtraValue::Plain("512".into()));
        let c = m.client_config(&kafka);
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("512"));
        assert_eq!(c.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(c.get("session.timeout.ms"), Some("45000"));
    }

    #[test]
    fn group_failure_labels() {
        assert_eq!(GroupFailure::Subscribe.label(), "subscribe");
        assert_eq!(GroupFailure::ConsumerFatal.label(), "consumer_fatal");
        assert_eq!(GroupFailure::Rebalance.label(), "rebalance");
    }

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
