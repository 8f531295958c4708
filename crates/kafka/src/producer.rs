//! The acknowledged-write producer: a record counts as written only when the broker says so.

use crate::config::{KafkaConfig, ProducerTuning, QueueBound};
use crate::dlq::Letter;
use crate::error::KafkaError;
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an authentication or TLS failure explains a later metadata request that got no
/// answer: librdkafka reports those failures only through its error callback, and the request
/// itself just times out (`BrokerTransportFailure`, `AllBrokersDown`).
const CAUSE_HORIZON: Duration = Duration::from_secs(60);

/// The producer's client context: logs librdkafka's client errors and remembers the last
/// one that names a cause a request cannot (credentials refused, TLS failed).
#[derive(Default, Clone)]
pub struct Watchful {
    cause: Arc<Mutex<Option<(Instant, RDKafkaErrorCode)>>>,
}

impl Watchful {
    /// The cause librdkafka reported within the horizon, if any.
    fn recent_cause(&self) -> Option<RDKafkaErrorCode> {
        let cause = self.cause.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cause.filter(|(at, _)| at.elapsed() < CAUSE_HORIZON).map(|(_, code)| code)
    }
}

impl ClientContext for Watchful {
    fn error(&self, error: RdError, reason: &str) {
        tracing::error!(error = %error, reason, "kafka client error");
        let Some(code) = error.rdkafka_error_code() else { return };
        if is_cause(code) {
            *self.cause.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), code));
        }
    }
}

/// Errors that say why brokers do not answer, as opposed to that they do not: the refusals
/// of [`crate::cause`] that concern the whole client.
fn is_cause(code: RDKafkaErrorCode) -> bool {
    use crate::cause::{Refusal, Resource};
    matches!(
        Refusal::of(code),
        Some(Refusal::Credentials | Refusal::Tls | Refusal::Denied(Resource::Cluster))
    )
}

/// Errors of a request that got no answer, which a recent [`is_cause`] error explains.
fn is_no_answer(code: Option<RDKafkaErrorCode>) -> bool {
    crate::cause::is_no_answer(code)
}

/// Where the broker put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// One record to write. Borrowed so the hot path copies bytes only into librdkafka.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingRecord<'a> {
    pub topic: &'a str,
    /// Record key; partitioned with murmur2 when present.
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Record timestamp in epoch milliseconds; the broker's producer time when `None`.
    pub timestamp_ms: Option<i64>,
}

/// A record in librdkafka's hands; [`PendingDelivery::wait`] gives the broker's answer, at
/// the latest when the producer's delivery timeout expires.
pub struct PendingDelivery {
    delivery: DeliveryFuture,
}

impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDelivery").finish_non_exhaustive()
    }
}

impl PendingDelivery {
    /// Waits for the broker's acknowledgement or the delivery failure.
    pub async fn wait(self) -> Result<Delivered, KafkaError> {
        self.await
    }
}

/// Polling a delivery in place lets a caller stop waiting (a deadline, a client gone) and hand
/// the same delivery to someone else, without a task of its own for every record.
impl std::future::Future for PendingDelivery {
    type Output = Result<Delivered, KafkaError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let delivery = std::pin::Pin::new(&mut self.delivery);
        let answer = std::task::ready!(std::future::Future::poll(delivery, cx));
        std::task::Poll::Ready(match answer {
            Ok(Ok(d)) => Ok(Delivered { partition: d.partition, offset: d.offset }),
            // The failed record comes back with the answer: the topic is named from it, so a
            // record in flight carries no copy of its topic's name.
            Ok(Err((e, record))) => {
                let topic = rdkafka::Message::topic(&record);
                Err(KafkaError::new(format!("producing to {topic}"), e))
            }
            Err(_) => {
                Err(KafkaError::new("producing (the producer was closed)", RdError::Canceled))
            }
        })
    }
}

/// Brokers a metadata request could see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub brokers: usize,
    /// Names of the topics that exist, without errors. Topics this client may not describe
    /// are left out by the broker; [`EventProducer::denied_topics`] tells them apart.
    pub topics: Vec<String>,
    /// The replicas of every partition of those topics.
    pub partitions: Vec<crate::isr::PartitionReplicas>,
    /// Every broker of the metadata: its id, host and port.
    pub broker_addrs: Vec<(i32, String, i32)>,
}

/// Idempotent `acks=all` producer configured as the spec says.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer<Watchful>,
    /// The same context librdkafka calls, to read what it remembered.
    watch: Watchful,
    tuning: ProducerTuning,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").field("tuning", &self.tuning).finish_non_exhaustive()
    }
}

impl EventProducer {
    /// Creates the producer. No connection is made until the first request.
    pub fn new(config: &KafkaConfig, tuning: ProducerTuning) -> Result<Self, KafkaError> {
        let watch = Watchful::default();
        let inner = config
            .producer(tuning)
            .create_with_context(watch.clone())
            .map_err(|e| KafkaError::new("creating the kafka producer", e))?;
        Ok(Self { inner, watch, tuning })
    }

    /// Creates the producer with an explicit bound on its queue (see [`QueueBound`]).
    pub fn with_queue_bound(
        config: &KafkaConfig,
        tuning: ProducerTuning,
        bound: QueueBound,
    ) -> Result<Self, KafkaError> {
        let watch = Watchful::default();
        let inner = config
            .bounded_producer(tuning, bound)
            .create_with_context(watch.clone())
            .map_err(|e| KafkaError::new("creating the kafka producer", e))?;
        Ok(Self { inner, watch, tuning })
    }

    /// Hands one record to librdkafka without waiting: when its queue is full the error says
    /// so ([`KafkaError::is_queue_full`]) at once.
    pub async fn try_enqueue(
        &self,
        record: OutgoingRecord<'_>,
    ) -> Result<PendingDelivery, KafkaError> {
        self.enqueue(record, Instant::now()).await
    }

    /// Hands one record to librdkafka, waiting for room in its queue until `deadline` at most.
    /// Records enqueued one after another keep that order on their partition.
    pub async fn enqueue(
        &self,
        record: OutgoingRecord<'_>,
        deadline: Instant,
    ) -> Result<PendingDelivery, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in record.headers {
            headers = headers.insert(Header { key: name, value: Some(*value) });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(record.topic).payload(record.value).headers(headers);
        if let Some(key) = record.key {
            fr = fr.key(key);
        }
        if let Some(ts) = record.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        self.enqueue_record(fr, deadline).await
    }

    /// [`EventProducer::enqueue`] of a record built already.
    async fn enqueue_record(
        &self,
        mut fr: FutureRecord<'_, [u8], [u8]>,
        deadline: Instant,
    ) -> Result<PendingDelivery, KafkaError> {
        loop {
            match self.inner.send_result(fr) {
                Ok(delivery) => return Ok(PendingDelivery { delivery }),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    // librdkafka's queue is full: the broker is slow or gone. Wait for room.
                    fr = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, back)) => {
                    return Err(KafkaError::new(format!("producing to {}", back.topic), e))
                }
            }
        }
    }

    /// Writes one record and waits for the broker's acknowledgement, or for the delivery
    /// timeout, whichever comes first.
    pub async fn send(&self, record: OutgoingRecord<'_>) -> Result<Delivered, KafkaError> {
        self.enqueue(record, self.deadline()).await?.wait().await
    }

    /// Writes a dead letter (or a replayed one), its headers kept as they are (null values
    /// included), and waits as [`EventProducer::send`] does.
    pub async fn send_letter(&self, letter: Letter<'_>) -> Result<Delivered, KafkaError> {
        self.enqueue_record(letter.into_future_record(), self.deadline()).await?.wait().await
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.tuning.delivery_timeout_ms)
    }

    /// Asks a broker for cluster metadata, within `timeout`. Used by health checks.
    pub async fn cluster_info(&self, timeout: Duration) -> Result<ClusterInfo, KafkaError> {
        let producer = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(None, Timeout::After(timeout))
        })
        .await
        .map_err(|_| KafkaError::new("fetching cluster metadata", RdError::Canceled))?;
        let md = result.map_err(|e| self.explained("fetching cluster metadata", e))?;
        if md.brokers().is_empty() {
            let none = RdError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown);
            return Err(self.explained("fetching cluster metadata", none));
        }
        let ok = || md.topics().iter().filter(|t| t.error().is_none());
        let topics = ok().map(|t| t.name().to_owned()).collect();
        let partitions = ok()
            .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p)))
            .map(|(topic, p)| crate::isr::PartitionReplicas {
                topic: topic.to_owned(),
                partition: p.id(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
            })
            .collect();
        let broker_addrs =
            md.brokers().iter().map(|b| (b.id(), b.host().to_owned(), b.port())).collect();
        Ok(ClusterInfo { brokers: md.brokers().len(), topics, partitions, broker_addrs })
    }

    /// Which of `names` the broker refuses to describe to this client (no ACL), as opposed to
    /// topics that do not exist: a metadata request for all topics leaves both out, one for a
    /// named topic answers `TopicAuthorizationFailed` for the first.
    pub async fn denied_topics(
        &self,
        names: Vec<String>,
        timeout: Duration,
    ) -> Result<Vec<String>, KafkaError> {
        let producer = self.inner.clone();
        let denied = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for name in names {
                let md = producer.client().fetch_metadata(Some(&name), Timeout::After(timeout));
                let md = md.map_err(|e| KafkaError::new("fetching topic metadata", e))?;
                if md.topics().iter().any(|t| t.error() == Some(denied)) {
                    out.push(name);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| KafkaError::new("fetching topic metadata", RdError::Canceled))?
    }

    /// `err`, or, when it says only that no broker answered, the cause librdkafka reported
    /// shortly before (credentials refused, TLS failed), so health can name it.
    fn explained(&self, what: &str, err: RdError) -> KafkaError {
        match self.watch.recent_cause() {
            Some(code) if is_no_answer(err.rdkafka_error_code()) => {
                KafkaError::new(what, RdError::MetadataFetch(code))
            }
            _ => KafkaError::new(what, err),
        }
    }

    /// Waits until every queued record is delivered or failed, at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|_| KafkaError::new("flushing the producer", RdError::Canceled))?
            .map_err(|e| KafkaError::new("flushing the producer", e))
    }

    /// Records waiting in librdkafka's queue (not yet acknowledged).
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
