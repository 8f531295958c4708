//! Kafka for Tributary: client configuration with the spec's producer and consumer settings,
//! an acknowledged-write producer, the one transactional producer, dead-letter records, topic
//! administration from the catalog, consumer-group members, and read helpers.
//!
//! Every Kafka client in Tributary is built from [`KafkaConfig`], so the settings that other
//! tools rely on (murmur2 partitioning, `acks=all`, idempotence, `read_committed`) are decided
//! in one place: [`config`]. Errors from librdkafka are classified once, in [`error`]; every
//! transaction goes through [`txn::TransactionalProducer`]; every dead letter is built by
//! [`dlq::DeadLetterRecord`] and read back by [`dlq::DeadLetter`], with the header names of
//! [`dlq::header`]. Start reading at [`group`] for the processor's and the sink's loops.

pub mod admin;
pub mod cause;
pub mod config;
pub mod dlq;
pub mod error;
pub mod group;
pub mod isr;
pub mod producer;
pub mod reader;
pub mod txn;

pub use admin::{apply_topics, describe_topics, ApplyOutcome, TopicState};
pub use cause::{Causes, Refusal, Watched};
pub use config::{KafkaConfig, ProducerTuning, QueueBound};
pub use error::{classify, ErrorClass, KafkaError, TxnClass};
pub use isr::{MinIsrReader, ShortPartition};
pub use producer::{ClusterInfo, Delivered, EventProducer, OutgoingRecord, PendingDelivery};
pub use txn::{TransactionalProducer, TxnSettings};
