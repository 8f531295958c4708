//! Kafka errors, classified once for the whole code base: [`classify`] says what a request's
//! caller (an API client) should do, [`TxnClass`] what the owner of a transaction does.

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode as Code};

/// What a caller should do about a Kafka error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The cluster is unreachable or busy; the same request may succeed later (HTTP 503).
    Unavailable,
    /// The request itself is wrong (too large, bad topic); retrying will not help.
    Rejected,
    /// Anything else: a bug or an unexpected broker answer.
    Internal,
}

/// A Kafka operation that failed, with its class and the librdkafka error.
///
/// The librdkafka error is part of the message (API clients see it) and deliberately not a
/// `source`, so error chains do not print it twice.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub struct KafkaError {
    /// What was being attempted, for example `producing to events.clickstream`.
    pub what: String,
    /// What the caller should do about it.
    pub class: ErrorClass,
    /// The librdkafka error.
    pub cause: RdError,
}

impl KafkaError {
    /// Wraps a librdkafka error with what was being attempted.
    pub fn new(what: impl Into<String>, cause: RdError) -> Self {
        Self { what: what.into(), class: classify(&cause), cause }
    }

    /// Whether the producer's queue was full (records waiting for Kafka reached
    /// `queue.buffering.max.messages` or `queue.buffering.max.kbytes`).
    pub fn is_queue_full(&self) -> bool {
        matches!(self.cause, RdError::MessageProduction(Code::QueueFull))
    }

    /// What the owner of a transaction does about this error.
    pub fn txn_class(&self) -> TxnClass {
        TxnClass::of(&self.cause)
    }
}

/// What the owner of a Kafka transaction does about an error of it (`STYLE.md`, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnClass {
    /// Try the same call again, after a backoff.
    Retriable,
    /// Abort the transaction, then rewind to the committed offsets.
    Abortable,
    /// The producer is done for (fenced, fatal, timed out, ambiguous, or anything that is not
    /// a transactional error at all): recreate it with the same `transactional.id`, which
    /// fences whatever the old one may still have in flight, and rebuild from the committed
    /// offsets. librdkafka does not implement KIP-890, so a late commit or abort of an
    /// ambiguous transaction could otherwise land on a later one.
    Fatal,
}

impl TxnClass {
    /// The class of a librdkafka error.
    pub fn of(err: &RdError) -> Self {
        match err {
            RdError::Transaction(t) => {
                Self::from_flags(t.is_retriable(), t.txn_requires_abort(), t.is_fatal())
            }
            _ => Self::Fatal,
        }
    }

    /// The class of a transactional error from librdkafka's three flags: an abort when Kafka
    /// asks for one, a retry when the error is retriable and not fatal, else fatal.
    pub fn from_flags(retriable: bool, requires_abort: bool, fatal: bool) -> Self {
        if requires_abort {
            Self::Abortable
        } else if retriable && !fatal {
            Self::Retriable
        } else {
            Self::Fatal
        }
    }
}

/// Decides whether an error means "try later", "your request is wrong" or "bug".
pub fn classify(err: &RdError) -> ErrorClass {
    let code = match err {
        RdError::MessageProduction(c)
        | RdError::MetadataFetch(c)
        | RdError::AdminOp(c)
        | RdError::OffsetFetch(c)
        | RdError::ConsumerCommit(c)
        | RdError::Global(c)
        | RdError::Flush(c) => *c,
        RdError::MessageConsumption(c) => *c,
        RdError::Canceled => return ErrorClass::Unavailable,
        _ => return ErrorClass::Internal,
    };
    match code {
        Code::MessageTimedOut
        | Code::OperationTimedOut
        | Code::RequestTimedOut
        | Code::AllBrokersDown
        | Code::BrokerTransportFailure
        | Code::BrokerNotAvailable
        | Code::QueueFull
        | Code::LeaderNotAvailable
        | Code::NotLeaderForPartition
        | Code::NotEnoughReplicas
        | Code::NotEnoughReplicasAfterAppend
        | Code::NotCoordinator
        | Code::CoordinatorNotAvailable
        | Code::CoordinatorLoadInProgress
        | Code::NetworkException
        | Code::UnknownTopicOrPartition
        | Code::UnknownPartition
        | Code::UnknownTopic
        | Code::Resolve
        | Code::WaitCache
        | Code::KafkaStorageError => ErrorClass::Unavailable,
        Code::MessageSizeTooLarge
        | Code::InvalidMessageSize
        | Code::InvalidTopic
        | Code::TopicAuthorizationFailed
        | Code::InvalidRecord
        | Code::InvalidTimestamp
        | Code::PolicyViolation => ErrorClass::Rejected,
        _ => ErrorClass::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_errors_that_matter() {
        let p = |c| RdError::MessageProduction(c);
        assert_eq!(classify(&p(Code::MessageTimedOut)), ErrorClass::Unavailable);
        assert_eq!(classify(&p(Code::AllBrokersDown)), ErrorClass::Unavailable);
        assert_eq!(classify(&p(Code::QueueFull)), ErrorClass::Unavailable);
        assert_eq!(classify(&p(Code::MessageSizeTooLarge)), ErrorClass::Rejected);
        assert_eq!(classify(&p(Code::InvalidTimestamp)), ErrorClass::Rejected);
        assert_eq!(classify(&p(Code::Fatal)), ErrorClass::Internal);
        assert_eq!(classify(&RdError::Canceled), ErrorClass::Unavailable);
    }

    #[test]
    fn classifies_transaction_errors() {
        // (retriable, requires_abort, fatal)
        let cases = [
            ((true, false, false), TxnClass::Retriable),
            ((false, true, false), TxnClass::Abortable),
            ((true, true, false), TxnClass::Abortable),
            ((false, true, true), TxnClass::Abortable),
            ((true, false, true), TxnClass::Fatal),
            ((false, false, true), TxnClass::Fatal),
            ((false, false, false), TxnClass::Fatal),
        ];
        for ((r, a, f), want) in cases {
            assert_eq!(TxnClass::from_flags(r, a, f), want, "retriable={r} abort={a} fatal={f}");
        }
    }

    #[test]
    fn errors_outside_a_transaction_are_fatal_to_it() {
        let p = |c| RdError::MessageProduction(c);
        assert_eq!(TxnClass::of(&p(Code::MessageTimedOut)), TxnClass::Fatal);
        assert_eq!(TxnClass::of(&p(Code::InvalidProducerEpoch)), TxnClass::Fatal);
        assert_eq!(TxnClass::of(&RdError::Canceled), TxnClass::Fatal);
        let e = KafkaError::new("committing", p(Code::ProducerFenced));
        assert_eq!(e.txn_class(), TxnClass::Fatal);
    }
}
