//! Record → warehouse row, and when the buffer is flushed. Pure: no Kafka, no DuckDB, no clock.

use crate::config::SinkConfig;
use crate::warehouse::Row;
use base64::Engine as _;
use rdkafka::message::{Headers, Message, Timestamp};
use serde_json::{json, Map, Value};

/// The row of record `msg` whose decoded value is `content`.
pub fn row<M: Message>(msg: &M, schema_id: Option<u32>, content: &Value) -> Row {
    Row { metadata: metadata(msg, schema_id).to_string(), content: content.to_string() }
}

/// The content of a dead letter that cannot be decoded: stored as it is, base64 — a dead
/// letter's bytes are whatever failed elsewhere.
pub fn undecoded(payload: Option<&[u8]>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(payload.unwrap_or_default());
    json!({ "undecoded_base64": b64 })
}

/// Record metadata as the Snowflake connector writes it.
pub fn metadata<M: Message>(msg: &M, schema_id: Option<u32>) -> Value {
    let mut md = Map::new();
    md.insert("topic".into(), json!(msg.topic()));
    md.insert("partition".into(), json!(msg.partition()));
    md.insert("offset".into(), json!(msg.offset()));
    match msg.timestamp() {
        Timestamp::CreateTime(t) => {
            md.insert("CreateTime".into(), json!(t));
        }
        Timestamp::LogAppendTime(t) => {
            md.insert("LogAppendTime".into(), json!(t));
        }
        Timestamp::NotAvailable => {}
    }
    if let Some(k) = msg.key() {
        md.insert("key".into(), json!(String::from_utf8_lossy(k)));
    }
    if let Some(id) = schema_id {
        md.insert("schema_id".into(), json!(id));
    }
    if let Some(h) = msg.headers() {
        let headers: Map<String, Value> = h
            .iter()
            .map(|x| {
                (x.key.to_owned(), json!(x.value.map(|v| String::from_utf8_lossy(v).into_owned())))
            })
            .collect();
        md.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(md)
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
        let m = msg(Timestamp::NotAvailable, None);
        let r = row(&m, None, &json!({"a": 1}));
        assert_eq!(r.content, r#"{"a":1}"#);
        let md: Value = serde_json::from_str(&r.metadata).expect("json");
        assert_eq!(md["offset"], 17);
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
