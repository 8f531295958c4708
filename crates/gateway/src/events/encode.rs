//! Checking an event and encoding it for its topic: the step before any write.

use crate::dedupe::{fingerprint, fingerprint_event, Dedupe, Key};
use crate::error::ApiError;
use crate::schemas::WriteSchema;
use serde_json::Value;
use tributary_core::event::FIELDS;
use tributary_core::{Event, TopicSpec, ValueFormat};
use tributary_schema::codec::Fields;

/// The `content_type` header of registry-framed Avro values.
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.confluent.avro";
/// The `content_type` header of registry-framed Protobuf values.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.confluent.protobuf";

/// An event that passed validation, before it is encoded for its topic.
pub(super) struct Checked {
    pub(super) event: Event,
    pub(super) key: Option<String>,
    /// The canonical JSON, for topics whose values are that JSON.
    pub(super) canonical: Option<Vec<u8>>,
    pub(super) fingerprint: u64,
    /// The event's key in the dedupe window.
    pub(super) dedupe_key: Key,
}

/// Reads one event from JSON text: straight into the event when it is a plain valid one, else
/// through a JSON tree, which gives the 400 (malformed) or 422 (the field that is wrong).
pub(super) fn read_event(bytes: &[u8]) -> Result<Event, ApiError> {
    if let Some(event) = Event::from_slice(bytes) {
        return Ok(event);
    }
    Event::from_json(crate::body::parse_json(bytes)?).map_err(ApiError::Validation)
}

/// Validates an event and finds its key. Needs nothing but the event: bad input is a 4xx even
/// while the schema registry is down.
pub(super) fn check_event(spec: &TopicSpec, event: Event) -> Result<Checked, ApiError> {
    let key = match &spec.key_field {
        None => None,
        Some(field) => match event.key_value(field) {
            Some(k) => Some(k),
            None if spec.require_key => {
                return Err(ApiError::MissingKey { topic: spec.name.clone(), field: field.clone() })
            }
            None => None,
        },
    };
    // The dedupe fingerprint is over the event's canonical JSON, not the encoded value: a retry
    // after the topic moved to a new schema version is still the same event. Only a JSON topic
    // keeps those bytes; for the others they are hashed as they are serialized.
    let (canonical, fingerprint) = if spec.value_format == ValueFormat::Json {
        let bytes = event.to_json_bytes();
        let f = fingerprint(&bytes);
        (Some(bytes), f)
    } else {
        (None, fingerprint_event(&event))
    };
    let dedupe_key = Dedupe::key(&spec.name, &event.event_id);
    Ok(Checked { event, key, canonical, fingerprint, dedupe_key })
}

/// An event checked and encoded, ready to write.
pub(super) struct Prepared {
    pub(super) event_id: String,
    pub(super) event_type: String,
    pub(super) key: Option<String>,
    pub(super) value: Vec<u8>,
    /// The `content_type` header: how `value` is encoded.
    pub(super) content_type: &'static [u8],
    pub(super) fingerprint: u64,
    pub(super) dedupe_key: Key,
}

/// Encodes a checked event for its topic: framed with `schema`, or its canonical JSON.
pub(super) fn encode(c: Checked, schema: Option<&WriteSchema>) -> Result<Prepared, ApiError> {
    let Checked { event, key, canonical, fingerprint, dedupe_key } = c;
    let (value, content_type, event_id, event_type) = match schema {
        Some(schema) => {
            let (id, kind) = (event.event_id.clone(), event.event_type.clone());
            let (value, content_type) = encode_framed(event, schema)?;
            (value, content_type, id, kind)
        }
        None => {
            let value = canonical.unwrap_or_else(|| event.to_json_bytes());
            (value, &b"application/json"[..], event.event_id, event.event_type)
        }
    };
    Ok(Prepared { fingerprint, dedupe_key, event_id, event_type, key, value, content_type })
}

/// An event's fields for the Avro encoder, found by name among [`FIELDS`] without a map.
struct EventFields([Option<Value>; 7]);

impl Fields for EventFields {
    fn field(&self, name: &str) -> Option<&Value> {
        let i = FIELDS.iter().position(|f| *f == name)?;
        self.0[i].as_ref()
    }
}

/// Encodes an event with its topic's registered schema (Avro or Protobuf): the value is
/// Confluent-framed (magic byte, schema id, for Protobuf the message indexes, then the body).
/// A field the schema requires and the event lacks, or one whose type does not fit, is a 422
/// naming that field.
fn encode_framed(event: Event, schema: &WriteSchema) -> Result<(Vec<u8>, &'static [u8]), ApiError> {
    let invalid = |e: tributary_schema::codec::EncodeError| {
        ApiError::Validation(tributary_core::FieldError { field: e.field, message: e.message })
    };
    if let Some(proto) = schema.schema.proto() {
        let body = proto.encode(&event.into_fields()).map_err(invalid)?;
        Ok((tributary_schema::frame(schema.id, &body), PROTOBUF_CONTENT_TYPE.as_bytes()))
    } else if let Some(avro) = schema.schema.avro() {
        // The datum is written straight after the frame header: no copy of the body.
        let mut value = tributary_schema::frame(schema.id, &[]);
        value.reserve(256);
        let fields = EventFields(event.into_values());
        tributary_schema::codec::encode_record_into(avro, &fields, &mut value).map_err(invalid)?;
        Ok((value, AVRO_CONTENT_TYPE.as_bytes()))
    } else {
        Err(ApiError::Internal(format!("schema {} is neither Avro nor Protobuf", schema.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event's values found by name encode to the same bytes as its fields in a map.
    #[test]
    fn event_fields_encode_as_the_map_does() {
        let text = include_str!("../../../../schemas/event.avsc");
        let schema = apache_avro::Schema::parse_str(text).expect("event schema");
        for json in [
            r#"{"event_id":"e","timestamp":5,"event_type":"t","user_id":"u","device_id":"d",
                "payload":{"a":[1,{"b":null}]},"metadata":{"m":"x"}}"#,
            r#"{"event_id":"e","timestamp":"2026-12-06T10:00:00Z","event_type":"t","payload":{}}"#,
        ] {
            let event = Event::from_slice(json.as_bytes()).expect("valid event");
            let by_map =
                tributary_schema::codec::encode_record(&schema, &event.clone().into_fields())
                    .expect("encodes");
            let mut direct = Vec::new();
            let fields = EventFields(event.into_values());
            tributary_schema::codec::encode_record_into(&schema, &fields, &mut direct)
                .expect("encodes");
            assert_eq!(direct, by_map, "{json}");
        }
    }
}
