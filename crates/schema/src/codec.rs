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

fn err(field: &str, message: impl Into<String>) -> EncodeError {
    EncodeError { field: field.to_owned(), message: message.into() }
}

/// Encodes `fields` as a datum of the record `schema` (no framing). Fields the schema has and
/// `fields` lacks take the schema's default, or null in a union with null; a JSON object or
/// array given for a string field is written as its JSON text (the event schema keeps
/// `payload` and `metadata` that way).
pub fn encode_record(schema: &Schema, fields: &Map<String, Json>) -> Result<Vec<u8>, EncodeError> {
    let value = record(schema, fields, "")?;
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| err("$", format!("does not match the schema: {e}")))
}

fn record(schema: &Schema, fields: &Map<String, Json>, path: &str) -> Result<Avro, EncodeError> {
    let Schema::Record(r) = schema else {
        return Err(err(
            if path.is_empty() { "$" } else { path },
            "the topic's schema is not a record",
        ));
    };
    let mut out = Vec::with_capacity(r.fields.len());
    for f in &r.fields {
        let name = if path.is_empty() { f.name.clone() } else { format!("{path}.{}", f.name) };
        let v = match fields.get(&f.name) {
            Some(v) if !v.is_null() => convert(&f.schema, v, &name)?,
            given => match (&f.default, given) {
                (Some(d), None) => convert_default(&f.schema, d, &name)?,
                _ => convert(&f.schema, &Json::Null, &name)
                    .map_err(|_| err(&name, "is required by the topic's schema"))?,
            },
        };
        out.push((f.name.clone(), v));
    }
    Ok(Avro::Record(out))
}

/// A field default: for a union, it belongs to the first branch (Avro's rule).
fn convert_default(schema: &Schema, d: &Json, path: &str) -> Result<Avro, EncodeError> {
    match schema {
        Schema::Union(u) => {
            let first = u.variants().first().ok_or_else(|| err(path, "empty union"))?;
            Ok(Avro::Union(0, Box::new(convert(first, d, path)?)))
        }
        other => convert(other, d, path),
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

fn convert(schema: &Schema, v: &Json, path: &str) -> Result<Avro, EncodeError> {
    let mismatch = |want: &str| {
        err(path, format!("expected {want} for the topic's schema, found {}", kind(v)))
    };
    match schema {
        Schema::Null => v.is_null().then_some(Avro::Null).ok_or_else(|| mismatch("null")),
        Schema::Boolean => v.as_bool().map(Avro::Boolean).ok_or_else(|| mismatch("a boolean")),
        Schema::Int | Schema::Date | Schema::TimeMillis => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(|n| match schema {
                Schema::Date => Avro::Date(n),
                Schema::TimeMillis => Avro::TimeMillis(n),
                _ => Avro::Int(n),
            })
            .ok_or_else(|| mismatch("a 32-bit integer")),
        Schema::Long | Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimeMicros => v
            .as_i64()
            .map(|n| match schema {
                Schema::TimestampMillis => Avro::TimestampMillis(n),
                Schema::TimestampMicros => Avro::TimestampMicros(n),
                Schema::TimeMicros => Avro::TimeMicros(n),
                _ => Avro::Long(n),
            })
            .ok_or_else(|| mismatch("an integer")),
        Schema::Float => {
            v.as_f64().map(|f| Avro::Float(f as f32)).ok_or_else(|| mismatch("a number"))
        }
        Schema::Double => v.as_f64().map(Avro::Double).ok_or_else(|| mismatch("a number")),
        Schema::String => match v {
            Json::String(s) => Ok(Avro::String(s.clone())),
            Json::Object(_) | Json::Array(_) => Ok(Avro::String(v.to_string())),
            _ => Err(mismatch("a string")),
        },
        Schema::Bytes => v
            .as_str()
            .map(|s| Avro::Bytes(s.as_bytes().to_vec()))
            .ok_or_else(|| mismatch("a string")),
        Schema::Enum(e) => match v.as_str().and_then(|s| e.symbols.iter().position(|x| x == s)) {
            Some(i) => Ok(Avro::Enum(i as u32, e.symbols[i].clone())),
            None => Err(err(path, format!("expected one of {}", e.symbols.join(", ")))),
        },
        Schema::Array(a) => match v {
            Json::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, x)| convert(&a.items, x, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
                .map(Avro::Array),
            _ => Err(mismatch("an array")),
        },
        Schema::Map(m) => match v {
            Json::Object(o) => o
                .iter()
                .map(|(k, x)| Ok((k.clone(), convert(&m.types, x, &format!("{path}.{k}"))?)))
                .collect::<Result<std::collections::HashMap<_, _>, EncodeError>>()
                .map(Avro::Map),
            _ => Err(mismatch("an object")),
        },
        Schema::Record(_) => match v {
            Json::Object(o) => record(schema, o, path),
            _ => Err(mismatch("an object")),
        },
        Schema::Union(u) => {
            for (i, branch) in u.variants().iter().enumerate() {
                if let Ok(x) = convert(branch, v, path) {
                    return Ok(Avro::Union(i as u32, Box::new(x)));
                }
            }
            if v.is_null() {
                return Err(err(path, "is required by the topic's schema"));
            }
            Err(err(path, format!("{} fits no branch of the topic's schema's union", kind(v))))
        }
        other => Err(err(path, format!("the gateway cannot fill a field of Avro type {other:?}"))),
    }
}

/// The Avro value of a datum written with `writer`, refused before it is decoded when it
/// nests, claims lengths or multiplies values beyond [`crate::avro_bounds`].
pub(crate) fn read_datum(writer: &Schema, mut body: &[u8]) -> Result<Avro, String> {
    crate::avro_bounds::check(writer, body)
        .map_err(|e| format!("not an Avro value of its schema: {e}"))?;
    apache_avro::reader::datum::GenericDatumReader::builder(writer)
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
