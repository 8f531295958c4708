//! The fuzz targets: each takes one input, decodes it as the services do, and says `Err` only
//! for a broken property (a refused input is fine; a panic is caught by the driver).

use super::repo_file;
use apache_avro::Schema;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::OnceLock;
use tributary_core::Event;
use tributary_schema::codec::{decode_to_json, encode_record};
use tributary_schema::framing::{decode_message_indexes, encode_message_indexes};
use tributary_schema::json_text::{decode_to_json_text, decode_to_json_text_via_values};
use tributary_schema::protobuf::ProtoSchema;
use tributary_schema::{frame, unframe, Level, ParsedSchema, SchemaType};

/// The files of `fuzz/schemas/` ending in `ext`, plus the event schema of `schemas/`.
fn schema_texts(ext: &str) -> Vec<(String, String)> {
    let event = repo_file(&format!("schemas/event.{ext}"));
    let mut paths = vec![event];
    let dir = repo_file("fuzz/schemas");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fuzz/schemas")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    more.sort();
    paths.extend(more);
    paths
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).expect("schema file")))
        .collect()
}

/// The Avro schemas values are decoded with; the first is the event schema.
fn avro_schemas() -> &'static [Schema] {
    static SCHEMAS: OnceLock<Vec<Schema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        schema_texts("avsc")
            .iter()
            .map(|(name, text)| {
                let parsed = ParsedSchema::parse(SchemaType::Avro, text)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                parsed.avro().expect("an Avro schema").clone()
            })
            .collect()
    })
}

/// The Protobuf schemas values are decoded with; the first is the event schema.
fn proto_schemas() -> &'static [ProtoSchema] {
    static SCHEMAS: OnceLock<Vec<ProtoSchema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        schema_texts("proto")
            .iter()
            .map(|(name, text)| ProtoSchema::parse(text).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect()
    })
}

/// The fields the gateway encodes for an event (its `encode_framed`): the canonical JSON, with
/// the timestamp as epoch milliseconds.
fn gateway_fields(event: &Event) -> Result<Map<String, Value>, String> {
    let Ok(Value::Object(mut fields)) = serde_json::to_value(event) else {
        return Err("an event did not serialize to an object".into());
    };
    fields.insert("timestamp".into(), Value::from(event.timestamp_millis()));
    Ok(fields)
}

/// What a reader shows of an event after a trip through a schema: the fields the event has.
fn same_event(event: &Event, decoded: &Value, codec: &str) -> Result<(), String> {
    let expected = [
        ("event_id", Value::from(event.event_id.clone())),
        ("timestamp", Value::from(event.timestamp_millis())),
        ("event_type", Value::from(event.event_type.clone())),
        ("payload", Value::Object(event.payload.clone())),
    ];
    for (field, want) in expected {
        if decoded.get(field) != Some(&want) {
            return Err(format!(
                "{codec}: {field} came back as {:?}, not {want}",
                decoded.get(field)
            ));
        }
    }
    Ok(())
}

/// The gateway's body parsing and validation (`parse_json`, `Event::from_json`): a valid
/// event's canonical form is valid and the same event, and it round-trips through the event
/// schema in Avro and in Protobuf as the gateway writes it.
pub fn event_json(input: &[u8]) -> Result<(), String> {
    let Ok(value) = serde_json::from_slice::<Value>(input) else { return Ok(()) };
    let Ok(event) = Event::from_json(value) else { return Ok(()) };
    // The canonical form keeps milliseconds, so it is the event's fixed point (an event given
    // with nanoseconds is another value in memory, written the same).
    let canonical = event.to_json_bytes();
    let again: Value = serde_json::from_slice(&canonical)
        .map_err(|e| format!("the canonical form is not JSON: {e}"))?;
    let again =
        Event::from_json(again).map_err(|e| format!("the canonical form is not valid: {e}"))?;
    if again.to_json_bytes() != canonical {
        return Err(format!("the canonical form changed the event: {again:?} != {event:?}"));
    }
    let fields = gateway_fields(&event)?;
    let avro = &avro_schemas()[0];
    let bytes = encode_record(avro, &fields).map_err(|e| format!("avro encode: {e}"))?;
    same_event(&event, &decode_to_json(avro, &bytes)?, "avro")?;
    let proto = &proto_schemas()[0];
    let bytes = proto.encode(&fields).map_err(|e| format!("protobuf encode: {e}"))?;
    same_event(&event, &proto.decode_to_json(&bytes)?, "protobuf")
}

/// Confluent framing and Protobuf message indexes: what unframes frames back to the same
/// bytes, and decoded indexes encode to bytes that decode to the same indexes.
pub fn framing(input: &[u8]) -> Result<(), String> {
    match unframe(input) {
        Ok((id, body)) => {
            if frame(id, body) != input {
                return Err("frame(unframe(x)) != x".into());
            }
        }
        Err(_) if input.len() >= 5 && input[0] == 0 => {
            return Err("a value with the magic byte and an id was refused".into());
        }
        Err(_) => {}
    }
    for bytes in [input, input.get(5..).unwrap_or_default()] {
        if let Ok((indexes, rest)) = decode_message_indexes(bytes) {
            let mut encoded = encode_message_indexes(&indexes);
            encoded.extend_from_slice(rest);
            match decode_message_indexes(&encoded) {
                Ok((again, again_rest)) if again == indexes && again_rest == rest => {}
                other => return Err(format!("indexes {indexes:?} came back as {other:?}")),
            }
        }
    }
    Ok(())
}

/// Avro values (`codec::decode_to_json`, what the processor, the sink, `dlq` and the gateway's
/// read API use) with every schema of `fuzz/schemas`; what decodes with the event schema
/// encodes (as the gateway does) to bytes that decode to the same JSON.
pub fn avro_value(input: &[u8]) -> Result<(), String> {
    for (i, schema) in avro_schemas().iter().enumerate() {
        let mut text = Vec::new();
        let written = decode_to_json_text(schema, input, &mut text);
        // The direct reading and apache-avro's values give the same bytes or the same error.
        let mut via_values = Vec::new();
        let reference = decode_to_json_text_via_values(schema, input, &mut via_values);
        if reference != written || (written.is_ok() && via_values != text) {
            return Err(format!(
                "the direct text {:?} ({written:?}) differs from the values' {:?} ({reference:?})",
                String::from_utf8_lossy(&text),
                String::from_utf8_lossy(&via_values)
            ));
        }
        let Ok(json) = decode_to_json(schema, input) else {
            if written.is_ok() {
                return Err(format!("only the text decoding took {input:?}"));
            }
            continue;
        };
        let same = written.ok().and_then(|()| serde_json::from_slice::<Value>(&text).ok());
        if same.as_ref() != Some(&json) {
            return Err(format!("{json} was written as {:?}", String::from_utf8_lossy(&text)));
        }
        if i == 0 {
            let Value::Object(fields) = &json else {
                return Err(format!("an event record decoded to {json}"));
            };
            let bytes = encode_record(schema, fields)
                .map_err(|e| format!("decoded {json} but cannot encode it: {e}"))?;
            let again = decode_to_json(schema, &bytes)?;
            if again != json {
                return Err(format!("{json} came back as {again}"));
            }
        }
    }
    Ok(())
}

/// Protobuf values (message indexes, then the body) with every `.proto` of `fuzz/schemas`;
/// what decodes with the event schema encodes to bytes that decode to the same JSON.
pub fn protobuf_value(input: &[u8]) -> Result<(), String> {
    for (i, schema) in proto_schemas().iter().enumerate() {
        let Ok(json) = schema.decode_to_json(input) else { continue };
        if i == 0 && input.first() == Some(&0) {
            let Value::Object(fields) = &json else {
                return Err(format!("an event message decoded to {json}"));
            };
            let bytes = schema
                .encode(fields)
                .map_err(|e| format!("decoded {json} but cannot encode it: {e}"))?;
            let again = schema.decode_to_json(&bytes)?;
            if again != json {
                return Err(format!("{json} came back as {again}"));
            }
        }
    }
    Ok(())
}

/// Short values every parsed schema decodes: empty, zeros, union index 1 over and over,
/// continuation bytes, and each value-corpus seed's first bytes.
const PROBES: &[&[u8]] = &[
    b"",
    &[0; 32],
    &[2; 64],
    &[0xff; 16],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    b"\x06abc\x02\x00",
];

/// A schema (parsed or not) that fails because it is big, not because it is wrong.
fn gave_up(why: &str) -> bool {
    why.contains("gave up")
}

/// The registry's parsing of Avro schema text (`ParsedSchema::parse`): a schema that parses
/// has a canonical text that parses to the same canonical text, can read its own data, and
/// its decoder survives short hostile values.
pub fn avro_schema(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let Ok(parsed) = ParsedSchema::parse(SchemaType::Avro, &text) else { return Ok(()) };
    let again = ParsedSchema::parse(SchemaType::Avro, &parsed.canonical)
        .map_err(|e| format!("the canonical text does not parse: {e}"))?;
    if again.canonical != parsed.canonical {
        return Err("the canonical text is not canonical".into());
    }
    if let Err(why) = ParsedSchema::can_read(&parsed, &parsed) {
        if !gave_up(&why) {
            return Err(format!("a schema cannot read its own data: {why}"));
        }
    }
    let _ = Level::FullTransitive.check(&parsed, &[&again]);
    let avro = parsed.avro().ok_or("an Avro schema without its Avro")?;
    for probe in PROBES {
        let _ = decode_to_json(avro, probe);
    }
    Ok(())
}

/// The registry's parsing of Protobuf schemas (`.proto` text or a base64 descriptor): a schema
/// that parses reads its own data and its decoder survives short hostile values.
pub fn protobuf_schema(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let Ok(parsed) = ParsedSchema::parse(SchemaType::Protobuf, &text) else { return Ok(()) };
    if let Err(why) = ParsedSchema::can_read(&parsed, &parsed) {
        return Err(format!("a schema cannot read its own data: {why}"));
    }
    let proto = parsed.proto().ok_or("a Protobuf schema without its descriptor")?;
    for probe in PROBES {
        let _ = proto.decode_to_json(probe);
    }
    Ok(())
}

/// JSON Schema text: the registry refuses the type, whatever the text.
pub fn json_schema(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    match ParsedSchema::parse(SchemaType::Json, &text) {
        Err(_) => Ok(()),
        Ok(_) => Err("a JSON schema was accepted; fuzz what accepts it".into()),
    }
}
