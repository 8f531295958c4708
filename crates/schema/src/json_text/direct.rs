//! The direct reading of [`super::decode_to_json_text`]: the JSON text of an Avro datum
//! written while its bytes are read, with no apache-avro value in between. It covers the common
//! types; anything else ends the reading with [`Unsupported`] and the values path takes over.

use super::{bytes, float, is_json_object, number, string};
use crate::avro_bounds::Names;
use apache_avro::schema::NamespaceRef;
use apache_avro::Schema;

/// Writes the JSON text of `body`, a datum of `names`' schema that [`crate::avro_bounds`]
/// passed, to `out`; on `Err`, `out` may hold part of it.
pub(super) fn write<'a>(
    names: &Names<'a>,
    body: &'a [u8],
    out: &mut Vec<u8>,
) -> Result<(), Unsupported> {
    let mut direct = Direct { names, bytes: body, pos: 0, scratch: Vec::new(), spans: Vec::new() };
    direct.value(names.schema(), None, Field::Top, out)
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
pub(super) struct Unsupported;

impl From<String> for Unsupported {
    fn from(_: String) -> Self {
        Unsupported
    }
}

/// Reads a datum that [`crate::avro_bounds`] passed and writes its JSON text. `'a` is both the
/// schema's and the bytes' (keys come from either).
struct Direct<'a, 'r> {
    names: &'r Names<'a>,
    bytes: &'a [u8],
    pos: usize,
    /// Field values of records and maps, written here first and then copied out in key order.
    scratch: Vec<u8>,
    /// Per record or map being read, its keys with their values' ranges in `scratch`, a stack:
    /// each takes the entries past the length it found and leaves the length as it was.
    spans: Vec<(&'a str, usize, usize)>,
}

impl<'a> Direct<'a, '_> {
    fn long(&mut self) -> Result<i64, Unsupported> {
        Ok(crate::avro_bounds::read_long(self.bytes, &mut self.pos)?)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Unsupported> {
        let bytes: &'a [u8] = self.bytes;
        let end = self.pos.checked_add(n).filter(|&e| e <= bytes.len()).ok_or(Unsupported)?;
        let taken = &bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn sized(&mut self) -> Result<&'a [u8], Unsupported> {
        let n = usize::try_from(self.long()?).map_err(|_| Unsupported)?;
        self.take(n)
    }

    fn text(&mut self) -> Result<&'a str, Unsupported> {
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
        schema: &'a Schema,
        ns: NamespaceRef<'a>,
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
                let mut values = std::mem::take(&mut self.scratch);
                let (base, first) = (values.len(), self.spans.len());
                while let n @ 1.. = self.block()? {
                    for _ in 0..n {
                        let key = self.text()?;
                        let from = values.len();
                        self.value(&m.types, ns, Field::Other, &mut values)?;
                        self.spans.push((key, from, values.len()));
                    }
                }
                // Keys in order; a key that repeats keeps its last value, as a map does: the
                // last is first among equal keys once reversed and sorted stably.
                let entries = &mut self.spans[first..];
                entries.reverse();
                entries.sort_by_key(|e| e.0);
                let kept = entries
                    .iter()
                    .enumerate()
                    .filter(|&(i, e)| i == 0 || entries[i - 1].0 != e.0)
                    .map(|(_, e)| *e);
                let written = object_of(kept, &values, out);
                self.spans.truncate(first);
                values.truncate(base);
                self.scratch = values;
                written
            }
            Schema::Record(r) => {
                let ns = r.name.namespace().or(ns);
                let mut values = std::mem::take(&mut self.scratch);
                let (base, first) = (values.len(), self.spans.len());
                for f in &r.fields {
                    let field = if at == Field::Top && (f.name == "payload" || f.name == "metadata")
                    {
                        Field::JsonText
                    } else {
                        Field::Other
                    };
                    let from = values.len();
                    self.value(&f.schema, ns, field, &mut values)?;
                    self.spans.push((f.name.as_str(), from, values.len()));
                }
                self.spans[first..].sort_by_key(|f| f.0);
                let written = object_of(self.spans[first..].iter().copied(), &values, out);
                self.spans.truncate(first);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_record;
    use crate::json_text::tests::{datum, nan_record};
    use crate::json_text::{decode_to_json_text, decode_to_json_text_via_values};
    use apache_avro::types::Value as Avro;
    use serde_json::json;

    /// The direct reading alone: `None` where it hands the datum to the values path.
    fn direct_only(schema: &Schema, body: &[u8]) -> Option<String> {
        let names = crate::avro_bounds::Names::new(schema);
        crate::avro_bounds::check_with(&names, body).ok()?;
        let mut out = Vec::new();
        write(&names, body, &mut out).ok()?;
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
        let event = Schema::parse_str(include_str!("../../../../schemas/event.avsc"))
            .expect("event schema");
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
        let (double, nan) = nan_record();
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
}
