//! Kafka errors, classified once for the whole code base.

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
}
