//! The event model from the spec (`Event`), its validation, and its canonical JSON form.
//!
//! Producers send events as JSON objects. [`Event::from_json`] checks every field and names
//! the first one that is wrong, so the gateway can answer 422 with that field. A valid event
//! serializes to one canonical JSON form (fixed field order, UTC timestamp with milliseconds),
//! which is what lands on Kafka.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

mod direct;

/// Longest accepted `event_id`, `event_type`, `user_id` or `device_id`, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The first problem found in an event, naming the field (dotted path) it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the offending field, for example `timestamp` or `payload`.
    pub field: String,
    /// What is wrong with it, in words.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), message: message.into() }
    }
}

/// A validated event, as the spec's `Event` model describes it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    /// Producer-chosen unique id; also the idempotency key for retries.
    pub event_id: String,
    /// When the event happened: RFC 3339 (any offset) or integer epoch milliseconds in; UTC
    /// RFC 3339 with millisecond precision out.
    #[serde(serialize_with = "serialize_millis")]
    #[schema(value_type = String, format = DateTime, example = "2026-11-30T12:00:00.000Z")]
    pub timestamp: DateTime<Utc>,
    /// Kind of event, for example `page_view` or `temperature`.
    pub event_type: String,
    /// User the event belongs to; the key of clickstream and transaction events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Device the event comes from; the key of IoT events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Event body: any JSON object.
    #[schema(value_type = Object)]
    pub payload: Map<String, Value>,
    /// Optional producer metadata: any JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// The fields of an event; [`Event::from_json`] refuses any other.
pub const FIELDS: &[&str] =
    &["event_id", "timestamp", "event_type", "user_id", "device_id", "payload", "metadata"];

fn serialize_millis<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Millis, true))
}

impl Event {
    /// Validates a decoded JSON value as an event, taking ownership of its parts.
    pub fn from_json(value: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = value else {
            return Err(FieldError::new(
                "$",
                format!("expected a JSON object, found {}", kind(&value)),
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(FieldError::new(
                unknown,
                format!("unknown field; allowed fields are {}", FIELDS.join(", ")),
            ));
        }
        let event_id = required_id(&mut obj, "event_id")?;
        let timestamp = match obj.remove("timestamp") {
            None | Some(Value::Null) => return Err(FieldError::new("timestamp", "is required")),
            Some(v) => parse_timestamp(&v)?,
        };
        let event_type = required_id(&mut obj, "event_type")?;
        let user_id = optional_id(&mut obj, "user_id")?;
        let device_id = optional_id(&mut obj, "device_id")?;
        let payload = match obj.remove("payload") {
            None | Some(Value::Null) => return Err(FieldError::new("payload", "is required")),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(FieldError::new(
                    "payload",
                    format!("expected a JSON object, found {}", kind(&other)),
                ))
            }
        };
        let metadata = match obj.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(FieldError::new(
                    "metadata",
                    format!("expected a JSON object or null, found {}", kind(&other)),
                ))
            }
        };
        Ok(Self { event_id, timestamp, event_type, user_id, device_id, payload, metadata })
    }

    /// Reads an event straight from JSON text, without building a tree of its top level: the
    /// gateway's hot path. `None` for anything but a well-formed, valid event without repeated
    /// or escaped field names; [`Event::from_json`] then gives the answer (and its error), so
    /// the two always agree on what is accepted.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let event = serde::Deserializer::deserialize_map(&mut de, direct::EventVisitor).ok()?;
        de.end().ok()?;
        Some(event)
    }

    /// The value of the key field `field`: `user_id` and `device_id` at the top level first,
    /// then a string or integer of that name inside `payload`.
    pub fn key_value(&self, field: &str) -> Option<String> {
        let top = match field {
            "user_id" => self.user_id.as_deref(),
            "device_id" => self.device_id.as_deref(),
            "event_id" => Some(self.event_id.as_str()),
            "event_type" => Some(self.event_type.as_str()),
            _ => None,
        };
        if let Some(v) = top {
            return Some(v.to_owned());
        }
        match self.payload.get(field)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }

    /// The event's fields as JSON values, taking ownership of them: what a registry-encoded
    /// topic is filled from. The same fields as its canonical JSON, except the timestamp, which
    /// is epoch milliseconds (the event schemas keep time that way); absent ids are left out.
    pub fn into_fields(self) -> Map<String, Value> {
        FIELDS
            .iter()
            .zip(self.into_values())
            .filter_map(|(name, v)| Some(((*name).to_owned(), v?)))
            .collect()
    }

    /// [`Event::into_fields`] without the map: the value of each of [`FIELDS`], in that order,
    /// `None` where the event has none.
    pub fn into_values(self) -> [Option<Value>; 7] {
        [
            Some(Value::String(self.event_id)),
            Some(Value::from(self.timestamp.timestamp_millis())),
            Some(Value::String(self.event_type)),
            self.user_id.map(Value::String),
            self.device_id.map(Value::String),
            Some(Value::Object(self.payload)),
            self.metadata.map(Value::Object),
        ]
    }

    /// The event's timestamp as epoch milliseconds.
    pub fn timestamp_millis(&self) -> i64 {
        self.timestamp.timestamp_millis()
    }

    /// The canonical JSON bytes written to Kafka.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings, maps of JSON values and a timestamp cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_id(field: &str, s: String) -> Result<String, FieldError> {
    if s.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(FieldError::new(
            field,
            format!("is {} bytes; at most {MAX_ID_BYTES} allowed", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(s)
}

fn required_id(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(Value::String(s)) => check_id(field, s),
        Some(other) => {
            Err(FieldError::new(field, format!("expected a string, found {}", kind(&other))))
        }
    }
}

fn optional_id(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => check_id(field, s).map(Some),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected a string or null, found {}", kind(&other)),
        )),
    }
}

/// Earliest and latest accepted timestamps: years 1970 through 9999.
const MIN_MILLIS: i64 = 0;
const MAX_MILLIS: i64 = 253_402_300_799_999;

fn parse_timestamp(v: &Value) -> Result<DateTime<Utc>, FieldError> {
    match v {
        Value::String(s) => timestamp_from_text(s),
        Value::Number(n) => {
            let ms = n.as_i64().ok_or_else(|| {
                FieldError::new("timestamp", "expected integer epoch milliseconds")
            })?;
            timestamp_from_millis(ms)
        }
        other => Err(FieldError::new(
            "timestamp",
            format!("expected an RFC 3339 string or epoch milliseconds, found {}", kind(other)),
        )),
    }
}

fn timestamp_out_of_range() -> FieldError {
    FieldError::new("timestamp", "must be between 1970-01-01 and 9999-12-31")
}

fn timestamp_from_text(s: &str) -> Result<DateTime<Utc>, FieldError> {
    let ts = DateTime::parse_from_rfc3339(s).map_err(|e| {
        FieldError::new("timestamp", format!("expected an RFC 3339 date-time ({e})"))
    })?;
    let ts = ts.with_timezone(&Utc);
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&ts.timestamp_millis()) {
        return Err(timestamp_out_of_range());
    }
    Ok(ts)
}

fn timestamp_from_millis(ms: i64) -> Result<DateTime<Utc>, FieldError> {
    if !(MIN_MILLIS..=MAX_MILLIS).contains(&ms) {
        return Err(timestamp_out_of_range());
    }
    Utc.timestamp_millis_opt(ms).single().ok_or_else(timestamp_out_of_range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "event_id": "e-1",
            "timestamp": "2026-11-30T13:00:00.123+01:00",
            "event_type": "page_view",
            "user_id": "u-1",
            "payload": {"url": "/", "n": 3},
            "metadata": {"source": "web"}
        })
    }

    #[test]
    fn canonical_json_is_stable() {
        let event = Event::from_json(valid()).expect("valid event");
        assert_eq!(
            String::from_utf8(event.to_json_bytes()).expect("utf-8"),
            r#"{"event_id":"e-1","timestamp":"2026-11-30T12:00:00.123Z","event_type":"page_view","user_id":"u-1","payload":{"n":3,"url":"/"},"metadata":{"source":"web"}}"#
        );
    }

    #[test]
    fn epoch_millis_are_accepted() {
        let mut v = valid();
        v["timestamp"] = json!(1_764_504_000_000i64);
        let event = Event::from_json(v).expect("valid event");
        assert_eq!(event.timestamp_millis(), 1_764_504_000_000);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("event_id", Value::Null, "is required"),
            ("event_id", json!(""), "must not be empty"),
            ("event_id", json!(7), "expected a string"),
            ("event_id", json!("x".repeat(MAX_ID_BYTES + 1)), "at most"),
            ("event_id", json!("a\u{0}b"), "control"),
            ("timestamp", Value::Null, "is required"),
            ("timestamp", json!("yesterday"), "RFC 3339"),
            ("timestamp", json!(-1), "between"),
            ("timestamp", json!(1.5), "integer epoch"),
            ("timestamp", json!(true), "found a boolean"),
            ("event_type", Value::Null, "is required"),
            ("event_type", json!([]), "found an array"),
            ("user_id", json!(5), "string or null"),
            ("payload", Value::Null, "is required"),
            ("payload", json!("text"), "found a string"),
            ("metadata", json!([1]), "object or null"),
        ];
        for (field, bad, needle) in cases {
            let mut v = valid();
            if bad.is_null() && !matches!(field, "metadata") {
                v.as_object_mut().expect("object").remove(field);
            } else {
                v[field] = bad.clone();
            }
            let err = Event::from_json(v).expect_err("invalid event");
            assert_eq!(err.field, field, "{field} = {bad}");
            assert!(err.message.contains(needle), "{field} = {bad}: {}", err.message);
        }
    }

    #[test]
    fn unknown_fields_and_non_objects_are_rejected() {
        let mut v = valid();
        v["extra"] = json!(1);
        assert_eq!(Event::from_json(v).expect_err("unknown field").field, "extra");
        assert_eq!(Event::from_json(json!([1])).expect_err("array").field, "$");
    }

    #[test]
    fn null_metadata_and_ids_are_absent() {
        let mut v = valid();
        v["metadata"] = Value::Null;
        v["user_id"] = Value::Null;
        let event = Event::from_json(v).expect("valid event");
        assert_eq!(event.metadata, None);
        assert_eq!(event.user_id, None);
        assert!(!String::from_utf8_lossy(&event.to_json_bytes()).contains("metadata"));
    }

    #[test]
    fn keys_come_from_the_top_level_then_the_payload() {
        let event = Event::from_json(valid()).expect("valid event");
        assert_eq!(event.key_value("user_id").as_deref(), Some("u-1"));
        assert_eq!(event.key_value("device_id"), None);

        let mut v = valid();
        v.as_object_mut().expect("object").remove("user_id");
        v["payload"] = json!({"user_id": "u-9", "device_id": 42, "empty": ""});
        let event = Event::from_json(v).expect("valid event");
        assert_eq!(event.key_value("user_id").as_deref(), Some("u-9"));
        assert_eq!(event.key_value("device_id").as_deref(), Some("42"));
        assert_eq!(event.key_value("empty"), None);
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_round_trips(id in "[a-zA-Z0-9-]{1,40}", ms in 0i64..4_102_444_800_000, n in proptest::num::i64::ANY) {
            let event = Event::from_json(json!({
                "event_id": id, "timestamp": ms, "event_type": "t", "payload": {"n": n}
            })).expect("valid event");
            let again = Event::from_json(serde_json::from_slice(&event.to_json_bytes()).expect("json"))
                .expect("canonical form is valid");
            let bytes = event.to_json_bytes();
            let direct = Event::from_slice(&bytes);
            proptest::prop_assert_eq!(direct.as_ref(), Some(&event));
            proptest::prop_assert_eq!(again, event);
        }
    }

    /// `from_slice` takes an event exactly when `from_json` does, with the same result, and
    /// takes every ordinary valid event (or it would not be a fast path).
    #[test]
    fn the_direct_reading_agrees_with_the_tree() {
        let slow = |text: &str| {
            serde_json::from_str::<Value>(text).ok().and_then(|v| Event::from_json(v).ok())
        };
        let valid_texts = [
            valid().to_string(),
            r#" { "payload" : {} , "event_type":"t","timestamp":0,"event_id":"e" } "#.to_owned(),
            r#"{"event_id":"e","timestamp":"2026-11-30T12:00:00Z","event_type":"t","user_id":null,
                "device_id":"d","payload":{"a":[1,{"b":null}],"s":"\u00e9\n"},"metadata":null}"#
                .to_owned(),
            r#"{"event_id":"é\"x","timestamp":253402300799999,"event_type":"t","payload":{}}"#
                .to_owned(),
        ];
        for text in &valid_texts {
            let direct = Event::from_slice(text.as_bytes());
            assert!(direct.is_some(), "not read directly: {text}");
            assert_eq!(direct, slow(text), "{text}");
        }
        let base = r#""event_id":"e","timestamp":5,"event_type":"t","payload":{}"#;
        let doubtful = [
            format!("{{{base},\"extra\":1}}"),
            format!("{{{base},\"event_id\":\"again\"}}"),
            format!("{{{base},\"user\\u005fid\":\"escaped name\"}}"),
            format!("{{{base}}} trailing"),
            format!("{{{base}"),
            format!("[{{{base}}}]"),
            r#"{"event_id":"e","timestamp":1.5,"event_type":"t","payload":{}}"#.to_owned(),
            r#"{"event_id":"e","timestamp":18446744073709551615,"event_type":"t","payload":{}}"#
                .to_owned(),
            r#"{"event_id":"e","timestamp":-1,"event_type":"t","payload":{}}"#.to_owned(),
            r#"{"event_id":" ","timestamp":5,"event_type":"t","payload":{}}"#.to_owned(),
            r#"{"event_id":"e","timestamp":5,"event_type":"t","payload":null}"#.to_owned(),
            r#"{"event_id":"e","timestamp":5,"event_type":"t","payload":[]}"#.to_owned(),
            r#"{"event_id":"e","timestamp":5,"event_type":"t","payload":{},"metadata":1}"#
                .to_owned(),
            r#"{"event_id":"e","timestamp":5,"payload":{}}"#.to_owned(),
            r#"{"event_id":7,"timestamp":5,"event_type":"t","payload":{}}"#.to_owned(),
        ];
        // serde_json reads an object whose one key is its raw-value token as that raw value,
        // in a `Value`: both readings must do the same with it.
        let token = r#"{"$serde_json::private::RawValue":"#;
        for inner in [r#""7""#, r#""{\"a\":1}""#] {
            for field in ["payload", "metadata"] {
                let text = format!(
                    r#"{{"event_id":"e","timestamp":5,"event_type":"t","payload":{{}},"{field}":{token}{inner}}}}}"#
                );
                let text = text.replacen(r#""payload":{},"payload""#, r#""payload""#, 1);
                assert_eq!(
                    Event::from_slice(text.as_bytes()).or_else(|| slow(&text)),
                    slow(&text),
                    "{text}"
                );
            }
        }
        for text in &doubtful {
            let direct = Event::from_slice(text.as_bytes());
            assert!(direct.is_none() || direct == slow(text), "{text}");
        }
        // The repeated field is accepted by the tree (the last one wins) and left to it here.
        let repeated = format!("{{{base},\"event_id\":\"again\"}}");
        assert_eq!(Event::from_slice(repeated.as_bytes()), None);
        assert_eq!(slow(&repeated).map(|e| e.event_id).as_deref(), Some("again"));
    }

    #[test]
    fn into_fields_is_the_canonical_json_with_time_in_milliseconds() {
        for v in [
            json!({"event_id": "e", "timestamp": "2026-11-30T12:00:00.123+01:00", "event_type": "t",
                   "user_id": "u", "device_id": "d", "payload": {"a": [1, {"b": null}]},
                   "metadata": {"m": 1}}),
            json!({"event_id": "e", "timestamp": 5, "event_type": "t", "payload": {}}),
        ] {
            let event = Event::from_json(v).expect("valid");
            let Value::Object(mut expected) = serde_json::to_value(&event).expect("serializes")
            else {
                panic!("not an object")
            };
            expected.insert("timestamp".into(), Value::from(event.timestamp_millis()));
            assert_eq!(event.into_fields(), expected);
        }
    }
}
