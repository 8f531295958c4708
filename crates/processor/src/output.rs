//! Window result → output record: the fields of `schemas/aggregate.avsc`, encoded as the
//! output topic says (Confluent-framed Avro or JSON), and checked against the largest record
//! Kafka takes ([`check_size`]); a result that is too large becomes a [`too_large`] summary
//! for the dead-letter topic instead. Pure: no Kafka, no clock.

use crate::window::{WindowKind, WindowResult};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tributary_schema::compat::ParsedSchema;

/// The Avro schema of window results.
pub const AGGREGATE_AVSC: &str = include_str!("../../../schemas/aggregate.avsc");

/// How results of one output topic are encoded.
#[derive(Debug)]
pub enum Encoding {
    /// Confluent-framed Avro with the registered schema `id`.
    Avro {
        id: u32,
        schema: Arc<ParsedSchema>,
    },
    Json,
}

/// One output topic of a source.
#[derive(Debug)]
pub struct Output {
    pub topic: String,
    pub encoding: Encoding,
}

/// The tumbling (`1m`) and sliding (`5m`) result topics of one source.
#[derive(Debug)]
pub struct Outputs {
    pub tumbling: Output,
    pub sliding: Output,
}

impl Outputs {
    /// The window label and the output topic of a result of kind `kind`.
    pub fn of(&self, kind: WindowKind) -> (&'static str, &Output) {
        match kind {
            WindowKind::Tumbling => ("1m", &self.tumbling),
            WindowKind::Sliding => ("5m", &self.sliding),
        }
    }
}

/// What a result record says besides the result itself.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub source_topic: &'a str,
    /// Whether the source aggregates a measure (else sum, avg, min and max are null).
    pub measured: bool,
    /// The key's reference data, when the source has a reference topic and the key is in it.
    pub attributes: Option<&'a BTreeMap<String, String>>,
    /// When the result is emitted, epoch ms.
    pub now_ms: i64,
    /// The transactional id of this instance.
    pub processor: &'a str,
    /// The most categories `counts` shows (`[processor] max_categories`).
    pub max_categories: usize,
}

/// A result that cannot be written with its output's schema.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(String);

/// Epoch milliseconds as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The fields of a result record, as `schemas/aggregate.avsc` names them.
pub fn fields(r: &WindowResult<String>, window: &str, cx: &Context<'_>) -> Map<String, Value> {
    let a = &r.aggregate;
    let mut fields = Map::new();
    fields.insert("source_topic".into(), Value::from(cx.source_topic));
    fields.insert("window".into(), Value::from(window));
    fields.insert("window_start".into(), Value::from(rfc3339(r.start_ms)));
    fields.insert("window_end".into(), Value::from(rfc3339(r.end_ms)));
    fields.insert("key".into(), Value::from(r.key.as_str()));
    fields.insert("count".into(), Value::from(a.count));
    let measured = cx.measured && a.measured > 0;
    fields.insert("sum".into(), if measured { Value::from(a.sum) } else { Value::Null });
    fields.insert("avg".into(), a.avg().filter(|_| measured).map_or(Value::Null, Value::from));
    fields.insert("min".into(), a.min.filter(|_| measured).map_or(Value::Null, Value::from));
    fields.insert("max".into(), a.max.filter(|_| measured).map_or(Value::Null, Value::from));
    let capped = a.capped(cx.max_categories);
    fields.insert(
        "counts".into(),
        Value::Object(
            capped.shown.iter().map(|(k, n)| ((*k).to_owned(), Value::from(*n))).collect(),
        ),
    );
    fields.insert("other_count".into(), Value::from(capped.other_count));
    fields.insert("other_categories".into(), Value::from(capped.other_categories));
    fields.insert(
        "attributes".into(),
        Value::Object(
            cx.attributes
                .iter()
                .flat_map(|m| m.iter())
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect(),
        ),
    );
    fields.insert("processed_at".into(), Value::from(rfc3339(cx.now_ms)));
    fields.insert("processor".into(), Value::from(cx.processor));
    fields
}

/// The value bytes of a result record with `fields`, in `encoding`.
pub fn encode(encoding: &Encoding, fields: &Map<String, Value>) -> Result<Vec<u8>, EncodeError> {
    match encoding {
        Encoding::Json => Ok(serde_json::to_vec(fields).unwrap_or_default()),
        Encoding::Avro { id, schema } => {
            let avro = schema
                .avro()
                .ok_or_else(|| EncodeError("the output schema is not an Avro schema".into()))?;
            let body = tributary_schema::codec::encode_record(avro, fields)
                .map_err(|e| EncodeError(e.to_string()))?;
            Ok(tributary_schema::frame(*id, &body))
        }
    }
}

/// The largest record the processor writes, key and value, in bytes: librdkafka's
/// `message.max.bytes` (1,000,000 by default; the processor does not change it, and Kafka's
/// default `max.message.bytes` of a topic, 1,048,588, is larger), less room for the record's
/// framing. The producer refuses a larger record at once (`MessageSizeTooLarge`).
pub const MAX_RECORD_BYTES: usize = 1_000_000 - 1_024;

/// A result record larger than [`MAX_RECORD_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the result record is {bytes} bytes, more than the {limit} bytes kafka takes")]
pub struct TooLarge {
    /// Key and value, in bytes.
    pub bytes: usize,
    pub limit: usize,
}

/// Whether a record with `key` and `value` can be written.
pub fn check_size(key: &[u8], value: &[u8]) -> Result<(), TooLarge> {
    let bytes = key.len() + value.len();
    if bytes > MAX_RECORD_BYTES {
        return Err(TooLarge { bytes, limit: MAX_RECORD_BYTES });
    }
    Ok(())
}

/// The value of the dead letter that stands for a result too large to write: what the
/// result was (source, output topic, window, key, counts) and how large, not the result.
pub fn too_large(
    r: &WindowResult<String>,
    window: &str,
    output_topic: &str,
    cx: &Context<'_>,
    err: TooLarge,
) -> Vec<u8> {
    let summary = serde_json::json!({
        "source_topic": cx.source_topic,
        "output_topic": output_topic,
        "window": window,
        "window_start": rfc3339(r.start_ms),
        "window_end": rfc3339(r.end_ms),
        "key": r.key,
        "count": r.aggregate.count,
        "categories": r.aggregate.categories.len(),
        "encoded_bytes": err.bytes,
        "limit_bytes": err.limit,
        "processor": cx.processor,
    });
    serde_json::to_vec(&summary).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Aggregate;
    use tributary_schema::compat::SchemaType;

    fn result(kind: WindowKind, aggregate: Aggregate) -> WindowResult<String> {
        WindowResult { kind, start_ms: 60_000, end_ms: 120_000, key: "d-1".into(), aggregate }
    }

    fn cx<'a>(measured: bool, attributes: Option<&'a BTreeMap<String, String>>) -> Context<'a> {
        Context {
            source_topic: "events.iot.sensors",
            measured,
            attributes,
            now_ms: 121_500,
            processor: "tributary-processor-0",
            max_categories: 1_000,
        }
    }

    fn measured() -> Aggregate {
        let mut a = Aggregate::default();
        a.add(Some(2.0), Some("click"));
        a.add(Some(4.0), Some("click"));
        a.add(None, Some("view"));
        a
    }

    #[test]
    fn a_result_has_every_field_of_the_schema() {
        let attrs = BTreeMap::from([("site".to_owned(), "berlin".to_owned())]);
        let f = fields(&result(WindowKind::Tumbling, measured()), "1m", &cx(true, Some(&attrs)));
        let want = serde_json::json!({
            "source_topic": "events.iot.sensors",
            "window": "1m",
            "window_start": "1970-01-01T00:01:00.000Z",
            "window_end": "1970-01-01T00:02:00.000Z",
            "key": "d-1",
            "count": 3,
            "sum": 6.0,
            "avg": 3.0,
            "min": 2.0,
            "max": 4.0,
            "counts": {"click": 2, "view": 1},
            "other_count": 0,
            "other_categories": 0,
            "attributes": {"site": "berlin"},
            "processed_at": "1970-01-01T00:02:01.500Z",
            "processor": "tributary-processor-0",
        });
        assert_eq!(Value::Object(f), want);
    }

    #[test]
    fn without_a_measure_the_statistics_are_null() {
        let f = fields(&result(WindowKind::Sliding, measured()), "5m", &cx(false, None));
        for k in ["sum", "avg", "min", "max"] {
            assert_eq!(f[k], Value::Null, "{k}");
        }
        assert_eq!(f["attributes"], serde_json::json!({}));
        let mut counted = Aggregate::default();
        counted.add(None, None);
        let f = fields(&result(WindowKind::Tumbling, counted), "1m", &cx(true, None));
        assert_eq!(
            (f["count"].as_u64(), &f["sum"]),
            (Some(1), &Value::Null),
            "measured, none seen"
        );
    }

    #[test]
    fn outputs_by_window_kind() {
        let out = |t: &str| Output { topic: t.into(), encoding: Encoding::Json };
        let o = Outputs { tumbling: out("a.1m"), sliding: out("a.5m") };
        assert_eq!(o.of(WindowKind::Tumbling).0, "1m");
        assert_eq!(o.of(WindowKind::Tumbling).1.topic, "a.1m");
        assert_eq!(o.of(WindowKind::Sliding).0, "5m");
        assert_eq!(o.of(WindowKind::Sliding).1.topic, "a.5m");
    }

    #[test]
    fn json_and_framed_avro() {
        let f = fields(&result(WindowKind::Tumbling, measured()), "1m", &cx(true, None));
        let json = encode(&Encoding::Json, &f).expect("json");
        assert_eq!(serde_json::from_slice::<Map<String, Value>>(&json).expect("parse"), f);
        let schema =
            Arc::new(ParsedSchema::parse(SchemaType::Avro, AGGREGATE_AVSC).expect("schema"));
        let avro = encode(&Encoding::Avro { id: 7, schema }, &f).expect("avro");
        assert_eq!(avro[..5], [0, 0, 0, 0, 7], "Confluent framing with the schema id");
        assert!(avro.len() > 5);
    }

    #[test]
    fn a_result_that_does_not_fit_the_schema_is_an_error() {
        let mut f = fields(&result(WindowKind::Tumbling, measured()), "1m", &cx(true, None));
        f.insert("count".into(), Value::from("many"));
        let schema =
            Arc::new(ParsedSchema::parse(SchemaType::Avro, AGGREGATE_AVSC).expect("schema"));
        assert!(encode(&Encoding::Avro { id: 7, schema }, &f).is_err());
    }

    fn many_categories(n: usize) -> Aggregate {
        let mut a = Aggregate::default();
        for i in 0..n {
            a.add(None, Some(&format!("type-{i:06}-{}", "x".repeat(20))));
        }
        a.add(None, Some("click"));
        a.add(None, Some("click"));
        a
    }

    #[test]
    fn counts_beyond_max_categories_are_summed_up_in_other() {
        let r = result(WindowKind::Tumbling, many_categories(5));
        let mut c = cx(false, None);
        c.max_categories = 3;
        let f = fields(&r, "1m", &c);
        let counts = f["counts"].as_object().expect("counts");
        assert_eq!(counts.len(), 3);
        assert_eq!(counts["click"], 2, "the category with the most records is kept");
        let first = format!("type-{:06}-{}", 0, "x".repeat(20));
        assert_eq!(counts[&first], 1, "then the first by name");
        assert_eq!((f["count"].as_u64(), f["other_count"].as_u64()), (Some(7), Some(3)));
        assert_eq!(f["other_categories"].as_u64(), Some(3));
    }

    #[test]
    fn the_schema_gains_fields_a_running_deployment_can_register() {
        let new = ParsedSchema::parse(SchemaType::Avro, AGGREGATE_AVSC).expect("schema");
        // The schema as registered before the cap: without the two fields.
        let mut old: Value = serde_json::from_str(AGGREGATE_AVSC).expect("json");
        let kept: Vec<Value> = old["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter(|f| {
                !["other_count", "other_categories"].contains(&f["name"].as_str().unwrap_or(""))
            })
            .cloned()
            .collect();
        assert_eq!(kept.len() + 2, old["fields"].as_array().map_or(0, Vec::len));
        old["fields"] = Value::Array(kept);
        let old = ParsedSchema::parse(SchemaType::Avro, &old.to_string()).expect("old schema");
        use tributary_schema::compat::Level;
        assert_eq!(Level::FullTransitive.check(&new, &[&old]), Vec::<String>::new());
    }

    #[test]
    fn a_result_too_large_for_kafka_is_refused_and_summed_up() {
        assert!(check_size(b"k", &[0; MAX_RECORD_BYTES - 1]).is_ok());
        let err = check_size(b"k2", &[0; MAX_RECORD_BYTES - 1]).expect_err("one byte too many");
        assert_eq!(err, TooLarge { bytes: MAX_RECORD_BYTES + 1, limit: MAX_RECORD_BYTES });
        // 40,000 categories of 32 bytes, all shown: too large in Avro and in JSON.
        let r = result(WindowKind::Sliding, many_categories(40_000));
        let mut c = cx(false, None);
        c.max_categories = 100_000;
        let f = fields(&r, "5m", &c);
        let schema =
            Arc::new(ParsedSchema::parse(SchemaType::Avro, AGGREGATE_AVSC).expect("schema"));
        for encoding in [Encoding::Json, Encoding::Avro { id: 7, schema }] {
            let value = encode(&encoding, &f).expect("encoded");
            let err = check_size(r.key.as_bytes(), &value).expect_err("too large");
            let summary: Value =
                serde_json::from_slice(&too_large(&r, "5m", "agg.5m", &c, err)).expect("json");
            assert_eq!(summary["key"], "d-1");
            assert_eq!(summary["window"], "5m");
            assert_eq!(summary["window_start"], "1970-01-01T00:01:00.000Z");
            assert_eq!(summary["output_topic"], "agg.5m");
            assert_eq!(
                (summary["count"].as_u64(), summary["categories"].as_u64()),
                (Some(40_002), Some(40_001))
            );
            assert_eq!(summary["encoded_bytes"].as_u64(), Some((value.len() + 3) as u64));
            assert!(summary.to_string().len() < 1_000, "a summary, not the result");
        }
        // With the default cap the same result fits, whatever the category names (256 bytes
        // at most each).
        let mut wide = Aggregate::default();
        for i in 0..5_000 {
            wide.add(None, Some(&format!("{i:06}{}", "y".repeat(250))));
        }
        let f = fields(&result(WindowKind::Sliding, wide), "5m", &cx(false, None));
        let value = encode(&Encoding::Json, &f).expect("json");
        assert!(check_size(b"d-1", &value).is_ok(), "{} bytes", value.len());
    }
}
