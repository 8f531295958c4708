//! How the read endpoints show a record: [`RecordView`], registry-framed values decoded.

use crate::AppState;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary_kafka::reader::ConsumedRecord;

/// A record as the read endpoints return it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct RecordView {
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp (the gateway sets it to the ingest time), RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    /// The record value: JSON as written, or a registry-framed Avro/Protobuf value decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub event: Option<Value>,
    /// Registry id of the schema the value was written with, for registry-framed values.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub schema_id: Option<u32>,
    /// The record value, base64, when it is neither JSON nor a registry-framed Avro value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_base64: Option<String>,
    /// Record headers, values as UTF-8 (lossy).
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, Value>,
}

impl RecordView {
    /// A view of `r`; `decoded` is its value decoded from registry-framed Avro, if it was.
    pub fn from_record(r: ConsumedRecord, decoded: Option<(u32, Value)>) -> Self {
        use base64::Engine as _;
        let (event, value_base64, schema_id) = match (r.value, decoded) {
            (_, Some((id, v))) => (Some(v), None, Some(id)),
            (None, None) => (None, None, None),
            (Some(bytes), None) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => (Some(v), None, None),
                Err(_) => {
                    (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes)), None)
                }
            },
        };
        Self {
            partition: r.partition,
            offset: r.offset,
            timestamp: r
                .timestamp_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            event,
            schema_id,
            value_base64,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k, Value::String(String::from_utf8_lossy(&v).into_owned())))
                .collect(),
        }
    }
}

impl AppState {
    /// A record as the read endpoints show it, Avro values decoded through the registry.
    pub async fn view(&self, r: ConsumedRecord) -> RecordView {
        let decoded = match r.value.as_deref() {
            // JSON never starts with a zero byte; Confluent framing always does.
            Some(v) if v.first() == Some(&0) => self.inner.schemas.decode(v).await,
            _ => None,
        };
        RecordView::from_record(r, decoded)
    }
}
