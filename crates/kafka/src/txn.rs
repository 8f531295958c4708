//! The one transactional producer. Every Kafka transaction in Tributary — the processor's
//! commit intervals, `tributary dlq replay` — goes through [`TransactionalProducer`], and its
//! errors are classified once, by [`TxnClass`](crate::TxnClass):
//!
//! - retriable: the same call is tried again after a backoff ([`TransactionalProducer::commit`]
//!   does so itself);
//! - abortable: the owner calls [`TransactionalProducer::abort`] and rewinds to the committed
//!   offsets;
//! - fatal: the owner drops the producer, [`starts`](TransactionalProducer::start) a new one
//!   with the same `transactional.id` and rebuilds its state from the committed offsets.

use crate::cause::{Causes, Watched};
use crate::config::{KafkaConfig, ProducerTuning};
use crate::error::{KafkaError, TxnClass};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one transactional call (init, offsets, commit, abort) may take.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long past its deadline a transactional call of librdkafka may go on before the producer
/// is given up: librdkafka does not always keep the deadline it is given (with the broker that
/// was both transaction and group coordinator SIGKILLed mid-commit, a commit stayed blocked
/// for minutes, logging nothing).
const OVERRUN: Duration = Duration::from_secs(5);

/// How many times a retriable commit failure is tried in all, within [`TXN_TIMEOUT`].
const COMMIT_ATTEMPTS: u64 = 5;

/// How a transactional producer is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnSettings {
    /// The producer's `transactional.id`. A producer started with the same id fences the one
    /// before it and aborts what that one left open.
    pub transactional_id: String,
    /// Delivery timeout and linger.
    pub tuning: ProducerTuning,
    /// Kafka's `transaction.timeout.ms`; librdkafka's default when `None`.
    pub transaction_timeout_ms: Option<u64>,
    /// `retry.backoff.ms` unless `[kafka.extra]` sets it; librdkafka's default when `None`.
    pub retry_backoff_ms: Option<u64>,
}

/// A producer with a transaction always open: [`TransactionalProducer::start`] begins the
/// first, and the owner begins the next after each commit or abort.
pub struct TransactionalProducer {
    /// Shared with the thread of a call in progress ([`TransactionalProducer::bounded`]).
    inner: Arc<ThreadedProducer<Watched>>,
    /// Refusals librdkafka reported (credentials, TLS, ACLs), to explain its errors.
    causes: Causes,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer").finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Creates the producer and initialises transactions, which fences the previous producer
    /// with this `transactional.id` and aborts what it left open, then begins a transaction.
    pub fn start(kafka: &KafkaConfig, settings: &TxnSettings) -> Result<Self, KafkaError> {
        Self::start_watched(kafka, settings, Causes::default())
    }

    /// [`TransactionalProducer::start`], noting refusals in `causes` (a service's health) and
    /// naming a recent one in the errors of its calls.
    pub fn start_watched(
        kafka: &KafkaConfig,
        settings: &TxnSettings,
        causes: Causes,
    ) -> Result<Self, KafkaError> {
        let mut c = kafka.producer(settings.tuning);
        c.set("transactional.id", &settings.transactional_id);
        if let Some(ms) = settings.transaction_timeout_ms {
            c.set("transaction.timeout.ms", ms.to_string());
        }
        if let Some(ms) = settings.retry_backoff_ms {
            if c.get("retry.backoff.ms").is_none() {
                c.set("retry.backoff.ms", ms.to_string());
            }
        }
        let context = Watched { causes: causes.clone() };
        let inner: ThreadedProducer<Watched> = c
            .create_with_context(context)
            .map_err(|e| KafkaError::new("creating the producer", e))?;
        let p = Self { inner: Arc::new(inner), causes };
        p.bounded("init_transactions", TXN_TIMEOUT, |inner| inner.init_transactions(TXN_TIMEOUT))?;
        p.inner.begin_transaction().map_err(|e| p.causes.explain("begin_transaction", e))?;
        Ok(p)
    }

    /// Runs `call` on a thread of its own and waits for it `limit` plus [`OVERRUN`] at most.
    /// A call that has not returned by then is given up: the error is [`TxnClass::Fatal`]
    /// (`Canceled`), so the owner starts a new producer with the same `transactional.id`,
    /// which fences this one; the call's thread keeps this producer until it returns.
    fn bounded<T: Send + 'static>(
        &self,
        what: &'static str,
        limit: Duration,
        call: impl FnOnce(&ThreadedProducer<Watched>) -> Result<T, RdError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new().name("txn-call".into()).spawn(move || {
            let _ = tx.send(call(&inner));
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, what, "starting a thread for a transactional call");
            return Err(KafkaError::new(what, RdError::Canceled));
        }
        match rx.recv_timeout(limit + OVERRUN) {
            Ok(r) => r.map_err(|e| self.causes.explain(what, e)),
            Err(_) => {
                tracing::error!(
                    what,
                    limit_ms = limit.as_millis() as u64,
                    "librdkafka did not return within the deadline; giving the producer up"
                );
                Err(KafkaError::new(what, RdError::Canceled))
            }
        }
    }

    /// Hands a record to the open transaction, waiting while the producer's queue is full, at
    /// most [`TXN_TIMEOUT`]: then the queue-full error is the caller's (the brokers took
    /// nothing for that long).
    pub fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, r)) => {
                    return Err(self.causes.explain(&format!("producing to {}", r.topic), e))
                }
            }
        }
    }

    /// Commits the open transaction with the consumer group's `offsets` (nothing when the list
    /// is empty), within [`TXN_TIMEOUT`] in all: each librdkafka call gets what is left of it.
    /// A retriable failure is tried again, up to [`COMMIT_ATTEMPTS`] in all, 100 ms more apart
    /// each time, while time is left; any other, and a retriable one at the deadline, is the
    /// caller's to classify (a timed-out commit is retriable to librdkafka, so the caller
    /// treats it as fatal: a new producer fences it). The next transaction is not begun:
    /// [`TransactionalProducer::begin`].
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        let offsets = offsets.clone();
        let commit =
            move |inner: &ThreadedProducer<Watched>| commit_within(inner, &offsets, &group);
        self.bounded("committing the transaction", TXN_TIMEOUT, commit)
    }

    /// Records handed to the producer and not yet acknowledged or failed.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// Begins the next transaction.
    pub fn begin(&self) -> Result<(), KafkaError> {
        self.inner
            .begin_transaction()
            .map_err(|e| self.causes.explain("beginning a transaction", e))
    }

    /// Aborts the open transaction (after an [`TxnClass::Abortable`] error).
    pub fn abort(&self) -> Result<(), KafkaError> {
        let abort = |inner: &ThreadedProducer<Watched>| inner.abort_transaction(TXN_TIMEOUT);
        self.bounded("aborting the transaction", TXN_TIMEOUT, abort)
    }
}

/// [`TransactionalProducer::commit`] on the call's own thread: offsets, then the commit,
/// within [`TXN_TIMEOUT`] in all, a retriable failure of either tried again while time is left.
fn commit_within(
    inner: &ThreadedProducer<Watched>,
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
) -> Result<(), RdError> {
    let deadline = Instant::now() + TXN_TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut attempt = 0;
    let mut offsets_sent = false;
    loop {
        attempt += 1;
        let t0 = Instant::now();
        let r = if offsets.count() > 0 && !offsets_sent {
            inner.send_offsets_to_transaction(offsets, group, left())
        } else {
            Ok(())
        };
        offsets_sent |= r.is_ok();
        // commit_transaction flushes first, and the rdkafka crate's flush sleeps in 100 ms
        // steps while the producer's own thread takes the delivery reports: wait for them
        // here, in short steps, so that flush finds nothing left to do.
        while inner.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        let r = r.and_then(|()| inner.commit_transaction(left()));
        tracing::trace!(took_ms = t0.elapsed().as_millis() as u64, "transaction");
        let pause = Duration::from_millis(100 * attempt);
        match r {
            Err(e)
                if TxnClass::of(&e) == TxnClass::Retriable
                    && attempt < COMMIT_ATTEMPTS
                    && left() > pause =>
            {
                tracing::warn!(error = %e, attempt, "the commit failed; trying it again");
                std::thread::sleep(pause);
            }
            other => return other,
        }
    }
}
