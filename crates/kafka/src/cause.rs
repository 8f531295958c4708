//! Why Kafka refuses a client, as opposed to not answering it: refused credentials, a failed
//! TLS handshake, a missing ACL. librdkafka reports the first two only through its error
//! callback (the request itself just times out: `BrokerTransportFailure`, `AllBrokersDown`),
//! and a missing ACL as one consumer or transaction error among many; [`Causes`] remembers the
//! last one, so that startup errors and health answers can name it instead of a dead broker.

use crate::error::KafkaError;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::DeliveryResult;
use rdkafka::metadata::Metadata;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a refusal explains later failures and keeps a service unhealthy, unless progress
/// ([`Causes::clear`]) says it is over sooner.
pub const CAUSE_HORIZON: Duration = Duration::from_secs(60);

/// What Kafka denied a client access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cluster,
    Topic,
    Group,
    TransactionalId,
}

/// Why Kafka refuses a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// SASL authentication failed: wrong user, password or mechanism.
    Credentials,
    /// The TLS handshake failed (for example a CA that did not sign the brokers' certificates).
    Tls,
    /// An ACL is missing.
    Denied(Resource),
}

impl Refusal {
    /// The refusal a librdkafka error code stands for, if any.
    pub fn of(code: RDKafkaErrorCode) -> Option<Self> {
        use RDKafkaErrorCode as C;
        Some(match code {
            C::Authentication | C::SaslAuthenticationFailed | C::UnsupportedSASLMechanism => {
                Self::Credentials
            }
            C::SSL => Self::Tls,
            C::ClusterAuthorizationFailed => Self::Denied(Resource::Cluster),
            C::TopicAuthorizationFailed => Self::Denied(Resource::Topic),
            C::GroupAuthorizationFailed => Self::Denied(Resource::Group),
            C::TransactionalIdAuthorizationFailed => Self::Denied(Resource::TransactionalId),
            _ => return None,
        })
    }

    /// The refusal `err` stands for, if any.
    pub fn of_error(err: &RdError) -> Option<Self> {
        err.rdkafka_error_code().and_then(Self::of)
    }

    /// What a user is told, naming no host (health answers are open to anyone).
    pub fn describe(self) -> String {
        let denied = |what: &str, acl: &str| {
            format!(
                "kafka denied access to {what} (authorization failed; grant the user an ACL for {acl})"
            )
        };
        match self {
            Self::Credentials => "kafka refused the credentials (SASL authentication failed; \
                 check sasl_username, sasl_password and sasl_mechanism)"
                .to_owned(),
            Self::Tls => "the TLS handshake with kafka failed (check ssl_ca_location)".to_owned(),
            Self::Denied(Resource::Cluster) => denied("the cluster", "the cluster"),
            Self::Denied(Resource::Topic) => denied("a topic", "its topics"),
            Self::Denied(Resource::Group) => denied("the consumer group", "its group"),
            Self::Denied(Resource::TransactionalId) => {
                denied("the transactional id", "its transactional id")
            }
        }
    }
}

/// Errors of a request that got no answer, which a recent refusal explains.
pub(crate) fn is_no_answer(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        Some(
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::MessageTimedOut
        )
    )
}

/// The last refusal reported for a client (or a service's clients), shared by clones.
#[derive(Debug, Default, Clone)]
pub struct Causes {
    last: Arc<Mutex<Option<(Instant, Refusal)>>>,
}

impl Causes {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Refusal)>> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `err` when it is a refusal (logged when it is a new one); whether it was.
    pub fn note(&self, err: &RdError) -> bool {
        let Some(refusal) = Refusal::of_error(err) else { return false };
        let mut slot = self.slot();
        let known = slot.is_some_and(|(at, r)| r == refusal && at.elapsed() < CAUSE_HORIZON);
        if !known {
            tracing::error!(error = %err, "{}", refusal.describe());
        }
        *slot = Some((Instant::now(), refusal));
        true
    }

    /// The refusal reported within [`CAUSE_HORIZON`], if any.
    pub fn recent(&self) -> Option<Refusal> {
        self.slot().filter(|(at, _)| at.elapsed() < CAUSE_HORIZON).map(|(_, r)| r)
    }

    /// The client made progress (records arrived, a transaction committed): what was refused
    /// before no longer is.
    pub fn clear(&self) {
        let mut slot = self.slot();
        if slot.is_some() {
            tracing::info!("kafka accepts the client again");
            *slot = None;
        }
    }

    /// `err` as a [`KafkaError`] of `what`; when it says only that no broker answered and a
    /// refusal was reported shortly before, that refusal is named in `what` and is its cause.
    pub fn explain(&self, what: &str, err: RdError) -> KafkaError {
        if let Some(refusal) = Refusal::of_error(&err) {
            return KafkaError::new(format!("{what}: {}", refusal.describe()), err);
        }
        match self.recent() {
            Some(refusal) if is_no_answer(err.rdkafka_error_code()) => {
                KafkaError::new(format!("{what}: {}", refusal.describe()), err)
            }
            _ => KafkaError::new(what, err),
        }
    }
}

/// A client context that logs librdkafka's client errors and notes refusals in its
/// [`Causes`]; for producers (deliveries are not reported) and plain consumers.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    /// Where refusals go.
    pub causes: Causes,
}

impl ClientContext for Watched {
    fn error(&self, error: RdError, reason: &str) {
        if !self.causes.note(&error) {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }
}

impl ProducerContext for Watched {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl ConsumerContext for Watched {}

/// Cluster metadata from a consumer without a group, within `timeout`; an error names a
/// refusal reported meanwhile. Such a consumer's errors wait in its queue (they do not reach
/// the error callback), and may land there a moment after the request failed: after a failure
/// they are taken from there for up to [`REFUSAL_GRACE`]. A request that got no answer is
/// asked again while `timeout` lasts (one broker of several may be the one refusing).
pub fn fetch_metadata(
    consumer: &BaseConsumer<Watched>,
    timeout: Duration,
) -> Result<Metadata, KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match consumer.fetch_metadata(None, left.max(Duration::from_millis(100))) {
            Ok(md) => return Ok(md),
            Err(e) => e,
        };
        let causes = &consumer.context().causes;
        let grace = Instant::now() + REFUSAL_GRACE;
        while causes.recent().is_none() && Instant::now() < grace {
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(50)) {
                causes.note(&e);
            }
        }
        let retry = causes.recent().is_none()
            && is_no_answer(err.rdkafka_error_code())
            && Instant::now() + Duration::from_millis(200) < deadline;
        if !retry {
            return Err(causes.explain("fetching topic metadata", err));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long a failed metadata request waits for the refusal that explains it.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Asks the cluster for its metadata once, within `timeout`, before work whose own requests
/// would only time out when Kafka refuses the client (an admin client's: its errors reach no
/// callback): the error names the refusal. For startup and one-shot commands.
pub async fn reach(
    config: &crate::config::KafkaConfig,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let probe: BaseConsumer<Watched> = config
        .consumer(None)
        .create_with_context(Watched::default())
        .map_err(|e| KafkaError::new("creating a metadata client", e))?;
    tokio::task::spawn_blocking(move || fetch_metadata(&probe, timeout).map(|_| ()))
        .await
        .map_err(|_| KafkaError::new("reaching kafka", RdError::Canceled))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use RDKafkaErrorCode as C;

    #[test]
    fn refusals_are_named_and_no_answer_is_explained_by_them() {
        assert_eq!(Refusal::of(C::Authentication), Some(Refusal::Credentials));
        assert_eq!(
            Refusal::of(C::TransactionalIdAuthorizationFailed),
            Some(Refusal::Denied(Resource::TransactionalId))
        );
        assert_eq!(Refusal::of(C::BrokerTransportFailure), None);
        assert!(Refusal::Denied(Resource::Group)
            .describe()
            .contains("denied access to the consumer group"));
        let causes = Causes::default();
        let dead = || RdError::MetadataFetch(C::BrokerTransportFailure);
        assert!(!causes.explain("fetching", dead()).to_string().contains("refused"));
        assert!(causes.note(&RdError::Global(C::Authentication)));
        assert!(!causes.note(&dead()), "no answer is not a refusal");
        assert_eq!(causes.recent(), Some(Refusal::Credentials));
        let e = causes.explain("fetching", dead());
        assert!(e.to_string().contains("kafka refused the credentials"), "{e}");
        causes.clear();
        assert_eq!(causes.recent(), None);
        let e = causes.explain("init", RdError::Global(C::GroupAuthorizationFailed));
        assert!(e.to_string().contains("denied access to the consumer group"), "{e}");
    }
}
