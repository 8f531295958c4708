//! Window result → output record: the fields of `schemas/aggregate.avsc`, encoded as the
//! output topic says (Confluent-framed Avro or JSON). Pure: no Kafka, no clock.

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
    fields.insert(
        "counts".into(),
        Value::Object(a.categories.iter().map(|(k, n)| (k.clone(), Value::from(*n))).collect()),
    );
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
}
