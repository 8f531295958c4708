//! Avro encoding of JSON records and decoding back to JSON, for values framed with a schema id.
//!
//! The gateway accepts events as JSON; [`encode_record`] writes them with the topic's
//! registered record schema, naming the offending field when one does not fit, and
//! [`decode_to_json`] turns Avro values back into JSON for the read endpoints.

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{Map, Value as Json};

/// A value that does not fit the schema, naming the field (dotted path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EncodeError {
    pub field: String,
    pub message: String,
}

/// Encodes `fields` as a datum of the record `schema` (no framing). Fields the schema has and
/// `fields` lacks take the schema's default, or null in a union with null; a JSON object or
/// array given for a string field is written as its JSON text (the event schema keeps
/// `payload` and `metadata` that way).
pub fn encode_record(schema: &Schema, fields: &Map<String, Json>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    encode_record_into(schema, fields, &mut out)?;
    Ok(out)
}

/// [`encode_record`], appending the datum to `out` (after a frame header, say). The bytes are
/// written as the schema is walked, with no intermediate Avro value; on an error `out` holds
/// part of a datum and is to be dropped.
pub fn encode_record_into<F: Fields + ?Sized>(
    schema: &Schema,
    fields: &F,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_record(schema, fields, &At::Root, out)
}

/// The fields of a record to encode, found by name: a JSON object, or a caller's own fixed set
/// of values that need no map built for them. `None` is a field not given (its default
/// applies); a JSON null is a null given.
pub trait Fields {
    fn field(&self, name: &str) -> Option<&Json>;
}

impl Fields for Map<String, Json> {
    fn field(&self, name: &str) -> Option<&Json> {
        self.get(name)
    }
}

/// Where a value sits in the record, spelled out only when an error names it: `a.b`, `a[2]`.
enum At<'a> {
    Root,
    Field(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn render(&self, out: &mut String) {
        match self {
            At::Root => {}
            At::Field(At::Root, name) => out.push_str(name),
            At::Field(parent, name) => {
                parent.render(out);
                out.push('.');
                out.push_str(name);
            }
            At::Index(parent, i) => {
                parent.render(out);
                out.push_str(&format!("[{i}]"));
            }
        }
    }

    fn err(&self, message: impl Into<String>) -> EncodeError {
        let mut field = String::new();
        self.render(&mut field);
        if field.is_empty() {
            field.push('$');
        }
        EncodeError { field, message: message.into() }
    }
}

fn write_record<F: Fields + ?Sized>(
    schema: &Schema,
    fields: &F,
    at: &At<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let Schema::Record(r) = schema else {
        return Err(at.err("the topic's schema is not a record"));
    };
    for f in &r.fields {
        let here = At::Field(at, &f.name);
        match fields.field(&f.name) {
            Some(v) if !v.is_null() => write(&f.schema, v, &here, out)?,
            given => match (&f.default, given) {
                (Some(d), None) => write_default(&f.schema, d, &here, out)?,
                _ => write(&f.schema, &Json::Null, &here, out)
                    .map_err(|_| here.err("is required by the topic's schema"))?,
            },
        }
    }
    Ok(())
}

/// A field default: for a union, it belongs to the first branch (Avro's rule).
fn write_default(
    schema: &Schema,
    d: &Json,
    at: &At<'_>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match schema {
        Schema::Union(u) => {
            let first = u.variants().first().ok_or_else(|| at.err("empty union"))?;
            write_long(out, 0);
            write(first, d, at, out)
        }
        other => write(other, d, at, out),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Avro's `long` (and `int`): zig-zag, then 7 bits a byte, low bits first.
fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro's `bytes` and `string`: the length, then the bytes.
fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// A JSON value as an Avro string of its compact text, serialized through a buffer each thread
/// reuses (no allocation per value).
fn write_json_text(out: &mut Vec<u8>, v: &Json) {
    tributary_core::json::with_json(v, |text| write_bytes(out, text));
}

fn write(schema: &Schema, v: &Json, at: &At<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mismatch =
        |want: &str| at.err(format!("expected {want} for the topic's schema, found {}", kind(v)));
    match schema {
        Schema::Null if v.is_null() => {}
        Schema::Null => return Err(mismatch("null")),
        Schema::Boolean => out.push(u8::from(v.as_bool().ok_or_else(|| mismatch("a boolean"))?)),
        Schema::Int | Schema::Date | Schema::TimeMillis => {
            let n = v.as_i64().and_then(|n| i32::try_from(n).ok());
            write_long(out, n.ok_or_else(|| mismatch("a 32-bit integer"))?.into());
        }
        Schema::Long | Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimeMicros => {
            write_long(out, v.as_i64().ok_or_else(|| mismatch("an integer"))?);
        }
        Schema::Float => {
            let f = v.as_f64().ok_or_else(|| mismatch("a number"))? as f32;
            out.extend_from_slice(&f.to_le_bytes());
        }
        Schema::Double => {
            out.extend_from_slice(&v.as_f64().ok_or_else(|| mismatch("a number"))?.to_le_bytes());
        }
        Schema::String => match v {
            Json::String(s) => write_bytes(out, s.as_bytes()),
            Json::Object(_) | Json::Array(_) => write_json_text(out, v),
            _ => return Err(mismatch("a string")),
        },
        Schema::Bytes => {
            write_bytes(out, v.as_str().ok_or_else(|| mismatch("a string"))?.as_bytes())
        }
        Schema::Enum(e) => match v.as_str().and_then(|s| e.symbols.iter().position(|x| x == s)) {
            Some(i) => write_long(out, i as i64),
            None => return Err(at.err(format!("expected one of {}", e.symbols.join(", ")))),
        },
        Schema::Array(a) => {
            let Json::Array(items) = v else { return Err(mismatch("an array")) };
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for (i, x) in items.iter().enumerate() {
                    write(&a.items, x, &At::Index(at, i), out)?;
                }
            }
            out.push(0);
        }
        Schema::Map(m) => {
            let Json::Object(o) = v else { return Err(mismatch("an object")) };
            if !o.is_empty() {
                write_long(out, o.len() as i64);
                for (k, x) in o {
                    write_bytes(out, k.as_bytes());
                    write(&m.types, x, &At::Field(at, k), out)?;
                }
            }
            out.push(0);
        }
        Schema::Record(_) => match v {
            Json::Object(o) => write_record(schema, o, at, out)?,
            _ => return Err(mismatch("an object")),
        },
        Schema::Union(u) => {
            let mark = out.len();
            for (i, branch) in u.variants().iter().enumerate() {
                // Only null fits null, and null fits nothing else (a union holds no union):
                // skipping those branches spares building an error for each.
                if matches!(branch, Schema::Null) != v.is_null() {
                    continue;
                }
                write_long(out, i as i64);
                if write(branch, v, at, out).is_ok() {
                    return Ok(());
                }
                out.truncate(mark);
            }
            if v.is_null() {
                return Err(at.err("is required by the topic's schema"));
            }
            return Err(at.err(format!("{} fits no branch of the topic's schema's union", kind(v))));
        }
        other => {
            return Err(at.err(format!("the gateway cannot fill a field of Avro type {other:?}")))
        }
    }
    Ok(())
}

/// The Avro value of a datum written with `writer`, refused before it is decoded when it
/// nests, claims lengths or multiplies values beyond [`crate::avro_bounds`].
pub(crate) fn read_datum(writer: &Schema, body: &[u8]) -> Result<Avro, String> {
    let names = crate::avro_bounds::Names::new(writer);
    crate::avro_bounds::check_with(&names, body)
        .map_err(|e| format!("not an Avro value of its schema: {e}"))?;
    read_checked_datum(names, body)
}

/// [`read_datum`] of a datum [`crate::avro_bounds::check_with`] passed.
pub(crate) fn read_checked_datum(
    names: crate::avro_bounds::Names<'_>,
    mut body: &[u8],
) -> Result<Avro, String> {
    let schema = names.schema();
    let resolved =
        names.into_resolved().map_err(|e| format!("not an Avro value of its schema: {e}"))?;
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .resolved_writer_schemata(resolved)
        .build()
        .and_then(|r| r.read_value(&mut body))
        .map_err(|e| format!("not an Avro value of its schema: {e}"))
}

/// Decodes an Avro datum written with `writer` into JSON. String fields holding a JSON object
/// (the event schema's `payload` and `metadata`) are shown as that object. A datum that nests,
/// claims lengths or multiplies values beyond [`crate::avro_bounds`] is refused before it is
/// decoded.
pub fn decode_to_json(writer: &Schema, body: &[u8]) -> Result<Json, String> {
    let value = read_datum(writer, body)?;
    let json = Json::try_from(value).map_err(|e| e.to_string())?;
    Ok(match json {
        Json::Object(mut o) => {
            // The event schema keeps these two JSON objects as text; show them as objects.
            for (_, v) in o.iter_mut().filter(|(k, _)| *k == "payload" || *k == "metadata") {
                if let Json::String(s) = v {
                    if s.starts_with('{') {
                        if let Ok(obj @ Json::Object(_)) = serde_json::from_str::<Json>(s) {
                            *v = obj;
                        }
                    }
                }
            }
            Json::Object(o)
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event_schema() -> Schema {
        Schema::parse_str(include_str!("../../../schemas/event.avsc"))
            .expect("schemas/event.avsc parses")
    }

    fn fields(v: Json) -> Map<String, Json> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn events_round_trip_through_the_event_schema() {
        let schema = event_schema();
        let event = json!({"event_id": "e1", "timestamp": 1_764_504_000_123i64, "event_type": "click",
                           "user_id": "u1", "payload": {"url": "/", "n": 2}});
        let bytes = encode_record(&schema, &fields(event)).expect("encodes");
        let back = decode_to_json(&schema, &bytes).expect("decodes");
        assert_eq!(
            back,
            json!({"event_id": "e1", "timestamp": 1_764_504_000_123i64, "event_type": "click", "user_id": "u1",
                   "payload": {"n": 2, "url": "/"}, "device_id": null, "metadata": null})
        );
    }

    #[test]
    fn fields_that_do_not_fit_are_named() {
        let schema = event_schema();
        let cases = [
            (json!({"timestamp": 1, "event_type": "t", "payload": {}}), "event_id", "required"),
            (
                json!({"event_id": "e", "timestamp": "soon", "event_type": "t", "payload": {}}),
                "timestamp",
                "integer",
            ),
            (
                json!({"event_id": "e", "timestamp": 1, "event_type": "t", "payload": {}, "user_id": 5}),
                "user_id",
                "no branch",
            ),
        ];
        for (event, field, needle) in cases {
            let e = encode_record(&schema, &fields(event.clone())).expect_err("does not fit");
            assert_eq!(e.field, field, "{event}");
            assert!(e.message.contains(needle), "{event}: {e}");
        }
    }

    /// The bytes written as the schema is walked are the bytes apache-avro writes for the same
    /// value resolved against the schema.
    #[test]
    fn datums_match_apache_avro_byte_for_byte() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
            {"name":"b","type":"boolean"},
            {"name":"i","type":"int"},
            {"name":"l","type":"long"},
            {"name":"f","type":"float"},
            {"name":"d","type":"double"},
            {"name":"s","type":"string"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["x","y","z"]}},
            {"name":"a","type":{"type":"array","items":"long"}},
            {"name":"m","type":{"type":"map","values":"string"}},
            {"name":"u","type":["null","string","long"]},
            {"name":"n","type":{"type":"record","name":"N","fields":[
                {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
                {"name":"o","type":["null","int"],"default":null}]}},
            {"name":"dflt","type":"string","default":"eu"}]}"#,
        )
        .expect("schema");
        let values = [
            json!({"b": true, "i": 0, "l": 0, "f": 0.0, "d": 0.0, "s": "", "e": "x", "a": [],
                   "m": {}, "u": null, "n": {"t": 0}}),
            json!({"b": false, "i": -1, "l": i64::MAX, "f": 1.5, "d": -2.25, "s": "héllo", "e": "z",
                   "a": [1, -64, 64, 8_191, -8_192, i64::MIN], "m": {"k": "v"}, "u": "text",
                   "n": {"t": 1_764_504_000_123i64, "o": 7}, "dflt": "us"}),
            json!({"b": true, "i": i32::MIN, "l": -300, "f": -3.0e10, "d": 1e300, "s": "x".repeat(200),
                   "e": "y", "a": [0], "m": {"only": ""}, "u": 42, "n": {"t": -1, "o": null}}),
        ];
        for value in values {
            let ours = encode_record(&schema, &fields(value.clone())).expect("encodes");
            let theirs = Avro::try_from(value.clone())
                .and_then(|v| v.resolve(&schema))
                .and_then(|v| {
                    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
                        .build()
                        .and_then(|w| w.write_value_to_vec(v))
                })
                .expect("apache-avro encodes");
            assert_eq!(ours, theirs, "{value}");
        }
    }

    #[test]
    fn nested_fields_are_named_by_path() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[
                {"name":"qty","type":"int"}]}}},
            {"name":"tags","type":{"type":"map","values":"long"}}]}"#,
        )
        .expect("schema");
        let cases = [
            (json!({"items": [{"qty": 1}, {"qty": "two"}], "tags": {}}), "items[1].qty", "32-bit"),
            (json!({"items": [{"qty": 1}, {}], "tags": {}}), "items[1].qty", "required"),
            (json!({"items": [], "tags": {"a": 1, "b": 2.5}}), "tags.b", "integer"),
            (json!({"items": [{"qty": 3_000_000_000i64}], "tags": {}}), "items[0].qty", "32-bit"),
        ];
        for (value, field, needle) in cases {
            let e = encode_record(&schema, &fields(value.clone())).expect_err("does not fit");
            assert_eq!(e.field, field, "{value}");
            assert!(e.message.contains(needle), "{value}: {e}");
        }
    }

    #[test]
    fn defaults_fill_fields_the_event_lacks() {
        let evolved = Schema::parse_str(
            r#"{"type":"record","name":"Event","fields":[
            {"name":"event_id","type":"string"},
            {"name":"region","type":"string","default":"eu"},
            {"name":"score","type":["null","int"],"default":null}]}"#,
        )
        .expect("schema");
        let bytes = encode_record(&evolved, &fields(json!({"event_id": "e"}))).expect("encodes");
        assert_eq!(
            decode_to_json(&evolved, &bytes).expect("decodes"),
            json!({"event_id": "e", "region": "eu", "score": null})
        );
    }
}
