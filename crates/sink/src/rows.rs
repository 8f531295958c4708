//! Record → warehouse row, and when the buffer is flushed. Pure: no Kafka, no DuckDB, no clock.

use crate::config::SinkConfig;
use base64::Engine as _;
use rdkafka::message::{Headers, Message, Timestamp};
use serde::Serialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// The JSON text of one row, written into buffers that are reused from record to record.
#[derive(Debug, Default)]
pub struct RowText {
    metadata: Vec<u8>,
    content: Vec<u8>,
}

impl RowText {
    /// The emptied `RECORD_CONTENT` buffer, for a decoder to write the value's JSON text into.
    pub fn content_mut(&mut self) -> &mut Vec<u8> {
        self.content.clear();
        &mut self.content
    }

    /// Sets `RECORD_CONTENT` to `content`.
    pub fn set_content(&mut self, content: &Value) -> Result<(), serde_json::Error> {
        serde_json::to_writer(self.content_mut(), content)
    }

    /// Sets `RECORD_METADATA` to that of record `msg`.
    pub fn set_metadata<M: Message>(
        &mut self,
        msg: &M,
        schema_id: Option<u32>,
    ) -> Result<(), serde_json::Error> {
        self.metadata.clear();
        serde_json::to_writer(&mut self.metadata, &Metadata::of(msg, schema_id))
    }

    /// `RECORD_METADATA` and `RECORD_CONTENT` (JSON text is UTF-8: checked once here).
    pub fn texts(&self) -> (&str, &str) {
        let text = |b| std::str::from_utf8(b).unwrap_or_default();
        (text(&self.metadata), text(&self.content))
    }
}

/// The content of a dead letter that cannot be decoded: stored as it is, base64 — a dead
/// letter's bytes are whatever failed elsewhere.
pub fn undecoded(payload: Option<&[u8]>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(payload.unwrap_or_default());
    json!({ "undecoded_base64": b64 })
}

/// A record header's name and value (text; bytes that are not UTF-8 replaced).
type Header<'a> = (&'a str, Option<Cow<'a, str>>);

/// Record metadata as the Snowflake connector writes it. The fields are in the order of their
/// names, as a JSON object's keys always were here.
#[derive(Debug, Serialize)]
struct Metadata<'a> {
    #[serde(rename = "CreateTime", skip_serializing_if = "Option::is_none")]
    create_time: Option<i64>,
    #[serde(rename = "LogAppendTime", skip_serializing_if = "Option::is_none")]
    log_append_time: Option<i64>,
    /// In name order; a header name that repeats keeps its last value.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_map")]
    headers: Option<Vec<Header<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Cow<'a, str>>,
    offset: i64,
    partition: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_id: Option<u32>,
    topic: &'a str,
}

impl<'a> Metadata<'a> {
    fn of<M: Message>(msg: &'a M, schema_id: Option<u32>) -> Self {
        let (create_time, log_append_time) = match msg.timestamp() {
            Timestamp::CreateTime(t) => (Some(t), None),
            Timestamp::LogAppendTime(t) => (None, Some(t)),
            Timestamp::NotAvailable => (None, None),
        };
        let headers = msg.headers().map(|h| {
            let mut v: Vec<_> =
                h.iter().map(|x| (x.key, x.value.map(String::from_utf8_lossy))).collect();
            // Sorted stably from the last header back, so the first of each name is its last
            // value: the one the dedup keeps.
            v.reverse();
            v.sort_by_key(|(k, _)| *k);
            v.dedup_by_key(|(k, _)| *k);
            v
        });
        Self {
            create_time,
            log_append_time,
            headers,
            key: msg.key().map(String::from_utf8_lossy),
            offset: msg.offset(),
            partition: msg.partition(),
            schema_id,
            topic: msg.topic(),
        }
    }
}

/// Headers as a JSON object (a few per record: a sorted list costs less than a tree).
fn as_map<S: serde::Serializer>(
    headers: &Option<Vec<Header<'_>>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.iter().flatten().map(|(k, v)| (k, v)))
}

/// Why a flush happened: the `trigger` label of `sink_flushes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Count,
    Bytes,
    Time,
    Rebalance,
    Shutdown,
}

impl Trigger {
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Count => "count",
            Trigger::Bytes => "bytes",
            Trigger::Time => "time",
            Trigger::Rebalance => "rebalance",
            Trigger::Shutdown => "shutdown",
        }
    }
}

/// What the buffer holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    pub rows: usize,
    /// Metadata and content bytes of the rows.
    pub bytes: usize,
    /// Seconds since the oldest row was buffered.
    pub age_secs: Option<f64>,
    /// Offsets to move past with no row (every record so far was dead-lettered).
    pub offsets_only: bool,
}

/// Whether the buffer is to be flushed now, and why.
pub fn due(fill: &Fill, c: &SinkConfig) -> Option<Trigger> {
    if fill.rows >= c.buffer_count_records {
        Some(Trigger::Count)
    } else if fill.bytes >= c.buffer_size_bytes {
        Some(Trigger::Bytes)
    } else if fill.age_secs.is_some_and(|a| a >= c.buffer_flush_time_secs) || fill.offsets_only {
        Some(Trigger::Time)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    fn msg(timestamp: Timestamp, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"user-1".to_vec()),
            "events.clickstream".into(),
            timestamp,
            4,
            17,
            headers,
        )
    }

    fn metadata(m: &OwnedMessage, schema_id: Option<u32>) -> Value {
        let mut text = RowText::default();
        text.set_metadata(m, schema_id).expect("written");
        serde_json::from_str(text.texts().0).expect("json")
    }

    #[test]
    fn metadata_is_the_connectors() {
        let h = OwnedHeaders::new()
            .insert(Header { key: "trace", value: Some("abc") })
            .insert(Header { key: "none", value: None::<&[u8]> });
        let m = msg(Timestamp::CreateTime(1_000), Some(h));
        let want = json!({
            "topic": "events.clickstream",
            "partition": 4,
            "offset": 17,
            "CreateTime": 1_000,
            "key": "user-1",
            "schema_id": 3,
            "headers": {"trace": "abc", "none": null},
        });
        assert_eq!(metadata(&m, Some(3)), want);
        // A repeated name keeps its last value; names in order, whatever order they came in.
        let h = OwnedHeaders::new()
            .insert(Header { key: "b", value: Some("1") })
            .insert(Header { key: "a", value: Some("x") })
            .insert(Header { key: "c", value: None::<&[u8]> })
            .insert(Header { key: "b", value: Some("2") })
            .insert(Header { key: "a", value: Some("\u{ff}y".as_bytes()) });
        let mut text = RowText::default();
        text.set_metadata(&msg(Timestamp::CreateTime(1), Some(h)), None).expect("written");
        assert!(
            text.texts().0.starts_with(r#"{"CreateTime":1,"headers":{"a":"ÿy","b":"2","c":null},"#),
            "{}",
            text.texts().0
        );
        let m = msg(Timestamp::LogAppendTime(2_000), None);
        let md = metadata(&m, None);
        assert_eq!(md["LogAppendTime"], 2_000);
        assert!(md.get("CreateTime").is_none() && md.get("schema_id").is_none());
        assert!(md.get("headers").is_none());
        let m = msg(Timestamp::NotAvailable, None);
        assert!(metadata(&m, None).get("LogAppendTime").is_none());
    }

    #[test]
    fn a_row_is_metadata_and_content_as_json_text() {
        let m = msg(Timestamp::CreateTime(5), None);
        let mut text = RowText::default();
        text.set_content(&json!({"b": [1, "x"], "a": {"c": null}})).expect("written");
        text.set_metadata(&m, None).expect("written");
        assert_eq!(text.texts().1, r#"{"a":{"c":null},"b":[1,"x"]}"#);
        assert_eq!(
            text.texts().0,
            r#"{"CreateTime":5,"key":"user-1","offset":17,"partition":4,"topic":"events.clickstream"}"#,
            "keys in name order, as before"
        );
        // The buffers are reused: a second row replaces the first.
        text.set_content(&json!({"a": 1})).expect("written");
        assert_eq!(text.texts().1, r#"{"a":1}"#);
        assert_eq!(metadata(&m, Some(2))["schema_id"], 2);
        assert_eq!(undecoded(Some(b"\xff\x00")), json!({"undecoded_base64": "/wA="}));
        assert_eq!(undecoded(None), json!({"undecoded_base64": ""}));
    }

    #[test]
    fn flushes_on_count_bytes_and_time_in_that_order() {
        let c = SinkConfig {
            buffer_count_records: 10,
            buffer_size_bytes: 100,
            buffer_flush_time_secs: 1.0,
            ..SinkConfig::default()
        };
        let fill =
            |rows, bytes, age_secs, offsets_only| Fill { rows, bytes, age_secs, offsets_only };
        assert_eq!(due(&fill(0, 0, None, false), &c), None);
        assert_eq!(due(&fill(9, 99, Some(0.9), false), &c), None);
        assert_eq!(due(&fill(10, 100, Some(5.0), false), &c), Some(Trigger::Count));
        assert_eq!(due(&fill(1, 100, Some(5.0), false), &c), Some(Trigger::Bytes));
        assert_eq!(due(&fill(1, 1, Some(1.0), false), &c), Some(Trigger::Time));
        assert_eq!(due(&fill(0, 0, None, true), &c), Some(Trigger::Time), "dead letters only");
        let labels: Vec<&str> =
            [Trigger::Count, Trigger::Bytes, Trigger::Time, Trigger::Rebalance, Trigger::Shutdown]
                .iter()
                .map(|t| t.label())
                .collect();
        assert_eq!(labels, ["count", "bytes", "time", "rebalance", "shutdown"]);
    }
}
