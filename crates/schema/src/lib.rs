//! Schemas for Tributary: Confluent's wire framing, schema parsing and compatibility, and a
//! Confluent-compatible schema registry whose only storage is the compacted Kafka topic
//! `_schemas`.
//!
//! Start with [`framing`] (the bytes on Kafka), then [`compat`] (what makes two schemas
//! compatible), then [`registry`] (the REST service and its Kafka-backed state).

pub mod avro;
pub mod client;
pub mod codec;
pub mod compat;
pub mod decode;
pub mod framing;
pub mod protobuf;

pub use compat::{InvalidSchema, Level, ParsedSchema, SchemaType};
pub use framing::{frame, unframe, FramingError};
pub mod registry;
