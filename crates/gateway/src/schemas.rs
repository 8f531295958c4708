//! The schemas of `avro` topics. Each topic's values use the latest version of its subject
//! `<topic>-value` in the schema registry; when the subject is empty the gateway registers
//! `schemas/event.avsc` there. Schemas are looked up on first use and again every
//! `schema_refresh_secs`, never per event; while the registry is unreachable the last known
//! schema keeps being used.

use crate::config::GatewayConfig;
use crate::error::ApiError;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tributary_core::{Catalog, TopicSpec, ValueFormat};
use tributary_schema::client::{ClientError, RegistryClient};
use tributary_schema::{ParsedSchema, SchemaType};

/// The event schemas the gateway registers for a topic whose subject has none.
pub const EVENT_AVSC: &str = include_str!("../../../schemas/event.avsc");
pub const EVENT_PROTO: &str = include_str!("../../../schemas/event.proto");

#[derive(Clone)]
struct Resolved {
    id: u32,
    schema: Arc<ParsedSchema>,
    at: Instant,
}

/// The schema a topic's values are written with.
#[derive(Clone)]
pub struct WriteSchema {
    pub id: u32,
    pub schema: Arc<ParsedSchema>,
}

/// Schemas of the catalog's `avro` topics, and decoding of framed values for the read API.
pub struct TopicSchemas {
    client: RegistryClient,
    entries: HashMap<String, RwLock<Option<Resolved>>>,
    refresh: Duration,
    retry_after_secs: u64,
}

impl TopicSchemas {
    pub fn new(config: &GatewayConfig, catalog: &Catalog) -> Result<Self, ClientError> {
        let client = RegistryClient::from_config(&config.registry)?;
        let entries = catalog
            .iter()
            .filter(|t| t.value_format != ValueFormat::Json && t.writable())
            .map(|t| (t.name.clone(), RwLock::new(None)))
            .collect();
        Ok(Self {
            client,
            entries,
            refresh: Duration::from_secs(config.schema_refresh_secs),
            retry_after_secs: config.retry_after_secs,
        })
    }

    /// The id and schema to write `spec`'s values with; `None` for JSON topics.
    pub async fn for_topic(&self, spec: &TopicSpec) -> Result<Option<WriteSchema>, ApiError> {
        let Some(entry) = self.entries.get(&spec.name) else { return Ok(None) };
        let cached = entry.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(r) = &cached {
            if r.at.elapsed() < self.refresh {
                return Ok(Some(WriteSchema { id: r.id, schema: Arc::clone(&r.schema) }));
            }
        }
        match self.resolve(spec).await {
            Ok((id, schema)) => {
                let resolved = Resolved { id, schema: Arc::clone(&schema), at: Instant::now() };
                *entry.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(resolved);
                Ok(Some(WriteSchema { id, schema }))
            }
            Err(e) => match cached {
                Some(r) => {
                    tracing::warn!(topic = %spec.name, error = %e, "refreshing the topic's schema; using the last known one");
                    // Try again after another refresh interval, not on every write.
                    let kept = Resolved { at: Instant::now(), ..r.clone() };
                    *entry.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(kept);
                    Ok(Some(WriteSchema { id: r.id, schema: r.schema }))
                }
                None => {
                    // The client's answer is 503 with the same text; the log keeps it too.
                    tracing::warn!(topic = %spec.name, error = %e, "loading the topic's schema; answering 503");
                    Err(ApiError::RegistryUnavailable {
                        message: format!(
                            "the schema of topic {} could not be loaded: {e}",
                            spec.name
                        ),
                        retry_after_secs: self.retry_after_secs,
                    })
                }
            },
        }
    }

    async fn resolve(&self, spec: &TopicSpec) -> Result<(u32, Arc<ParsedSchema>), ClientError> {
        let subject = spec.value_subject();
        if let Some(latest) = self.client.latest(&subject).await? {
            return Ok(latest);
        }
        let (schema_type, text) = match spec.value_format {
            ValueFormat::Protobuf => (SchemaType::Protobuf, EVENT_PROTO),
            _ => (SchemaType::Avro, EVENT_AVSC),
        };
        let id = self.client.register(&subject, schema_type, text).await?;
        let schema = self.client.schema(id).await?.ok_or_else(|| {
            ClientError::Invalid(format!("schema {id} was registered but cannot be read back"))
        })?;
        Ok((id, schema))
    }

    /// Decodes a registry-framed Avro or Protobuf value to JSON: the schema id and the value, or `None`
    /// when the bytes are not such a value or its schema is unknown.
    pub async fn decode(&self, bytes: &[u8]) -> Option<(u32, Value)> {
        let (id, body) = tributary_schema::unframe(bytes).ok()?;
        let schema = match self.client.cached(id) {
            Some(s) => s,
            None => self.client.schema(id).await.ok()??,
        };
        let value = match schema.proto() {
            Some(proto) => proto.decode_to_json(body).ok()?,
            None => tributary_schema::codec::decode_to_json(schema.avro()?, body).ok()?,
        };
        Some((id, value))
    }
}
