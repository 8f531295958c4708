//! Avro values written straight to JSON text, for readers that store the text (the sink): the
//! same JSON as [`crate::codec::decode_to_json`] gives, without building it as a
//! `serde_json::Value` first and serializing that.
//!
//! The text is that of the value [`crate::codec::decode_to_json`] returns, as `serde_json`
//! writes it: object keys in name order, numbers and strings in `serde_json`'s notation. One
//! difference: a `payload` or `metadata` string field of the top-level record that holds a JSON
//! object is written as it is (it is checked to be JSON), not parsed and written again, so its
//! own key order and spacing are the writer's.

mod direct;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use std::io::Write as _;

/// Decodes an Avro datum written with `writer` and appends its JSON text to `out`. On an error
/// `out` may hold part of the text.
///
/// The common types (all but decimals, UUIDs and durations) are written straight from the
/// bytes, after [`crate::avro_bounds`] passed them; a datum with another type, or one the
/// direct reading refuses (a string that is not UTF-8, a float JSON cannot hold), goes through
/// apache-avro's values instead, so that both give the same text and the same errors.
pub fn decode_to_json_text(writer: &Schema, body: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let names = crate::avro_bounds::Names::new(writer);
    crate::avro_bounds::check_with(&names, body)
        .map_err(|e| format!("not an Avro value of its schema: {e}"))?;
    let start = out.len();
    if direct::write(&names, body, out).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    write(&crate::codec::read_checked_datum(names, body)?, out, true)
}

/// [`decode_to_json_text`] through apache-avro's values only: the reference the direct reading
/// is checked against (in the tests and the fuzz targets).
pub fn decode_to_json_text_via_values(
    writer: &Schema,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    write(&crate::codec::read_datum(writer, body)?, out, true)
}

/// Whether `s` is the text of a JSON object, as the event schema keeps `payload` and
/// `metadata`: the test [`crate::codec::decode_to_json`] makes (a number out of `f64`'s range,
/// for one, fails it), so that both show the same fields as objects.
///
/// Read without building the object: [`Parsed`] visits every value the way a
/// `serde_json::Value` is read (numbers parsed, so one out of range fails the same way) and
/// keeps nothing.
fn is_json_object(s: &str) -> bool {
    s.starts_with('{') && serde_json::from_str::<Parsed>(s).is_ok_and(|p| p.0)
}

/// A JSON value read and dropped; `true` when it was an object.
struct Parsed(bool);

impl<'de> serde::Deserialize<'de> for Parsed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParsedVisitor)
    }
}

struct ParsedVisitor;

impl<'de> serde::de::Visitor<'de> for ParsedVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Parsed, E> {
        Ok(Parsed(false))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Parsed, E> {
        Ok(Parsed(false))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Parsed, E> {
        Ok(Parsed(false))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Parsed, E> {
        Ok(Parsed(false))
    }

    fn visit_str<E>(self, _: &str) -> Result<Parsed, E> {
        Ok(Parsed(false))
    }

    fn visit_unit<E>(self) -> Result<Parsed, E> {
        Ok(Parsed(false))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<Parsed>()?.is_some() {}
        Ok(Parsed(false))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        while map.next_entry::<Parsed, Parsed>()?.is_some() {}
        Ok(Parsed(true))
    }
}

fn string(s: &str, out: &mut Vec<u8>) -> Result<(), String> {
    serde_json::to_writer(out, s).map_err(|e| e.to_string())
}

fn number(n: impl std::fmt::Display, out: &mut Vec<u8>) -> Result<(), String> {
    write!(out, "{n}").map_err(|e| e.to_string())
}

fn float(f: f64, out: &mut Vec<u8>) -> Result<(), String> {
    if !f.is_finite() {
        return Err(format!("{f} cannot be represented in JSON"));
    }
    serde_json::to_writer(out, &f).map_err(|e| e.to_string())
}

fn bytes(b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'[');
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        number(x, out)?;
    }
    out.push(b']');
    Ok(())
}

/// An object with `fields` in name order; at the top level, JSON-object strings in
/// `payload` and `metadata` are written as they are.
fn object<'v>(
    fields: impl Iterator<Item = (&'v str, &'v Avro)>,
    out: &mut Vec<u8>,
    top: bool,
) -> Result<(), String> {
    let mut sorted: Vec<(&str, &Avro)> = fields.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(k, out)?;
        out.push(b':');
        match v {
            Avro::String(s) if top && (k == "payload" || k == "metadata") && is_json_object(s) => {
                out.extend_from_slice(s.as_bytes());
            }
            Avro::Union(_, inner) if top && (k == "payload" || k == "metadata") => match &**inner {
                Avro::String(s) if is_json_object(s) => out.extend_from_slice(s.as_bytes()),
                other => write(other, out, false)?,
            },
            _ => write(v, out, false)?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// Writes `value` as `apache_avro`'s conversion to `serde_json::Value` would be written.
fn write(value: &Avro, out: &mut Vec<u8>, top: bool) -> Result<(), String> {
    match value {
        Avro::Null => out.extend_from_slice(b"null"),
        Avro::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Avro::Int(n) | Avro::Date(n) | Avro::TimeMillis(n) => number(n, out)?,
        Avro::Long(n)
        | Avro::TimeMicros(n)
        | Avro::TimestampMillis(n)
        | Avro::TimestampMicros(n)
        | Avro::TimestampNanos(n)
        | Avro::LocalTimestampMillis(n)
        | Avro::LocalTimestampMicros(n)
        | Avro::LocalTimestampNanos(n) => number(n, out)?,
        Avro::Float(f) => float(f64::from(*f), out)?,
        Avro::Double(d) => float(*d, out)?,
        Avro::Bytes(b) | Avro::Fixed(_, b) => bytes(b, out)?,
        Avro::String(s) | Avro::Enum(_, s) => string(s, out)?,
        Avro::Union(_, inner) => write(inner, out, top)?,
        Avro::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out, false)?;
            }
            out.push(b']');
        }
        Avro::Map(items) => object(items.iter().map(|(k, v)| (k.as_str(), v)), out, false)?,
        Avro::Record(fields) => object(fields.iter().map(|(k, v)| (k.as_str(), v)), out, top)?,
        Avro::Uuid(u) => string(&u.as_hyphenated().to_string(), out)?,
        // Rare types: the conversion itself, then its text.
        other => {
            let json = serde_json::Value::try_from(other.clone()).map_err(|e| e.to_string())?;
            serde_json::to_writer(out, &json).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_to_json, encode_record};
    use serde_json::json;

    pub(super) fn datum(schema: &Schema, value: Avro) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("datum")
    }

    /// A record of one `double` field, and a datum of it holding NaN, which JSON cannot write.
    pub(super) fn nan_record() -> (Schema, Vec<u8>) {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"d","type":"double"}]}"#,
        )
        .expect("schema");
        let nan = datum(&schema, Avro::Record(vec![("d".into(), Avro::Double(f64::NAN))]));
        (schema, nan)
    }

    fn text(schema: &Schema, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        decode_to_json_text(schema, bytes, &mut out).expect("decodes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn events_give_the_text_of_the_json_decoding() {
        let schema =
            Schema::parse_str(include_str!("../../../schemas/event.avsc")).expect("event schema");
        let event = json!({
            "event_id": "e-1\u{e9}\"q",
            "timestamp": 1_764_928_800_000_i64,
            "event_type": "click",
            "user_id": "u-1",
            "payload": {"z": 1, "a": [1.5, "x", null], "nested": {"b": true}},
            "metadata": {"source": "web"},
        });
        let bytes = encode_record(&schema, event.as_object().expect("object")).expect("encodes");
        let written = text(&schema, &bytes);
        let parsed: serde_json::Value = serde_json::from_str(&written).expect("json");
        assert_eq!(parsed, decode_to_json(&schema, &bytes).expect("decodes"));
        assert!(written.starts_with(r#"{"device_id":null,"event_id":"e-1é\"q","event_type""#));
    }

    #[test]
    fn every_common_type_matches_the_json_decoding() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[
                {"name":"b","type":"boolean"},{"name":"i","type":"int"},
                {"name":"l","type":"long"},{"name":"f","type":"float"},
                {"name":"d","type":"double"},{"name":"by","type":"bytes"},
                {"name":"e","type":{"type":"enum","name":"e","symbols":["A","B"]}},
                {"name":"a","type":{"type":"array","items":"string"}},
                {"name":"m","type":{"type":"map","values":["null","long"]}},
                {"name":"payload","type":"string"},
                {"name":"metadata","type":["null","string"]}]}"#,
        )
        .expect("schema");
        let value = Avro::Record(vec![
            ("b".into(), Avro::Boolean(true)),
            ("i".into(), Avro::Int(-7)),
            ("l".into(), Avro::Long(1 << 40)),
            ("f".into(), Avro::Float(0.1)),
            ("d".into(), Avro::Double(-2.5e-8)),
            ("by".into(), Avro::Bytes(vec![0, 255])),
            ("e".into(), Avro::Enum(1, "B".into())),
            ("a".into(), Avro::Array(vec![Avro::String("x\ny".into())])),
            (
                "m".into(),
                Avro::Map(
                    [
                        ("k2".into(), Avro::Union(1, Box::new(Avro::Long(3)))),
                        ("k1".into(), Avro::Union(0, Box::new(Avro::Null))),
                    ]
                    .into_iter()
                    .collect(),
                ),
            ),
            ("payload".into(), Avro::String("{not json".into())),
            ("metadata".into(), Avro::Union(1, Box::new(Avro::String(r#"{"k": [1]}"#.into())))),
        ]);
        let bytes = datum(&schema, value);
        let written = text(&schema, &bytes);
        let parsed: serde_json::Value = serde_json::from_str(&written).expect("json");
        assert_eq!(parsed, decode_to_json(&schema, &bytes).expect("decodes"));
        assert!(written.contains(r#""metadata":{"k": [1]}"#), "kept as written: {written}");
        assert!(written.contains(r#""payload":"{not json""#), "not JSON: a string");
    }

    #[test]
    fn the_object_check_agrees_with_parsing_a_value() {
        let tree =
            |s: &str| serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| v.is_object());
        let cases = [
            r#"{}"#,
            r#"{"a": [1, -2, 3.5e10, true, null, "x\u00e9\n"], "b": {"c": {}}}"#,
            r#"{"big": 18446744073709551616, "neg": -9223372036854775809}"#,
            r#"{"huge": 1e400}"#,
            r#"{"tiny": 1e-400}"#,
            r#"{"a": 1,}"#,
            r#"{"a": 1} trailing"#,
            r#"{"a": 01}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a" 1}"#,
            r#"{"#,
            r#"{ "nested": [[[[{"deep": [1]}]]]] }"#,
        ];
        for case in cases {
            assert_eq!(is_json_object(case), tree(case), "{case}");
        }
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(is_json_object(&deep), tree(&deep), "past serde_json's nesting limit");
        assert!(!is_json_object("[1]") && !is_json_object("\"{}\""));
    }

    #[test]
    fn refuses_what_the_json_decoding_refuses() {
        let (schema, nan) = nan_record();
        assert!(decode_to_json(&schema, &nan).is_err());
        assert!(decode_to_json_text(&schema, &nan, &mut Vec::new()).is_err());
        assert!(decode_to_json_text(&schema, &[0x80], &mut Vec::new()).is_err(), "truncated");
    }
}
