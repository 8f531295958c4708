//! Avro schema resolution as a compatibility check: can a reader schema decode every datum a
//! writer schema can produce? The rules are the Avro specification's "Schema Resolution", decided
//! the way Apache Avro's Java `SchemaCompatibility` (and so Confluent's registry) decides them:
//!
//! - same primitive types match; promotions int→long/float/double, long→float/double,
//!   float→double, string↔bytes;
//! - records match by name (or a reader alias); each reader field reads the writer field of the
//!   same name (or a reader field alias), or needs a default when the writer has none; writer
//!   fields the reader lacks are skipped;
//! - enums match by name; every writer symbol must be a reader symbol unless the reader has a
//!   default symbol;
//! - fixed match by name and size; arrays by items; maps by values;
//! - a writer union is readable only if every branch is; a reader union reads a writer type if
//!   any branch can;
//! - logical types are compared by their underlying types.

use apache_avro::schema::{
    EnumSchema, FixedSchema, InnerDecimalSchema, Name, NamesRef, RecordSchema, ResolvedSchema,
    UuidSchema,
};
use apache_avro::Schema;
use std::collections::{HashMap, HashSet};

/// Most pairs of types one check compares; beyond it the check gives up (and the schema is
/// refused as incompatible). With failures remembered a real schema needs a few per field.
const MAX_STEPS: usize = 1_000_000;

/// A schema seen through its logical type, named references resolved by the caller.
enum View<'a> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(&'a Schema),
    Map(&'a Schema),
    Union(&'a [Schema]),
    Record(&'a RecordSchema),
    Enum(&'a EnumSchema),
    Fixed(&'a FixedSchema),
}

impl View<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean => "boolean",
            Self::Int => "int",
            Self::Long => "long",
            Self::Float => "float",
            Self::Double => "double",
            Self::Bytes => "bytes",
            Self::String => "string",
            Self::Array(_) => "array",
            Self::Map(_) => "map",
            Self::Union(_) => "union",
            Self::Record(_) => "record",
            Self::Enum(_) => "enum",
            Self::Fixed(_) => "fixed",
        }
    }
}

fn view(s: &Schema) -> View<'_> {
    match s {
        Schema::Null => View::Null,
        Schema::Boolean => View::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => View::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => View::Long,
        Schema::Float => View::Float,
        Schema::Double => View::Double,
        Schema::Bytes | Schema::BigDecimal => View::Bytes,
        Schema::String => View::String,
        Schema::Array(a) => View::Array(&a.items),
        Schema::Map(m) => View::Map(&m.types),
        Schema::Union(u) => View::Union(u.variants()),
        Schema::Record(r) => View::Record(r),
        Schema::Enum(e) => View::Enum(e),
        Schema::Fixed(f) | Schema::Duration(f) => View::Fixed(f),
        Schema::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => View::Bytes,
            InnerDecimalSchema::Fixed(f) => View::Fixed(f),
        },
        Schema::Uuid(u) => match u {
            UuidSchema::Bytes => View::Bytes,
            UuidSchema::String => View::String,
            UuidSchema::Fixed(f) => View::Fixed(f),
        },
        // Callers resolve references before viewing; an unresolved one matches nothing.
        Schema::Ref { .. } => View::Null,
    }
}

struct Checker<'a> {
    writer_names: &'a NamesRef<'a>,
    reader_names: &'a NamesRef<'a>,
    /// Pairs under check: a recursive type meeting itself again is assumed compatible, as the
    /// Java implementation does.
    seen: HashSet<(usize, usize)>,
    /// Pairs found incompatible, with why. A failure holds whatever was assumed meanwhile
    /// (assumptions only make pairs pass), so it is remembered: without this, nested reader
    /// unions that fail deep down are explored once per path, exponentially many.
    failed: HashMap<(usize, usize), String>,
    /// Pairs compared so far, bounded by [`MAX_STEPS`].
    steps: usize,
}

fn resolve<'a>(s: &'a Schema, names: &NamesRef<'a>) -> &'a Schema {
    let mut s = s;
    // Bounded: a reference resolves to a named type, never to another reference.
    for _ in 0..8 {
        match s {
            Schema::Ref { name } => match names.get(name) {
                Some(target) => s = target,
                None => return s,
            },
            _ => return s,
        }
    }
    s
}

fn names_match(
    reader: &Name,
    reader_aliases: Option<&[apache_avro::schema::Alias]>,
    writer: &Name,
) -> bool {
    reader.name() == writer.name()
        || reader_aliases.is_some_and(|aliases| {
            aliases.iter().any(|a| a.fullname(reader.namespace()) == writer.fullname(None))
        })
}

impl<'a> Checker<'a> {
    fn check(&mut self, writer: &'a Schema, reader: &'a Schema, path: &str) -> Result<(), String> {
        let w = resolve(writer, self.writer_names);
        let r = resolve(reader, self.reader_names);
        let key = (std::ptr::from_ref(w) as usize, std::ptr::from_ref(r) as usize);
        if let Some(why) = self.failed.get(&key) {
            return Err(why.clone());
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!(
                "the compatibility check gave up after comparing {MAX_STEPS} pairs of types"
            ));
        }
        if !self.seen.insert(key) {
            return Ok(());
        }
        let verdict = self.check_pair(w, r, path);
        if let Err(why) = &verdict {
            self.failed.insert(key, why.clone());
        }
        verdict
    }

    /// [`Self::check`] of two resolved types.
    fn check_pair(&mut self, w: &'a Schema, r: &'a Schema, path: &str) -> Result<(), String> {
        let (wv, rv) = (view(w), view(r));
        let here = if path.is_empty() { "the schema" } else { path };
        match (&wv, &rv) {
            (View::Union(branches), _) => {
                for (i, b) in branches.iter().enumerate() {
                    self.check(b, r, &format!("{path}[union branch {i}]"))?;
                }
                Ok(())
            }
            (_, View::Union(branches)) => self.check_reader_union(w, &wv, branches, path, here),
            (View::Null, View::Null)
            | (View::Boolean, View::Boolean)
            | (View::Int, View::Int | View::Long | View::Float | View::Double)
            | (View::Long, View::Long | View::Float | View::Double)
            | (View::Float, View::Float | View::Double)
            | (View::Double, View::Double)
            | (View::Bytes | View::String, View::Bytes | View::String) => Ok(()),
            (View::Array(wi), View::Array(ri)) => self.check(wi, ri, &format!("{path}[]")),
            (View::Map(wv), View::Map(rv)) => self.check(wv, rv, &format!("{path}{{}}")),
            (View::Fixed(wf), View::Fixed(rf)) => check_fixed(wf, rf, here),
            (View::Enum(we), View::Enum(re)) => check_enum(we, re, here),
            (View::Record(wr), View::Record(rr)) => self.check_record(wr, rr, path, here),
            _ => Err(format!("{here}: the writer's {} cannot be read as {}", wv.kind(), rv.kind())),
        }
    }

    /// A reader union reads the writer's type if any branch can (what a failed branch marked
    /// as seen is forgotten again).
    fn check_reader_union(
        &mut self,
        w: &'a Schema,
        wv: &View<'a>,
        branches: &'a [Schema],
        path: &str,
        here: &str,
    ) -> Result<(), String> {
        for b in branches {
            let before = self.seen.clone();
            if self.check(w, b, path).is_ok() {
                return Ok(());
            }
            self.seen = before;
        }
        Err(format!("{here}: no branch of the reader's union can read the writer's {}", wv.kind()))
    }

    /// Records match by name (or a reader alias); each reader field reads the writer's field of
    /// the same name (or a reader field alias) or needs a default.
    fn check_record(
        &mut self,
        wr: &'a RecordSchema,
        rr: &'a RecordSchema,
        path: &str,
        here: &str,
    ) -> Result<(), String> {
        if !names_match(&rr.name, rr.aliases.as_deref(), &wr.name) {
            return Err(format!("{here}: record {} cannot be read as record {}", wr.name, rr.name));
        }
        for rf in &rr.fields {
            let found = wr
                .fields
                .iter()
                .find(|wf| wf.name == rf.name)
                .or_else(|| wr.fields.iter().find(|wf| rf.aliases.contains(&wf.name)));
            let field_path =
                if path.is_empty() { rf.name.clone() } else { format!("{path}.{}", rf.name) };
            match found {
                Some(wf) => self.check(&wf.schema, &rf.schema, &field_path)?,
                None if rf.default.is_some() => {}
                None => {
                    return Err(format!(
                        "{field_path}: the reader's field has no default and the writer has no such field"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Fixed types match by name (or a reader alias) and size.
fn check_fixed(wf: &FixedSchema, rf: &FixedSchema, here: &str) -> Result<(), String> {
    if !names_match(&rf.name, rf.aliases.as_deref(), &wf.name) {
        return Err(format!("{here}: fixed {} cannot be read as fixed {}", wf.name, rf.name));
    }
    if wf.size != rf.size {
        return Err(format!(
            "{here}: fixed {} has size {} but the reader expects {}",
            wf.name, wf.size, rf.size
        ));
    }
    Ok(())
}

/// Enums match by name (or a reader alias); every writer symbol must be a reader symbol unless
/// the reader has a default.
fn check_enum(we: &EnumSchema, re: &EnumSchema, here: &str) -> Result<(), String> {
    if !names_match(&re.name, re.aliases.as_deref(), &we.name) {
        return Err(format!("{here}: enum {} cannot be read as enum {}", we.name, re.name));
    }
    if re.default.is_none() {
        if let Some(missing) = we.symbols.iter().find(|s| !re.symbols.contains(s)) {
            return Err(format!(
                "{here}: the reader's enum {} lacks the writer's symbol {missing:?} and has no default",
                re.name
            ));
        }
    }
    Ok(())
}

/// Whether data written with `writer` can always be read with `reader`; `Err` says where not.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    let wr = ResolvedSchema::try_from(writer)
        .map_err(|e| format!("the writer schema does not resolve: {e}"))?;
    let rr = ResolvedSchema::try_from(reader)
        .map_err(|e| format!("the reader schema does not resolve: {e}"))?;
    let mut checker = Checker {
        writer_names: wr.get_names(),
        reader_names: rr.get_names(),
        seen: HashSet::new(),
        failed: HashMap::new(),
        steps: 0,
    };
    checker.check(writer, reader, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A writer of `depth` nested records `W0 { f: W1 { f: ... { f: int } } }`, and a reader
    /// that offers two records at every level (`X<i>` and `Y<i>`, both aliases of `W<i>`) in a
    /// union, with a `boolean` at the bottom that no `int` reads: every path fails only at the
    /// bottom, so a checker that forgets what failed tries all 2^depth paths.
    pub(crate) fn hostile(depth: usize) -> (String, String) {
        let mut writer = r#"{"name":"f","type":"int"}"#.to_owned();
        for i in (0..=depth).rev() {
            writer = format!(r#"{{"type":"record","name":"W{i}","fields":[{writer}]}}"#);
            if i > 0 {
                writer = format!(r#"{{"name":"f","type":{writer}}}"#);
            }
        }
        let record = |name: &str, i: usize, field: &str| {
            format!(
                r#"{{"type":"record","name":"{name}{i}","aliases":["W{i}"],"fields":[{{"name":"f","type":{field}}}]}}"#
            )
        };
        // The full definition of X<i>; Y<i> refers to the names X<i> defines.
        let mut x = record("X", depth, r#""boolean""#);
        let mut y = record("Y", depth, r#""boolean""#);
        for i in (0..depth).rev() {
            let refs = format!(r#"["X{}","Y{}"]"#, i + 1, i + 1);
            let next_y = record("Y", i, &refs);
            x = record("X", i, &format!("[{x},{y}]"));
            y = next_y;
        }
        (writer, x)
    }

    #[test]
    fn nested_reader_unions_are_checked_in_bounded_time() {
        let (writer, reader) = hostile(22);
        let parse = |text: &str| {
            let json: serde_json::Value = serde_json::from_str(text).expect("JSON");
            Schema::parse(&json).expect("valid Avro")
        };
        let (writer, reader) = (parse(&writer), parse(&reader));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            let verdict = can_read(&writer, &reader);
            let _ = tx.send((verdict, started.elapsed()));
        });
        let (verdict, took) =
            rx.recv_timeout(Duration::from_secs(10)).expect("the check ends within 10 s");
        let err = verdict.expect_err("no int reads as boolean");
        assert!(err.contains("boolean") || err.contains("union"), "{err}");
        assert!(took < Duration::from_secs(1), "the check took {took:?}");
    }
}
