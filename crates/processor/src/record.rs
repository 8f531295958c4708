//! The filter: what a source record must be to count in a window, and the dead-letter reason
//! when it is not. Decoding (registry-framed Avro or Protobuf, or plain JSON) comes first.

use serde_json::Value;
use tributary_core::{murmur2_partition, Event};
pub use tributary_schema::decode::{DecodeError, Decoder};

/// Why a record went to the dead-letter (or late) topic: the `dlq.reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The bytes are not a registry-framed value of a known schema, nor JSON.
    Undecodable,
    /// Decoded, but not an event (a required field is missing or has the wrong type).
    InvalidEvent,
    /// The event lacks the topic's key field.
    MissingKey,
    /// The key belongs on another partition (the producer did not partition with murmur2).
    WrongPartition,
    /// The event time is too far from the record's Kafka timestamp (a skewed clock).
    TimestampOutOfBounds,
    /// The event lacks the number the topic aggregates.
    MissingMeasure,
    /// The record's window had closed when it arrived.
    Late,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Undecodable,
        Reason::InvalidEvent,
        Reason::MissingKey,
        Reason::WrongPartition,
        Reason::TimestampOutOfBounds,
        Reason::MissingMeasure,
        Reason::Late,
    ];

    /// The machine code in the `dlq.reason` header and the metrics' `reason` label.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::InvalidEvent => "invalid_event",
            Reason::MissingKey => "missing_key",
            Reason::WrongPartition => "wrong_partition",
            Reason::TimestampOutOfBounds => "timestamp_out_of_bounds",
            Reason::MissingMeasure => "missing_measure",
            Reason::Late => "late",
        }
    }
}

/// A record the filter turned away, with a message for people (`dlq.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reason,
    pub message: String,
}

impl Rejected {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// What the windows need of a record that passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub key: String,
    /// The event's id: the processor counts a key's event once per pane.
    pub event_id: String,
    pub event_ms: i64,
    pub measure: Option<f64>,
    pub category: Option<String>,
}

/// The checks of one source topic.
#[derive(Debug, Clone)]
pub struct Filter {
    pub key_field: String,
    pub measure: Option<String>,
    pub count_by: Option<String>,
    /// The topic's partition count, to check that a key is on its murmur2 partition.
    pub partitions: i32,
    pub max_future_ms: i64,
    pub max_past_ms: i64,
}

impl Filter {
    /// Checks a decoded value read from `partition` with Kafka timestamp `record_ms`.
    pub fn check(
        &self,
        mut value: Value,
        partition: i32,
        record_ms: Option<i64>,
    ) -> Result<Accepted, Rejected> {
        // A newer version of the topic's schema may add fields: they do not make the record
        // invalid here, they are just not used.
        if let Value::Object(fields) = &mut value {
            fields.retain(|k, _| tributary_core::EVENT_FIELDS.contains(&k.as_str()));
        }
        let event = Event::from_json(value).map_err(|e| {
            Rejected::new(
                Reason::InvalidEvent,
                format!("not a valid event: {}: {}", e.field, e.message),
            )
        })?;
        let key = event.key_value(&self.key_field).ok_or_else(|| {
            Rejected::new(Reason::MissingKey, format!("the event has no {}", self.key_field))
        })?;
        let home = murmur2_partition(key.as_bytes(), self.partitions).unwrap_or(partition);
        if home != partition {
            return Err(Rejected::new(
                Reason::WrongPartition,
                format!(
                    "key {key:?} belongs on partition {home} (murmur2, as the Java client and the gateway place it) but was read from partition {partition}"
                ),
            ));
        }
        let event_ms = event.timestamp_millis();
        if let Some(at) = record_ms {
            if event_ms - at > self.max_future_ms {
                return Err(Rejected::new(
                    Reason::TimestampOutOfBounds,
                    format!(
                        "event time is {} ms ahead of the record's timestamp (at most {} allowed)",
                        event_ms - at,
                        self.max_future_ms
                    ),
                ));
            }
            if at - event_ms > self.max_past_ms {
                return Err(Rejected::new(
                    Reason::TimestampOutOfBounds,
                    format!(
                        "event time is {} ms behind the record's timestamp (at most {} allowed)",
                        at - event_ms,
                        self.max_past_ms
                    ),
                ));
            }
        }
        let measure = match &self.measure {
            None => None,
            Some(path) => Some(number_at(&event, path).ok_or_else(|| {
                Rejected::new(Reason::MissingMeasure, format!("the event has no number at {path}"))
            })?),
        };
        let category = self
            .count_by
            .as_deref()
            .map(|path| text_at(&event, path).unwrap_or_else(|| "unknown".to_owned()));
        Ok(Accepted { key, event_id: event.event_id, event_ms, measure, category })
    }
}

/// The JSON value at a dotted path inside `payload` or `metadata`.
fn nested<'a>(event: &'a Event, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let root = match parts.next()? {
        "payload" => &event.payload,
        "metadata" => event.metadata.as_ref()?,
        _ => return None,
    };
    let mut cur = root.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn number_at(event: &Event, path: &str) -> Option<f64> {
    match nested(event, path)? {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn text_at(event: &Event, path: &str) -> Option<String> {
    match path {
        "event_type" => return Some(event.event_type.clone()),
        "user_id" => return event.user_id.clone(),
        "device_id" => return event.device_id.clone(),
        _ => {}
    }
    match nested(event, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter() -> Filter {
        Filter {
            key_field: "device_id".into(),
            measure: Some("payload.value".into()),
            count_by: None,
            partitions: 12,
            max_future_ms: 1_000,
            max_past_ms: 10_000,
        }
    }

    fn event(device: &str, ts: i64, payload: Value) -> Value {
        json!({"event_id": "e1", "timestamp": ts, "event_type": "temperature", "device_id": device, "payload": payload})
    }

    fn home(key: &str) -> i32 {
        murmur2_partition(key.as_bytes(), 12).expect("12 partitions")
    }

    #[test]
    fn accepts_a_good_event() {
        let p = home("d-1");
        let got = filter().check(event("d-1", 50_000, json!({"value": 21.5})), p, Some(50_500));
        assert_eq!(
            got,
            Ok(Accepted {
                key: "d-1".into(),
                event_id: "e1".into(),
                event_ms: 50_000,
                measure: Some(21.5),
                category: None
            })
        );
    }

    #[test]
    fn names_each_reason() {
        let f = filter();
        let p = home("d-1");
        let reason =
            |v: Value, part: i32, at: i64| f.check(v, part, Some(at)).map_err(|r| r.reason);
        assert_eq!(reason(json!({"x": 1}), p, 0), Err(Reason::InvalidEvent));
        let no_key =
            json!({"event_id": "e", "timestamp": 0, "event_type": "t", "payload": {"value": 1}});
        assert_eq!(reason(no_key, p, 0), Err(Reason::MissingKey));
        assert_eq!(
            reason(event("d-1", 0, json!({"value": 1})), (p + 1) % 12, 0),
            Err(Reason::WrongPartition)
        );
        assert_eq!(
            reason(event("d-1", 5_000, json!({"value": 1})), p, 3_000),
            Err(Reason::TimestampOutOfBounds)
        );
        assert_eq!(
            reason(event("d-1", 0, json!({"value": 1})), p, 10_001),
            Err(Reason::TimestampOutOfBounds)
        );
        assert_eq!(
            reason(event("d-1", 0, json!({"value": "hot"})), p, 0),
            Err(Reason::MissingMeasure)
        );
        assert_eq!(reason(event("d-1", 0, json!({})), p, 0), Err(Reason::MissingMeasure));
        // Within bounds on both sides.
        assert!(reason(event("d-1", 1_000, json!({"value": 1})), p, 0).is_ok());
        assert!(reason(event("d-1", 0, json!({"value": 1})), p, 10_000).is_ok());
    }

    #[test]
    fn fields_added_by_a_newer_schema_are_ignored() {
        let mut v = event("d-1", 0, json!({"value": 2.0}));
        v["firmware"] = json!("2.4.1");
        assert!(filter().check(v, home("d-1"), None).is_ok());
    }

    #[test]
    fn counts_by_a_field() {
        let f = Filter {
            key_field: "user_id".into(),
            measure: None,
            count_by: Some("event_type".into()),
            ..filter()
        };
        let v = json!({"event_id": "e", "timestamp": 0, "event_type": "click", "user_id": "u-7", "payload": {}});
        let got = f.check(v, home("u-7"), None).expect("valid");
        assert_eq!((got.measure, got.category.as_deref()), (None, Some("click")));
    }
}
