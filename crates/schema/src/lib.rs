//! Schemas for Tributary: Confluent's wire framing, schema parsing and compatibility, the Avro
//! and Protobuf codecs, decoding framed records, and a client for a Confluent-compatible schema
//! registry. No HTTP server and no Kafka client here: the registry service itself is the crate
//! `tributary-registry`.
//!
//! Start with [`framing`] (the bytes on Kafka), then [`compat`] (what makes two schemas
//! compatible), then [`codec`] and [`decode`] (records to and from JSON) and [`client`] (asking a
//! registry for ids and schemas).

pub mod avro;
pub mod avro_bounds;
pub mod client;
pub mod codec;
pub mod compat;
pub mod decode;
pub mod framing;
pub mod json_text;
pub mod protobuf;

pub use compat::{InvalidSchema, Level, ParsedSchema, SchemaType};
pub use framing::{frame, unframe, FramingError};
