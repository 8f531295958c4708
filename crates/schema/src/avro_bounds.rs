//! Bounds on decoding an Avro datum from bytes anyone could have written to a topic.
//!
//! apache-avro's decoder recurses once per nested value without a limit (a recursive schema
//! such as a linked list nests as deep as the bytes say, two bytes a level, until the thread's
//! stack overflows and the process aborts), allocates a string's declared length before it
//! reads it (up to its 512 MiB cap, from a 5-byte value), and builds a value for every item of
//! an array or map block even when an item takes no bytes (a block of two million nulls is 4
//! bytes). [`check`] walks the same bytes first, allocating nothing, and refuses a datum that
//! nests deeper than [`MAX_DEPTH`], declares a length longer than what is left, or holds more
//! values than [`max_values`] allows for its size; only then does the decoder run.

use apache_avro::schema::{Name, NamesRef, NamespaceRef, ResolvedSchema};
use apache_avro::Schema;

/// Deepest nesting of records, arrays and maps in one datum (Protobuf's decoders allow 100;
/// the JSON a datum becomes must stay under serde_json's 128 for readers that parse it again).
pub const MAX_DEPTH: usize = 64;

/// Most values (each record, field, item, key and branch) a datum of `len` bytes may hold:
/// four per byte, plus 4,096. A value that takes bytes can only be one per byte; records, nulls
/// and empty fixed take none, and real data has a few of those per byte at most.
pub fn max_values(len: usize) -> usize {
    len.saturating_mul(4).saturating_add(4096)
}

/// Whether `bytes` start with a datum of `schema` that is safe to decode; `Err` says why not.
pub fn check(schema: &Schema, bytes: &[u8]) -> Result<(), String> {
    check_with(&Names::new(schema), bytes)
}

/// [`check`] with the schema's [`Names`], for a caller that decodes the datum next with them.
pub fn check_with<'s>(names: &Names<'s>, bytes: &[u8]) -> Result<(), String> {
    let mut walk = Walk { names, bytes, pos: 0, values: 0, budget: max_values(bytes.len()) };
    walk.value(names.schema, None, 0)
}

/// The named types of a schema, resolved the first time a reference needs one: resolving
/// costs as much as walking a small datum, and most schemas (the event schema among them)
/// refer to no named type.
pub struct Names<'s> {
    schema: &'s Schema,
    resolved: std::cell::OnceCell<Result<ResolvedSchema<'s>, String>>,
}

impl<'s> Names<'s> {
    pub fn new(schema: &'s Schema) -> Self {
        Self { schema, resolved: std::cell::OnceCell::new() }
    }

    /// The schema these are the names of.
    pub fn schema(&self) -> &'s Schema {
        self.schema
    }

    /// The resolution, made once.
    pub fn resolved(&self) -> Result<&ResolvedSchema<'s>, String> {
        self.resolved
            .get_or_init(|| {
                ResolvedSchema::try_from(self.schema)
                    .map_err(|e| format!("the schema does not resolve: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The resolution, taken (made now when no reference needed it): for a decoder that keeps
    /// it, so it is neither made again nor copied.
    pub fn into_resolved(self) -> Result<ResolvedSchema<'s>, String> {
        let schema = self.schema;
        self.resolved.into_inner().unwrap_or_else(|| {
            ResolvedSchema::try_from(schema)
                .map_err(|e| format!("the schema does not resolve: {e}"))
        })
    }

    /// The type `name` refers to from namespace `ns`, and the namespace inside it.
    pub fn lookup(
        &self,
        name: &Name,
        ns: NamespaceRef<'s>,
    ) -> Result<(&'s Schema, NamespaceRef<'s>), String> {
        let full = name.fully_qualified_name(ns);
        let names: &NamesRef<'s> = self.resolved()?.get_names();
        let target =
            names.get(full.as_ref()).copied().ok_or_else(|| format!("no type named {full}"))?;
        let inner = match target {
            Schema::Record(r) => r.name.namespace(),
            Schema::Enum(e) => e.name.namespace(),
            Schema::Fixed(f) => f.name.namespace(),
            _ => ns,
        };
        Ok((target, inner.or(ns)))
    }
}

/// Whether values of `s` are written as an Avro `int` (plain, or a date or time of day in
/// milliseconds).
pub(crate) fn is_int(s: &Schema) -> bool {
    matches!(s, Schema::Int | Schema::Date | Schema::TimeMillis)
}

/// Whether values of `s` are written as an Avro `long` (plain, or a time or timestamp).
pub(crate) fn is_long(s: &Schema) -> bool {
    matches!(
        s,
        Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
    )
}

/// The zig-zag varint long at `bytes[*pos..]` (at most ten bytes), moving `pos` past it.
pub(crate) fn read_long(bytes: &[u8], pos: &mut usize) -> Result<i64, String> {
    let mut n: u64 = 0;
    for i in 0..10 {
        let b = *bytes.get(*pos).ok_or("the value ends inside a number")?;
        *pos += 1;
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
        }
    }
    Err("a number is longer than ten bytes".into())
}

struct Walk<'s, 'r, 'b> {
    names: &'r Names<'s>,
    bytes: &'b [u8],
    pos: usize,
    values: usize,
    budget: usize,
}

impl<'s> Walk<'s, '_, '_> {
    /// A zig-zag varint long, at most ten bytes.
    fn long(&mut self) -> Result<i64, String> {
        read_long(self.bytes, &mut self.pos)
    }

    /// Skips `n` bytes, which must be there.
    fn skip(&mut self, n: u64) -> Result<(), String> {
        let left = self.bytes.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                self.pos += n;
                Ok(())
            }
            _ => Err(format!("a length of {n} bytes, but only {left} are left")),
        }
    }

    /// A length-prefixed string or bytes.
    fn sized(&mut self) -> Result<(), String> {
        let n = self.long()?;
        let n = u64::try_from(n).map_err(|_| format!("a negative length {n}"))?;
        self.skip(n)
    }

    /// The count of the next array or map block (0 at the end), skipping a block's byte size.
    fn block(&mut self) -> Result<u64, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        Ok(n.unsigned_abs())
    }

    fn nest(depth: usize) -> Result<usize, String> {
        if depth >= MAX_DEPTH {
            return Err(format!("the value nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(depth + 1)
    }

    fn value(
        &mut self,
        schema: &'s Schema,
        ns: NamespaceRef<'s>,
        depth: usize,
    ) -> Result<(), String> {
        self.values += 1;
        if self.values > self.budget {
            return Err(format!(
                "the value holds more than {} values for its {} bytes",
                self.budget,
                self.bytes.len()
            ));
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Bytes | Schema::String | Schema::BigDecimal => self.sized(),
            Schema::Uuid(apache_avro::schema::UuidSchema::Fixed(f))
            | Schema::Fixed(f)
            | Schema::Duration(f) => self.skip(f.size as u64),
            Schema::Uuid(_) => self.sized(),
            Schema::Decimal(d) => match &d.inner {
                apache_avro::schema::InnerDecimalSchema::Fixed(f) => self.skip(f.size as u64),
                apache_avro::schema::InnerDecimalSchema::Bytes => self.sized(),
            },
            Schema::Enum(e) => {
                let i = self.long()?;
                if usize::try_from(i).is_ok_and(|i| i < e.symbols.len()) {
                    Ok(())
                } else {
                    Err(format!("enum index {i} of {} symbols", e.symbols.len()))
                }
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let branch = usize::try_from(i).ok().and_then(|i| u.variants().get(i));
                let branch =
                    branch.ok_or_else(|| format!("union index {i} of {}", u.variants().len()))?;
                self.value(branch, ns, depth)
            }
            Schema::Array(a) => {
                let depth = Self::nest(depth)?;
                while let n @ 1.. = self.block()? {
                    for _ in 0..n {
                        self.value(&a.items, ns, depth)?;
                    }
                }
                Ok(())
            }
            Schema::Map(m) => {
                let depth = Self::nest(depth)?;
                while let n @ 1.. = self.block()? {
                    for _ in 0..n {
                        self.sized()?;
                        self.value(&m.types, ns, depth)?;
                    }
                }
                Ok(())
            }
            Schema::Record(r) => {
                let depth = Self::nest(depth)?;
                let ns = r.name.namespace().or(ns);
                r.fields.iter().try_for_each(|f| self.value(&f.schema, ns, depth))
            }
            Schema::Ref { name } => {
                let (target, ns) = self.names.lookup(name, ns)?;
                self.value(target, ns, depth)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).expect("schema")
    }

    const LIST: &str = r#"{"type":"record","name":"Node","namespace":"t","fields":[
        {"name":"value","type":"int"},{"name":"next","type":["null","Node"]}]}"#;

    #[test]
    fn what_the_decoder_reads_passes() {
        let list = schema(LIST);
        // 0 -> 1 -> 2, then the end.
        assert_eq!(check(&list, &[0, 2, 2, 2, 4, 0]), Ok(()));
        let strings = schema(r#"{"type":"array","items":"string"}"#);
        assert_eq!(check(&strings, b"\x04\x02a\x00\x00"), Ok(()));
        // A block with a negative count carries its byte size.
        assert_eq!(check(&strings, b"\x01\x04\x02a\x00"), Ok(()));
    }

    #[test]
    fn deep_long_and_wide_values_are_refused() {
        let list = schema(LIST);
        let deep: Vec<u8> = std::iter::repeat_n(2u8, 2 * MAX_DEPTH + 2).chain([0, 0]).collect();
        assert!(check(&list, &deep).expect_err("too deep").contains("deeper"));
        let string = schema(r#""string""#);
        let err = check(&string, &[0x80, 0x84, 0xaf, 0x5f, b'a']).expect_err("too long");
        assert!(err.contains("only 1 are left"), "{err}");
        let nulls = schema(r#"{"type":"array","items":"null"}"#);
        let err = check(&nulls, &[0x80, 0x92, 0xf4, 0x01, 0]).expect_err("too many");
        assert!(err.contains("more than"), "{err}");
        let looping = schema(r#"{"type":"record","name":"L","fields":[{"name":"l","type":"L"}]}"#);
        assert!(check(&looping, &[]).expect_err("endless").contains("deeper"));
    }
}
