//! Tributary's core: the event model and its validation, the topic catalog, and the
//! Kafka-compatible key partitioner, and the secret type for passwords and keys. Nothing here does I/O, so every rule can be tested
//! exhaustively in unit tests.
//!
//! Start with [`event::Event`] (what a producer sends and what lands on Kafka), then
//! [`catalog::Catalog`] (which topics exist, how they are keyed, who may write them) and
//! [`partition::murmur2_partition`] (where a key lands, exactly as the Java client decides).

pub mod catalog;
pub mod event;
pub mod json;
pub mod partition;
pub mod secret;

pub use catalog::{aggregate_topic, Catalog, CatalogError, TopicRole, TopicSpec, ValueFormat};
pub use event::{Event, FieldError, FIELDS as EVENT_FIELDS};
pub use partition::{murmur2, murmur2_partition};
pub use secret::{is_secret_name, Secret};
