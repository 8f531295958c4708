//! Schema types, parsing, identity, and compatibility levels with the checks they imply.
//!
//! Compatibility is decided by each format's own resolution rules: for Avro, whether a reader
//! schema can decode data written with a writer schema (fields added with defaults, removed
//! fields, numeric and string/bytes promotions, unions, enums with defaults, nested and named
//! records), as the Avro specification defines schema resolution.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A schema format the registry understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    #[default]
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avro => "AVRO",
            Self::Protobuf => "PROTOBUF",
            Self::Json => "JSON",
        }
    }

    /// Parses a `schemaType` as clients send it (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Some(Self::Avro),
            "PROTOBUF" => Some(Self::Protobuf),
            "JSON" => Some(Self::Json),
            _ => None,
        }
    }
}

/// A schema that parsed, with the text that identifies it.
#[derive(Debug, Clone)]
pub struct ParsedSchema {
    pub schema_type: SchemaType,
    /// The normalized text: the same schema written with other whitespace or key order has the
    /// same canonical text, and so the same id.
    pub canonical: String,
    avro: Option<apache_avro::Schema>,
    proto: Option<crate::protobuf::ProtoSchema>,
}

/// Why a schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchema(pub String);

impl ParsedSchema {
    /// Parses and validates `text` as a schema of `schema_type`.
    pub fn parse(schema_type: SchemaType, text: &str) -> Result<Self, InvalidSchema> {
        match schema_type {
            SchemaType::Avro => {
                let json: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| InvalidSchema(format!("invalid Avro schema: not JSON: {e}")))?;
                let avro = apache_avro::Schema::parse(&json)
                    .map_err(|e| InvalidSchema(format!("invalid Avro schema: {e}")))?;
                // apache-avro parses a name defined twice; no reader could decode with it.
                apache_avro::schema::ResolvedSchema::try_from(&avro)
                    .map_err(|e| InvalidSchema(format!("invalid Avro schema: {e}")))?;
                let canonical = serde_json::to_string(&json).unwrap_or_default();
                Ok(Self { schema_type, canonical, avro: Some(avro), proto: None })
            }
            SchemaType::Protobuf => {
                let proto = crate::protobuf::ProtoSchema::parse(text).map_err(InvalidSchema)?;
                // .proto text has no normal form short of a printer; identity is the text with
                // surrounding whitespace removed.
                Ok(Self {
                    schema_type,
                    canonical: text.trim().to_owned(),
                    avro: None,
                    proto: Some(proto),
                })
            }
            other => Err(InvalidSchema(format!(
                "schema type {} is not supported by this registry yet; use AVRO or PROTOBUF",
                other.as_str()
            ))),
        }
    }

    /// The parsed `.proto` file, for Protobuf schemas.
    pub fn proto(&self) -> Option<&crate::protobuf::ProtoSchema> {
        self.proto.as_ref()
    }

    /// The Avro schema, for Avro schemas.
    pub fn avro(&self) -> Option<&apache_avro::Schema> {
        self.avro.as_ref()
    }

    /// Whether data written with `writer` can be read with `reader`. `Err` says why not.
    pub fn can_read(writer: &Self, reader: &Self) -> Result<(), String> {
        if let (Some(w), Some(r)) = (&writer.proto, &reader.proto) {
            return crate::protobuf::ProtoSchema::can_read(w, r);
        }
        match (&writer.avro, &reader.avro) {
            (Some(w), Some(r)) => crate::avro::can_read(w, r),
            _ => Err(format!(
                "cannot compare a {} schema with a {} schema",
                writer.schema_type.as_str(),
                reader.schema_type.as_str()
            )),
        }
    }
}

/// A subject's compatibility level, with Confluent's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }

    /// Checks `new` against the subject's live versions, oldest first. Returns the reasons
    /// it is incompatible, empty when it is compatible.
    pub fn check(self, new: &ParsedSchema, existing: &[&ParsedSchema]) -> Vec<String> {
        let against: &[&ParsedSchema] = match self {
            Self::None => return Vec::new(),
            Self::Backward | Self::Forward | Self::Full => {
                existing.last().map_or(&[][..], std::slice::from_ref)
            }
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive => existing,
        };
        let backward = matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        );
        let forward = matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        );
        let mut reasons = Vec::new();
        for old in against {
            if backward {
                if let Err(e) = ParsedSchema::can_read(old, new) {
                    reasons.push(format!(
                        "the new schema cannot read data written with an existing version: {e}"
                    ));
                }
            }
            if forward {
                if let Err(e) = ParsedSchema::can_read(new, old) {
                    reasons.push(format!(
                        "an existing version cannot read data written with the new schema: {e}"
                    ));
                }
            }
        }
        reasons
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(text: &str) -> ParsedSchema {
        ParsedSchema::parse(SchemaType::Avro, text).expect("valid Avro")
    }

    fn record(fields: &str) -> ParsedSchema {
        avro(&format!(r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#))
    }

    fn reads(writer: &ParsedSchema, reader: &ParsedSchema) -> bool {
        ParsedSchema::can_read(writer, reader).is_ok()
    }

    #[test]
    fn identity_ignores_formatting_not_content() {
        let a =
            avro(r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}"#);
        let b = avro(r#"{"fields":[{"type":"int","name":"a"}],"name":"R","type":"record"}"#);
        assert_eq!(a.canonical, b.canonical);
        let c =
            avro(r#"{"type":"record","name":"R","doc":"x","fields":[{"name":"a","type":"int"}]}"#);
        assert_ne!(a.canonical, c.canonical);
    }

    #[test]
    fn invalid_schemas_are_refused_with_a_reason() {
        for bad in [
            r#"{"type":"record"}"#,
            "not json",
            r#"{"type":"nope"}"#,
            r#"{"type":"enum","name":"E","symbols":["A","A"]}"#,
            // A name defined twice parses, but no reader could decode with it (found by the
            // schema-avro fuzz target, seed 12).
            r#"{"type":"record","name":"X1","fields":[
                {"name":"f","type":["null",{"type":"record","name":"X1","fields":[]}]}]}"#,
        ] {
            let err = ParsedSchema::parse(SchemaType::Avro, bad).expect_err(bad);
            assert!(err.0.starts_with("invalid Avro schema"), "{bad}: {err}");
        }
    }

    /// Avro resolution rules, one row each: (writer, reader, readable).
    #[test]
    fn avro_resolution_rules() {
        let int = r#"{"name":"a","type":"int"}"#;
        let long = r#"{"name":"a","type":"long"}"#;
        let float = r#"{"name":"a","type":"float"}"#;
        let double = r#"{"name":"a","type":"double"}"#;
        let string = r#"{"name":"a","type":"string"}"#;
        let bytes = r#"{"name":"a","type":"bytes"}"#;
        let rows: Vec<(&str, ParsedSchema, ParsedSchema, bool)> = vec![
            ("same", record(int), record(int), true),
            ("int promotes to long", record(int), record(long), true),
            ("int promotes to float", record(int), record(float), true),
            ("int promotes to double", record(int), record(double), true),
            ("long promotes to double", record(long), record(double), true),
            ("float promotes to double", record(float), record(double), true),
            ("long does not narrow to int", record(long), record(int), false),
            ("double does not narrow to float", record(double), record(float), false),
            ("string reads as bytes", record(string), record(bytes), true),
            ("bytes read as string", record(bytes), record(string), true),
            ("string is not int", record(string), record(int), false),
            (
                "added field with default",
                record(int),
                record(&format!(r#"{int},{{"name":"b","type":"string","default":"x"}}"#)),
                true,
            ),
            (
                "added field without default",
                record(int),
                record(&format!(r#"{int},{{"name":"b","type":"string"}}"#)),
                false,
            ),
            (
                "removed field",
                record(&format!(r#"{int},{{"name":"b","type":"string"}}"#)),
                record(int),
                true,
            ),
            (
                "field renamed with alias",
                record(int),
                record(r#"{"name":"z","type":"int","aliases":["a"]}"#),
                true,
            ),
            (
                "writer type into reader union",
                record(int),
                record(r#"{"name":"a","type":["null","int"]}"#),
                true,
            ),
            (
                "writer union into narrower reader",
                record(r#"{"name":"a","type":["null","int"]}"#),
                record(int),
                false,
            ),
            (
                "union with promotion",
                record(r#"{"name":"a","type":["null","int"]}"#),
                record(r#"{"name":"a","type":["null","long"]}"#),
                true,
            ),
            (
                "union branch added",
                record(r#"{"name":"a","type":["null","int"]}"#),
                record(r#"{"name":"a","type":["null","int","string"]}"#),
                true,
            ),
            (
                "union branch removed",
                record(r#"{"name":"a","type":["null","int","string"]}"#),
                record(r#"{"name":"a","type":["null","int"]}"#),
                false,
            ),
            (
                "enum symbol added",
                record(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["A"]}}"#),
                record(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#),
                true,
            ),
            (
                "enum symbol removed",
                record(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#),
                record(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["A"]}}"#),
                false,
            ),
            (
                "enum symbol removed, reader default",
                record(r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#),
                record(
                    r#"{"name":"a","type":{"type":"enum","name":"E","symbols":["A"],"default":"A"}}"#,
                ),
                true,
            ),
            (
                "array items promote",
                record(r#"{"name":"a","type":{"type":"array","items":"int"}}"#),
                record(r#"{"name":"a","type":{"type":"array","items":"long"}}"#),
                true,
            ),
            (
                "map values must match",
                record(r#"{"name":"a","type":{"type":"map","values":"string"}}"#),
                record(r#"{"name":"a","type":{"type":"map","values":"int"}}"#),
                false,
            ),
            (
                "fixed size must match",
                record(r#"{"name":"a","type":{"type":"fixed","name":"F","size":4}}"#),
                record(r#"{"name":"a","type":{"type":"fixed","name":"F","size":8}}"#),
                false,
            ),
            (
                "nested record gains defaulted field",
                record(
                    r#"{"name":"a","type":{"type":"record","name":"N","fields":[{"name":"x","type":"int"}]}}"#,
                ),
                record(
                    r#"{"name":"a","type":{"type":"record","name":"N","fields":[{"name":"x","type":"int"},{"name":"y","type":"int","default":0}]}}"#,
                ),
                true,
            ),
            (
                "nested record gains required field",
                record(
                    r#"{"name":"a","type":{"type":"record","name":"N","fields":[{"name":"x","type":"int"}]}}"#,
                ),
                record(
                    r#"{"name":"a","type":{"type":"record","name":"N","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}}"#,
                ),
                false,
            ),
            (
                "record name must match",
                avro(r#"{"type":"record","name":"A","fields":[]}"#),
                avro(r#"{"type":"record","name":"B","fields":[]}"#),
                false,
            ),
            (
                "record renamed with alias",
                avro(r#"{"type":"record","name":"A","namespace":"n","fields":[]}"#),
                avro(r#"{"type":"record","name":"B","namespace":"n","aliases":["A"],"fields":[]}"#),
                true,
            ),
            (
                "null only into union with null",
                avro(r#""null""#),
                avro(r#"["null","string"]"#),
                true,
            ),
            (
                "logical date reads as int",
                avro(r#"{"type":"int","logicalType":"date"}"#),
                avro(r#""int""#),
                true,
            ),
            (
                "timestamp-millis promotes like long",
                avro(r#"{"type":"long","logicalType":"timestamp-millis"}"#),
                avro(r#""double""#),
                true,
            ),
            (
                "recursive list",
                avro(
                    r#"{"type":"record","name":"L","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","L"]}]}"#,
                ),
                avro(
                    r#"{"type":"record","name":"L","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","L"]}]}"#,
                ),
                true,
            ),
            (
                "recursive list, incompatible inside",
                avro(
                    r#"{"type":"record","name":"L","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","L"]}]}"#,
                ),
                avro(
                    r#"{"type":"record","name":"L","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","L"]}]}"#,
                ),
                false,
            ),
        ];
        for (name, writer, reader, expected) in rows {
            assert_eq!(reads(&writer, &reader), expected, "{name}");
        }
    }

    #[test]
    fn levels_check_the_right_direction_and_history() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        // v2 adds a required field: old data cannot be read by it (not BACKWARD), but old
        // readers can read new data (FORWARD).
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
        // v3 drops `a` and keeps `b`: readable from v2 only.
        let v3 = record(r#"{"name":"b","type":"int"}"#);
        assert!(!Level::Backward.check(&v2, &[&v1]).is_empty());
        assert!(Level::Forward.check(&v2, &[&v1]).is_empty());
        assert!(!Level::Full.check(&v2, &[&v1]).is_empty());
        assert!(Level::None.check(&v2, &[&v1]).is_empty());
        // Against only the latest version, v3 is backward compatible with v2...
        assert!(Level::Backward.check(&v3, &[&v1, &v2]).is_empty());
        // ...but not with v1 (it needs `b`, which v1 data lacks): transitive catches it.
        assert!(!Level::BackwardTransitive.check(&v3, &[&v1, &v2]).is_empty());
        // Forward: v2 readers need `a`, which v3 data lacks.
        assert!(!Level::Forward.check(&v3, &[&v1, &v2]).is_empty());
        assert!(!Level::ForwardTransitive.check(&v3, &[&v1, &v2]).is_empty());
        assert!(!Level::FullTransitive.check(&v3, &[&v1, &v2]).is_empty());
        // Nothing to compare with: anything goes.
        assert!(Level::FullTransitive.check(&v3, &[]).is_empty());
    }

    #[test]
    fn level_names_are_confluents() {
        for l in [
            Level::Backward,
            Level::BackwardTransitive,
            Level::Forward,
            Level::ForwardTransitive,
            Level::Full,
            Level::FullTransitive,
            Level::None,
        ] {
            assert_eq!(Level::parse(l.as_str()), Some(l));
            assert_eq!(serde_json::to_value(l).expect("json"), serde_json::json!(l.as_str()));
        }
        assert_eq!(Level::parse("backward"), Some(Level::Backward));
        assert_eq!(Level::parse("SIDEWAYS"), None);
    }
}
