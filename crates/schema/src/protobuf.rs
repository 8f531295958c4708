//! Protobuf schemas: parsing `.proto` text, compatibility by the wire format's rules, and
//! encoding JSON records as the file's first message (Confluent's message index `[0]`).
//!
//! Compatibility follows what a Protobuf reader tolerates on the wire and what Confluent's
//! registry checks: fields are matched by number; a field may change between wire-compatible
//! scalar kinds (int32/uint32/int64/uint64/bool; sint32/sint64; fixed32/sfixed32;
//! fixed64/sfixed64; string/bytes) but not across them, nor between singular and repeated,
//! nor to another message or enum type; removing an optional field is fine (readers skip
//! unknown fields), adding a `required` (proto2) field is not; a message the writer uses may
//! not disappear; the package and the syntax may not change.

use crate::codec::EncodeError;
use prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FileDescriptor, Kind, MessageDescriptor, Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::{Map, Value as Json};

const FILE_NAME: &str = "schema.proto";

/// Deepest nesting of `{`, `[`, `(` and `<` in `.proto` text. protox bounds nested messages
/// (31) but parses an option's message literal recursively without a limit: 5,000 nested `{`
/// in a 50 KB schema overflowed a 2 MiB stack and aborted the registry.
pub const MAX_TEXT_NESTING: usize = 64;

/// Refuses `.proto` text that nests brackets deeper than [`MAX_TEXT_NESTING`], outside
/// strings and comments.
fn check_nesting(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '\n' => break,
                        d if d == c => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                chars.find(|&d| d == '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for d in chars.by_ref() {
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            '{' | '[' | '(' | '<' => {
                depth += 1;
                if depth > MAX_TEXT_NESTING {
                    return Err(format!(
                        "invalid Protobuf schema: it nests brackets deeper than {MAX_TEXT_NESTING} levels"
                    ));
                }
            }
            '}' | ']' | ')' | '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A parsed `.proto` file.
#[derive(Debug, Clone)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

struct Single(File);

impl FileResolver for Single {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == FILE_NAME {
            Ok(self.0.clone())
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Confluent's newer clients (confluent-kafka for Python, for one) register a Protobuf schema
/// as a base64-encoded `FileDescriptorProto` rather than as `.proto` text.
/// `None` when `text` is not one; `Some(Err)` for a descriptor this registry refuses.
fn descriptor_file(text: &str) -> Option<Result<File, String>> {
    use base64::Engine as _;
    let trimmed = text.trim();
    if trimmed.contains(char::is_whitespace) || trimmed.contains(';') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(trimmed).ok()?;
    let file = File::decode_file_descriptor_proto(bytes.as_slice()).ok()?;
    let mut descriptor = file.file_descriptor_proto().clone();
    descriptor.name = Some(FILE_NAME.to_owned());
    // prost-reflect 0.16 panics (an index out of bounds while it describes the error) on a
    // syntax it does not know; the fuzz corpus's descriptor-unknown-syntax.hex found it.
    if !matches!(descriptor.syntax.as_deref(), None | Some("proto2" | "proto3")) {
        return Some(Err(
            "invalid Protobuf schema: the descriptor's syntax is not proto2 or proto3".to_owned(),
        ));
    }
    Some(Ok(File::from_file_descriptor_proto(descriptor)))
}

/// Compiles the schema's file with Google's well-known types available.
fn compile(file: File) -> Result<FileDescriptor, String> {
    // Without the source positions: each error the compiler finds looked its position up in a
    // list as long as the file, so 17,000 duplicate fields in 256 KiB took about a minute (the
    // fuzz corpus's duplicate-fields.proto). Errors still name the field.
    let mut descriptor = file.file_descriptor_proto().clone();
    descriptor.source_code_info = None;
    let file = File::from_file_descriptor_proto(descriptor);
    let mut chain = ChainFileResolver::new();
    chain.add(Single(file));
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    compiler.open_file(FILE_NAME).map_err(|e| format!("invalid Protobuf schema: {e}"))?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name(FILE_NAME)
        .ok_or_else(|| "invalid Protobuf schema: the file did not compile".to_owned())
}

impl ProtoSchema {
    /// Parses `.proto` text, or a base64-encoded `FileDescriptorProto` (imports of Google's
    /// well-known types are available).
    pub fn parse(text: &str) -> Result<Self, String> {
        let file = match descriptor_file(text) {
            Some(f) => f?,
            None => {
                check_nesting(text)?;
                File::from_source(FILE_NAME, text)
                    .map_err(|e| format!("invalid Protobuf schema: {e}"))?
            }
        };
        // A panic of the compiler on hostile text is a refused schema, not a dead connection
        // (or, while the registry replays `_schemas`, a dead registry).
        let file = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compile(file)))
            .unwrap_or_else(|_| {
                Err("invalid Protobuf schema: the Protobuf compiler failed on it".to_owned())
            })?;
        if file.messages().next().is_none() {
            return Err("invalid Protobuf schema: it defines no message".to_owned());
        }
        Ok(Self { file })
    }

    /// The message at a Confluent message-index path (`[0]` is the first top-level message).
    pub fn message(&self, indexes: &[i32]) -> Option<MessageDescriptor> {
        let (&first, rest) = indexes.split_first()?;
        let mut m = self.file.messages().nth(usize::try_from(first).ok()?)?;
        for &i in rest {
            let child = m.child_messages().nth(usize::try_from(i).ok()?)?;
            m = child;
        }
        Some(m)
    }

    /// Whether data written with `writer` can be read with `reader`; `Err` says where not.
    pub fn can_read(writer: &Self, reader: &Self) -> Result<(), String> {
        let (w, r) = (&writer.file, &reader.file);
        if w.package_name() != r.package_name() {
            return Err(format!(
                "the package changed from {:?} to {:?}",
                w.package_name(),
                r.package_name()
            ));
        }
        if w.syntax() != r.syntax() {
            return Err("the syntax (proto2/proto3) changed".to_owned());
        }
        let mut stack: Vec<MessageDescriptor> = w.messages().collect();
        while let Some(wm) = stack.pop() {
            stack.extend(wm.child_messages().filter(|m| !m.is_map_entry()));
            let Some(rm) = r.parent_pool().get_message_by_name(wm.full_name()) else {
                return Err(format!("message {} was removed", wm.full_name()));
            };
            check_message(&wm, &rm)?;
        }
        Ok(())
    }

    /// Encodes `fields` as the first message: message indexes, then the body.
    pub fn encode(&self, fields: &Map<String, Json>) -> Result<Vec<u8>, EncodeError> {
        let desc = self.message(&[0]).ok_or_else(|| err("$", "the schema has no message"))?;
        let mut msg = DynamicMessage::new(desc.clone());
        for f in desc.fields() {
            match fields.get(f.name()) {
                Some(v) if !v.is_null() => {
                    let value = to_value(&f.kind(), v, f.name(), f.is_list())?;
                    msg.try_set_field(&f, value).map_err(|e| err(f.name(), e.to_string()))?;
                }
                _ if f.cardinality() == Cardinality::Required => {
                    return Err(err(f.name(), "is required by the topic's schema"));
                }
                _ => {}
            }
        }
        let mut out = crate::framing::encode_message_indexes(&[0]);
        msg.encode(&mut out).map_err(|e| err("$", e.to_string()))?;
        Ok(out)
    }

    /// Decodes message indexes and body into JSON with the `.proto` field names.
    pub fn decode_to_json(&self, bytes: &[u8]) -> Result<Json, String> {
        let (indexes, body) =
            crate::framing::decode_message_indexes(bytes).map_err(|e| e.to_string())?;
        let desc = self
            .message(&indexes)
            .ok_or_else(|| format!("no message at index path {indexes:?}"))?;
        let msg = DynamicMessage::decode(desc.clone(), body)
            .map_err(|e| format!("not a Protobuf value of its schema: {e}"))?;
        let options = prost_reflect::SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false);
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        msg.serialize_with_options(&mut ser, &options).map_err(|e| e.to_string())?;
        let mut json: Json = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
        if let Json::Object(o) = &mut json {
            // Proto3 JSON leaves out a field at its default (a timestamp of 0); a reader of the
            // top-level message expects every field without presence, as Avro gives them.
            for f in desc.fields().filter(|f| !f.supports_presence() && !f.is_list() && !f.is_map())
            {
                if !o.contains_key(f.name()) {
                    o.insert(f.name().to_owned(), default_json(&f.kind()));
                }
            }
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
        }
        Ok(json)
    }
}

/// The JSON of a scalar field at its default value, as the proto3 JSON mapping writes it.
fn default_json(kind: &Kind) -> Json {
    match kind {
        Kind::Bool => Json::Bool(false),
        Kind::String | Kind::Bytes => Json::String(String::new()),
        Kind::Float | Kind::Double => Json::from(0.0),
        Kind::Enum(e) => Json::String(e.default_value().name().to_owned()),
        Kind::Message(_) => Json::Null,
        _ => Json::from(0),
    }
}

fn err(field: &str, message: impl Into<String>) -> EncodeError {
    EncodeError { field: field.to_owned(), message: message.into() }
}

/// Scalar kinds that share a wire encoding and read each other's values.
fn wire_group(k: &Kind) -> u8 {
    match k {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::Fixed32 | Kind::Sfixed32 => 2,
        Kind::Fixed64 | Kind::Sfixed64 => 3,
        Kind::String | Kind::Bytes => 4,
        Kind::Float => 5,
        Kind::Double => 6,
        Kind::Enum(_) => 7,
        Kind::Message(_) => 8,
    }
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

fn check_message(w: &MessageDescriptor, r: &MessageDescriptor) -> Result<(), String> {
    for wf in w.fields() {
        let Some(rf) = r.get_field(wf.number()) else { continue };
        let at = format!("{}.{} (field {})", r.full_name(), rf.name(), rf.number());
        let (wk, rk) = (wf.kind(), rf.kind());
        let same_type = match (&wk, &rk) {
            (Kind::Message(a), Kind::Message(b)) => a.full_name() == b.full_name(),
            (Kind::Enum(a), Kind::Enum(b)) => a.full_name() == b.full_name(),
            _ => wire_group(&wk) == wire_group(&rk),
        };
        if !same_type {
            return Err(format!(
                "{at}: type changed from {} to {}",
                kind_name(&wk),
                kind_name(&rk)
            ));
        }
        if wf.is_list() != rf.is_list() || wf.is_map() != rf.is_map() {
            return Err(format!("{at}: changed between singular and repeated"));
        }
    }
    for rf in r.fields() {
        if rf.cardinality() == Cardinality::Required && w.get_field(rf.number()).is_none() {
            return Err(format!("{}.{}: a required field was added", r.full_name(), rf.name()));
        }
    }
    Ok(())
}

fn to_value(kind: &Kind, v: &Json, path: &str, list: bool) -> Result<Value, EncodeError> {
    if list {
        let Json::Array(items) = v else {
            return Err(err(path, "expected an array for the topic's schema"));
        };
        return items
            .iter()
            .map(|x| to_value(kind, x, path, false))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List);
    }
    let bad = |want: &str| err(path, format!("expected {want} for the topic's schema"));
    Ok(match kind {
        Kind::String => match v {
            Json::String(s) => Value::String(s.clone()),
            Json::Object(_) | Json::Array(_) => Value::String(v.to_string()),
            _ => return Err(bad("a string")),
        },
        Kind::Bytes => {
            Value::Bytes(v.as_str().ok_or_else(|| bad("a string"))?.as_bytes().to_vec().into())
        }
        Kind::Bool => Value::Bool(v.as_bool().ok_or_else(|| bad("a boolean"))?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(v.as_i64().ok_or_else(|| bad("an integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::U64(v.as_u64().ok_or_else(|| bad("a non-negative integer"))?)
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| bad("a 32-bit integer"))?,
        ),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("a 32-bit unsigned integer"))?,
        ),
        Kind::Double => Value::F64(v.as_f64().ok_or_else(|| bad("a number"))?),
        Kind::Float => Value::F32(v.as_f64().ok_or_else(|| bad("a number"))? as f32),
        Kind::Enum(e) => {
            let name = v.as_str().ok_or_else(|| bad("an enum name"))?;
            Value::EnumNumber(
                e.get_value_by_name(name).ok_or_else(|| bad("a value of the enum"))?.number(),
            )
        }
        Kind::Message(m) => {
            return Err(err(
                path,
                format!("the gateway cannot fill a field of message type {}", m.full_name()),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EVENT: &str = include_str!("../../../schemas/event.proto");

    fn proto(body: &str) -> ProtoSchema {
        ProtoSchema::parse(&format!("syntax = \"proto3\";\npackage t;\n{body}"))
            .expect("valid proto")
    }

    #[test]
    fn the_event_schema_round_trips() {
        let schema = ProtoSchema::parse(EVENT).expect("schemas/event.proto parses");
        let fields = json!({"event_id": "e1", "timestamp": 1_796_040_000_250i64, "event_type": "click",
                            "user_id": "u1", "payload": {"url": "/"}});
        let bytes = schema.encode(fields.as_object().expect("object")).expect("encodes");
        assert_eq!(bytes[0], 0, "message index [0]");
        let back = schema.decode_to_json(&bytes).expect("decodes");
        assert_eq!(back["event_id"], "e1");
        assert_eq!(back["timestamp"], 1_796_040_000_250i64);
        assert_eq!(back["payload"], json!({"url": "/"}));
        assert_eq!(back["user_id"], "u1");
    }

    #[test]
    fn deep_brackets_are_refused_before_parsing() {
        let literal = format!("{}1{}", "{ a: ".repeat(5_000), " }".repeat(5_000));
        let text = format!(
            "syntax = \"proto3\"; package p; import \"google/protobuf/descriptor.proto\";
             extend google.protobuf.MessageOptions {{ Lit lit = 50000; }}
             message Lit {{ Lit a = 1; }} message M {{ option (lit) = {literal}; }}"
        );
        let err = ProtoSchema::parse(&text).expect_err("too deep");
        assert!(err.contains("deeper than 64"), "{err}");
        let brackets = |c: &str| c.repeat(MAX_TEXT_NESTING + 1);
        let quoted = format!(
            "syntax = \"proto3\"; package p; // {}\nmessage M {{ string s = 1 [json_name = \"{}\"]; }} /* {} */",
            brackets("{"),
            brackets("["),
            brackets("(")
        );
        ProtoSchema::parse(&quoted).expect("brackets in comments and strings do not count");
    }

    #[test]
    fn fields_at_their_default_are_shown() {
        let schema = ProtoSchema::parse(EVENT).expect("schemas/event.proto parses");
        let fields = json!({"event_id": "e1", "timestamp": 0, "event_type": "t", "payload": {}});
        let bytes = schema.encode(fields.as_object().expect("object")).expect("encodes");
        let back = schema.decode_to_json(&bytes).expect("decodes");
        assert_eq!(back["timestamp"], 0, "{back}");
        assert_eq!(back.get("user_id"), None, "an optional field stays absent: {back}");
    }

    #[test]
    fn base64_descriptors_parse_like_text() {
        use base64::Engine as _;
        let text = ProtoSchema::parse(EVENT).expect("text");
        let proto = text.file.file_descriptor_proto().clone();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(prost::Message::encode_to_vec(&proto));
        let from_descriptor = ProtoSchema::parse(&encoded).expect("descriptor");
        assert_eq!(
            from_descriptor.message(&[0]).expect("message").full_name(),
            "dev.tributary.Event"
        );
        assert!(ProtoSchema::can_read(&text, &from_descriptor).is_ok());
    }

    #[test]
    fn invalid_text_is_refused() {
        for bad in [
            "not proto",
            "syntax = \"proto3\"; message M { string a = 1; string b = 1; }",
            "syntax = \"proto3\"; package x;",
        ] {
            assert!(ProtoSchema::parse(bad).is_err(), "{bad}");
        }
    }

    /// Protobuf rules, one row each: (writer, reader, readable).
    #[test]
    fn wire_compatibility_rules() {
        let rows = [
            ("same", "message M { string a = 1; }", "message M { string a = 1; }", true),
            (
                "field added",
                "message M { string a = 1; }",
                "message M { string a = 1; int64 b = 2; }",
                true,
            ),
            (
                "field removed",
                "message M { string a = 1; int64 b = 2; }",
                "message M { string a = 1; }",
                true,
            ),
            ("field renamed", "message M { string a = 1; }", "message M { string z = 1; }", true),
            ("int32 to int64", "message M { int32 a = 1; }", "message M { int64 a = 1; }", true),
            ("string to bytes", "message M { string a = 1; }", "message M { bytes a = 1; }", true),
            ("string to int64", "message M { string a = 1; }", "message M { int64 a = 1; }", false),
            ("int32 to sint32", "message M { int32 a = 1; }", "message M { sint32 a = 1; }", false),
            (
                "fixed32 to sfixed32",
                "message M { fixed32 a = 1; }",
                "message M { sfixed32 a = 1; }",
                true,
            ),
            ("double to float", "message M { double a = 1; }", "message M { float a = 1; }", false),
            (
                "singular to repeated",
                "message M { string a = 1; }",
                "message M { repeated string a = 1; }",
                false,
            ),
            (
                "message type changed",
                "message A {} message B {} message M { A a = 1; }",
                "message A {} message B {} message M { B a = 1; }",
                false,
            ),
            (
                "message removed",
                "message M { string a = 1; } message N {}",
                "message M { string a = 1; }",
                false,
            ),
        ];
        for (name, w, r, expected) in rows {
            assert_eq!(ProtoSchema::can_read(&proto(w), &proto(r)).is_ok(), expected, "{name}");
        }
        let pkg =
            ProtoSchema::parse("syntax = \"proto3\"; package other; message M { string a = 1; }")
                .expect("proto");
        assert!(
            ProtoSchema::can_read(&proto("message M { string a = 1; }"), &pkg).is_err(),
            "package changed"
        );
        let p2 = |body: &str| {
            ProtoSchema::parse(&format!("syntax = \"proto2\"; package t; {body}")).expect("proto2")
        };
        assert!(
            ProtoSchema::can_read(
                &p2("message M { optional string a = 1; }"),
                &p2("message M { optional string a = 1; required int32 b = 2; }")
            )
            .is_err(),
            "required added"
        );
    }
}
