//! Kafka for Tributary: client configuration with the spec's producer and consumer settings,
//! an acknowledged-write producer, topic administration from the catalog, and read helpers.
//!
//! Every Kafka client in Tributary is built from [`KafkaConfig`], so the settings that other
//! tools rely on (murmur2 partitioning, `acks=all`, idempotence, `read_committed`) are decided
//! in one place: [`config`]. Errors from librdkafka are classified once, in [`error`].

pub mod admin;
pub mod config;
pub mod dlq;
pub mod error;
pub mod group;
pub mod producer;
pub mod reader;

pub use admin::{apply_topics, describe_topics, ApplyOutcome, TopicState};
pub use config::{KafkaConfig, ProducerTuning};
pub use error::{classify, ErrorClass, KafkaError};
pub use producer::{Delivered, EventProducer, OutgoingRecord, PendingDelivery};
