//! [`Event::from_slice`](super::Event::from_slice): the fields read one by one as the parser
//! meets them. Every doubt (a field twice, an unknown or escaped name, a wrong type, a check
//! that fails) is an error here, which sends the caller to
//! [`Event::from_json`](super::Event::from_json) for the answer.

use super::{check_id, timestamp_from_millis, timestamp_from_text, Event};
use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

pub(super) struct EventVisitor;

/// Any error: its text is never shown, since the slow path gives the real one.
fn doubt<E: de::Error>() -> E {
    E::custom("not on the direct path")
}

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let (mut event_id, mut event_type, mut user_id, mut device_id) = (None, None, None, None);
        let (mut timestamp, mut payload, mut metadata) = (None, None, None);
        let mut seen = 0u8;
        while let Some(key) = map.next_key::<&'de str>()? {
            let (bit, _) = super::FIELDS
                .iter()
                .enumerate()
                .find(|(_, f)| **f == key)
                .ok_or_else(doubt::<A::Error>)?;
            if seen & (1 << bit) != 0 {
                return Err(doubt());
            }
            seen |= 1 << bit;
            match key {
                "event_id" => event_id = map.next_value::<Option<String>>()?,
                "timestamp" => timestamp = Some(map.next_value_seed(Timestamp)?),
                "event_type" => event_type = map.next_value::<Option<String>>()?,
                "user_id" => user_id = map.next_value::<Option<String>>()?,
                "device_id" => device_id = map.next_value::<Option<String>>()?,
                // Read as `Value`s, as the tree reads them (with serde_json's raw_value
                // feature a `Value` and a `Map` read some objects differently).
                "payload" => match map.next_value::<Value>()? {
                    Value::Object(m) => payload = Some(m),
                    _ => return Err(doubt()),
                },
                _ => match map.next_value::<Value>()? {
                    Value::Object(m) => metadata = Some(m),
                    Value::Null => metadata = None,
                    _ => return Err(doubt()),
                },
            }
        }
        let id = |field: &str, v: Option<String>| {
            v.map(|s| check_id(field, s).map_err(|_| doubt::<A::Error>())).transpose()
        };
        Ok(Event {
            event_id: id("event_id", event_id)?.ok_or_else(doubt::<A::Error>)?,
            timestamp: timestamp.ok_or_else(doubt::<A::Error>)?,
            event_type: id("event_type", event_type)?.ok_or_else(doubt::<A::Error>)?,
            user_id: id("user_id", user_id)?,
            device_id: id("device_id", device_id)?,
            payload: payload.ok_or_else(doubt::<A::Error>)?,
            metadata,
        })
    }
}

/// The timestamp, checked as [`super::parse_timestamp`] checks it, read without a copy.
struct Timestamp;

impl<'de> DeserializeSeed<'de> for Timestamp {
    type Value = DateTime<Utc>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Timestamp {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a timestamp")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        timestamp_from_text(s).map_err(|_| doubt())
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Self::Value, E> {
        timestamp_from_millis(ms).map_err(|_| doubt())
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Self::Value, E> {
        let ms = i64::try_from(ms).map_err(|_| doubt::<E>())?;
        self.visit_i64(ms)
    }
}
