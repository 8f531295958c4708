//! Avro values written straight to JSON text, for readers that store the text (the sink): the
//! same JSON as [`crate::codec::decode_to_json`] gives, without building it as a
//! `serde_json::Value` first and serializing that.
//!
//! The text is that of the value [`crate::codec::decode_to_json`] returns, as `serde_json`
//! writes it: object keys in name order, numbers and strings in `serde_json`'s notation. One
//! difference: a `payload` or `metadata` string field of the top-level record that holds a JSON
//! object is written as it is (it is checked to be JSON), not parsed and written again, so its
//! own key order and spacing are the writer's.

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
    let mut direct = Direct { names: &names, bytes: body, pos: 0, scratch: Vec::new() };
    if direct.value(writer, None, Field::Top, out).is_ok() {
        return Ok(());
    }
    out.truncate(start);
    write(&crate::codec::read_checked_datum(&names, body)?, out, true)
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

/// Where a value sits, which decides how a JSON-object string is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The datum itself (a record there is the top-level record).
    Top,
    /// `payload` or `metadata` of the top-level record: a string holding a JSON object is
    /// written as it is.
    JsonText,
    Other,
}

/// Why the direct reading stopped: the values path then decides (and words any error).
struct Unsupported;

impl From<String> for Unsupported {
    fn from(_: String) -> Self {
        Unsupported
    }
}

/// Reads a datum that [`crate::avro_bounds`] passed and writes its JSON text.
struct Direct<'s, 'r, 'b> {
    names: &'r crate::avro_bounds::Names<'s>,
    bytes: &'b [u8],
    pos: usize,
    /// Field values of records and maps, written here first and then copied out in key order.
    scratch: Vec<u8>,
}

impl<'s, 'b> Direct<'s, '_, 'b> {
    fn long(&mut self) -> Result<i64, Unsupported> {
        Ok(crate::avro_bounds::read_long(self.bytes, &mut self.pos)?)
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], Unsupported> {
        let bytes: &'b [u8] = self.bytes;
        let end = self.pos.checked_add(n).filter(|&e| e <= bytes.len()).ok_or(Unsupported)?;
        let taken = &bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn sized(&mut self) -> Result<&'b [u8], Unsupported> {
        let n = usize::try_from(self.long()?).map_err(|_| Unsupported)?;
        self.take(n)
    }

    fn text(&mut self) -> Result<&'b str, Unsupported> {
        std::str::from_utf8(self.sized()?).map_err(|_| Unsupported)
    }

    /// The count of the next array or map block (0 at the end), skipping a block's byte size.
    fn block(&mut self) -> Result<u64, Unsupported> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        Ok(n.unsigned_abs())
    }

    fn value(
        &mut self,
        schema: &'s Schema,
        ns: apache_avro::schema::NamespaceRef<'s>,
        at: Field,
        out: &mut Vec<u8>,
    ) -> Result<(), Unsupported> {
        let wrote = match schema {
            Schema::Null => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            Schema::Boolean => {
                let text: &[u8] = match self.take(1)?[0] {
                    0 => b"false",
                    1 => b"true",
                    _ => return Err(Unsupported),
                };
                out.extend_from_slice(text);
                Ok(())
            }
            s if crate::avro_bounds::is_int(s) => {
                let n = i32::try_from(self.long()?).map_err(|_| Unsupported)?;
                Ok(number(n, out)?)
            }
            s if crate::avro_bounds::is_long(s) => {
                let n = self.long()?;
                Ok(number(n, out)?)
            }
            Schema::Float => {
                let b = self.take(4)?;
                Ok(float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])), out)?)
            }
            Schema::Double => {
                let b = self.take(8)?;
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                Ok(float(f64::from_le_bytes(le), out)?)
            }
            Schema::Bytes => {
                let b = self.sized()?;
                Ok(bytes(b, out)?)
            }
            Schema::Fixed(f) => {
                let b = self.take(f.size)?;
                Ok(bytes(b, out)?)
            }
            Schema::String => {
                let s = self.text()?;
                match at {
                    Field::JsonText if is_json_object(s) => {
                        out.extend_from_slice(s.as_bytes());
                        Ok(())
                    }
                    _ => Ok(string(s, out)?),
                }
            }
            Schema::Enum(e) => {
                let i = usize::try_from(self.long()?).map_err(|_| Unsupported)?;
                Ok(string(e.symbols.get(i).ok_or(Unsupported)?, out)?)
            }
            Schema::Union(u) => {
                let i = usize::try_from(self.long()?).map_err(|_| Unsupported)?;
                let branch = u.variants().get(i).ok_or(Unsupported)?;
                // A JSON-object string in a union is kept as it is; a record in a union at the
                // top is the top-level record.
                let at = match (at, branch) {
                    (Field::JsonText, Schema::String) => Field::JsonText,
                    (Field::Top, _) => Field::Top,
                    _ => Field::Other,
                };
                return self.value(branch, ns, at, out);
            }
            Schema::Array(a) => {
                out.push(b'[');
                let mut first = true;
                while let n @ 1.. = self.block()? {
                    for _ in 0..n {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        self.value(&a.items, ns, Field::Other, out)?;
                    }
                }
                out.push(b']');
                Ok(())
            }
            Schema::Map(m) => {
                let mut entries: Vec<(&'b str, usize, usize)> = Vec::new();
                let mut values = std::mem::take(&mut self.scratch);
                let base = values.len();
                while let n @ 1.. = self.block()? {
                    for _ in 0..n {
                        let key = self.text()?;
                        let from = values.len();
                        self.value(&m.types, ns, Field::Other, &mut values)?;
                        entries.push((key, from, values.len()));
                    }
                }
                // Keys in order; a key that repeats keeps its last value, as a map does.
                entries.reverse();
                entries.sort_by_key(|e| e.0);
                entries.dedup_by_key(|e| e.0);
                let written = object_of(entries.iter().map(|e| (e.0, e.1, e.2)), &values, out);
                values.truncate(base);
                self.scratch = values;
                written
            }
            Schema::Record(r) => {
                let ns = r.name.namespace().or(ns);
                let mut fields: Vec<(&'s str, usize, usize)> = Vec::with_capacity(r.fields.len());
                let mut values = std::mem::take(&mut self.scratch);
                let base = values.len();
                for f in &r.fields {
                    let field = if at == Field::Top && (f.name == "payload" || f.name == "metadata")
                    {
                        Field::JsonText
                    } else {
                        Field::Other
                    };
                    let from = values.len();
                    self.value(&f.schema, ns, field, &mut values)?;
                    fields.push((f.name.as_str(), from, values.len()));
                }
                fields.sort_by_key(|f| f.0);
                let written = object_of(fields.iter().copied(), &values, out);
                values.truncate(base);
                self.scratch = values;
                written
            }
            Schema::Ref { name } => {
                let (target, ns) = self.names.lookup(name, ns).map_err(|_| Unsupported)?;
                return self.value(target, ns, at, out);
            }
            // Decimals, UUIDs and durations: the values path.
            _ => Err(Unsupported),
        };
        wrote
    }
}

/// `{"key":value,...}` of `entries` (key, and the value's range in `values`), in their order.
fn object_of<'k>(
    entries: impl Iterator<Item = (&'k str, usize, usize)>,
    values: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Unsupported> {
    out.push(b'{');
    for (i, (key, from, to)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(key, out)?;
        out.push(b':');
        out.extend_from_slice(&values[from..to]);
    }
    out.push(b'}');
    Ok(())
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

    fn datum(schema: &Schema, value: Avro) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("datum")
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

    /// The direct reading alone: `None` where it hands the datum to the values path.
    fn direct_only(schema: &Schema, body: &[u8]) -> Option<String> {
        let names = crate::avro_bounds::Names::new(schema);
        crate::avro_bounds::check_with(&names, body).ok()?;
        let mut out = Vec::new();
        let mut d = Direct { names: &names, bytes: body, pos: 0, scratch: Vec::new() };
        d.value(schema, None, Field::Top, &mut out).ok()?;
        Some(String::from_utf8(out).expect("utf-8"))
    }

    /// Both readings give the same bytes or the same error; `Some` with the text the direct
    /// reading wrote itself.
    fn same_both_ways(schema: &Schema, body: &[u8]) -> Option<String> {
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        let a = decode_to_json_text(schema, body, &mut fast);
        let b = decode_to_json_text_via_values(schema, body, &mut slow);
        assert_eq!(a, b, "same outcome for {body:?}");
        if a.is_ok() {
            assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&slow));
        }
        direct_only(schema, body)
    }

    #[test]
    fn the_direct_reading_writes_the_values_text_byte_for_byte() {
        let event =
            Schema::parse_str(include_str!("../../../schemas/event.avsc")).expect("event schema");
        for (payload, metadata) in [
            (json!({"z": 1, "a": [1.5, "x", null]}), json!({"source": "web"})),
            (json!({}), serde_json::Value::Null),
        ] {
            let mut e = json!({
                "event_id": "e-\u{e9}\"q\n", "timestamp": 1_764_928_800_000_i64,
                "event_type": "click", "user_id": "u-1", "payload": payload,
            });
            if !metadata.is_null() {
                e["metadata"] = metadata;
            }
            let bytes = encode_record(&event, e.as_object().expect("object")).expect("encodes");
            let direct = same_both_ways(&event, &bytes).expect("the event is read directly");
            assert!(direct.contains(r#""payload":{"#), "{direct}");
        }
        let common = Schema::parse_str(
            r#"{"type":"record","name":"r","namespace":"n","fields":[
                {"name":"b","type":"boolean"},{"name":"i","type":"int"},
                {"name":"l","type":"long"},{"name":"f","type":"float"},
                {"name":"d","type":"double"},{"name":"by","type":"bytes"},
                {"name":"fx","type":{"type":"fixed","name":"F","size":2}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
                {"name":"e2","type":"E"},
                {"name":"a","type":{"type":"array","items":"string"}},
                {"name":"m","type":{"type":"map","values":["null","long"]}},
                {"name":"payload","type":"string"},
                {"name":"metadata","type":["null","string"]},
                {"name":"inner","type":{"type":"record","name":"I","fields":[
                    {"name":"payload","type":"string"},{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}}]}"#,
        )
        .expect("schema");
        let value = Avro::Record(vec![
            ("b".into(), Avro::Boolean(true)),
            ("i".into(), Avro::Int(i32::MIN)),
            ("l".into(), Avro::Long(i64::MAX)),
            ("f".into(), Avro::Float(0.1)),
            ("d".into(), Avro::Double(-2.5e-300)),
            ("by".into(), Avro::Bytes(vec![0, 255, 7])),
            ("fx".into(), Avro::Fixed(2, vec![1, 2])),
            ("e".into(), Avro::Enum(1, "B".into())),
            ("e2".into(), Avro::Enum(0, "A".into())),
            ("a".into(), Avro::Array(vec![Avro::String("x\ny".into()), Avro::String("".into())])),
            (
                "m".into(),
                Avro::Map(
                    [
                        ("k2".into(), Avro::Union(1, Box::new(Avro::Long(3)))),
                        ("k1".into(), Avro::Union(0, Box::new(Avro::Null))),
                        ("\u{263a}".into(), Avro::Union(1, Box::new(Avro::Long(-1)))),
                    ]
                    .into_iter()
                    .collect(),
                ),
            ),
            ("payload".into(), Avro::String(r#"{"kept": [1, 2]}"#.into())),
            ("metadata".into(), Avro::Union(1, Box::new(Avro::String("{not json".into())))),
            (
                "inner".into(),
                Avro::Record(vec![
                    ("payload".into(), Avro::String(r#"{"nested":"no"}"#.into())),
                    ("ts".into(), Avro::TimestampMillis(5)),
                ]),
            ),
        ]);
        let bytes = datum(&common, value);
        let direct = same_both_ways(&common, &bytes).expect("read directly");
        assert!(direct.contains(r#""payload":{"kept": [1, 2]}"#), "kept as written: {direct}");
        assert!(direct.contains(r#""inner":{"payload":"{\"nested\":\"no\"}""#), "{direct}");
        // A map whose key repeats keeps the last value: one block of two entries "k" (1, 2).
        let map = Schema::parse_str(r#"{"type":"map","values":"long"}"#).expect("schema");
        let repeated = [4, 2, b'k', 2, 2, b'k', 4, 0];
        assert_eq!(same_both_ways(&map, &repeated).as_deref(), Some(r#"{"k":2}"#));
        // Named types by reference, in a namespace: a linked list 1 -> 2.
        let list = Schema::parse_str(
            r#"{"type":"record","name":"Node","namespace":"t","fields":[
                {"name":"value","type":"int"},{"name":"next","type":["null","Node"]}]}"#,
        )
        .expect("schema");
        assert_eq!(
            same_both_ways(&list, &[2, 2, 4, 0]).as_deref(),
            Some(r#"{"next":{"next":null,"value":2},"value":1}"#)
        );
        // A record in a union at the top is the top-level record.
        let top = Schema::parse_str(
            r#"["null",{"type":"record","name":"T","fields":[{"name":"payload","type":"string"}]}]"#,
        )
        .expect("schema");
        let body = [2, 4, b'{', b'}'];
        assert_eq!(same_both_ways(&top, &body).as_deref(), Some(r#"{"payload":{}}"#));
    }

    #[test]
    fn what_the_direct_reading_leaves_to_the_values_gives_their_text_or_error() {
        let double = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"d","type":"double"}]}"#,
        )
        .expect("schema");
        let nan = datum(&double, Avro::Record(vec![("d".into(), Avro::Double(f64::NAN))]));
        assert_eq!(same_both_ways(&double, &nan), None, "NaN: an error either way");
        let string = Schema::parse_str(r#""string""#).expect("schema");
        assert_eq!(same_both_ways(&string, &[4, 0xff, 0xfe]), None, "not UTF-8");
        let boolean = Schema::parse_str(r#""boolean""#).expect("schema");
        assert_eq!(same_both_ways(&boolean, &[2]), None, "neither 0 nor 1");
        let uuid = Schema::parse_str(r#"{"type":"string","logicalType":"uuid"}"#).expect("schema");
        let mut id = vec![72];
        id.extend_from_slice(b"00000000-0000-0000-0000-000000000007");
        assert_eq!(same_both_ways(&uuid, &id), None, "UUIDs go through the values");
        let mut text = Vec::new();
        decode_to_json_text(&uuid, &id, &mut text).expect("a UUID");
        assert_eq!(text, br#""00000000-0000-0000-0000-000000000007""#);
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
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"d","type":"double"}]}"#,
        )
        .expect("schema");
        let nan = datum(&schema, Avro::Record(vec![("d".into(), Avro::Double(f64::NAN))]));
        assert!(decode_to_json(&schema, &nan).is_err());
        assert!(decode_to_json_text(&schema, &nan, &mut Vec::new()).is_err());
        assert!(decode_to_json_text(&schema, &[0x80], &mut Vec::new()).is_err(), "truncated");
    }
}
