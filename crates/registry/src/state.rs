//! The registry's state, rebuilt by applying the records of the `_schemas` topic in log order.
//!
//! Every instance applies the same records in the same order with the same rules, so every
//! instance ends in the same state; no instance has to be the leader. Ids and versions are
//! claimed by writing a record; when two instances claim the same id or the same version at
//! once, the claim that comes first in the log wins and the later one is void (its writer sees
//! that, removes its claim and tries again). Claims are keyed by subject, version and id, so a
//! void claim never replaces a winner when the topic is compacted, and a claim is written once
//! and never rewritten (soft deletes are records of their own), so compaction never moves a
//! winner behind a void claim.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tributary_schema::compat::{Level, ParsedSchema, SchemaType};

/// The key of a record in `_schemas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordKey {
    /// A claim of `id` as `version` of `subject`; its value is a [`SchemaValue`], or none to
    /// delete the version permanently.
    Schema { subject: String, version: u32, id: u32 },
    /// The soft-delete flag of a claimed version; its value is a [`DeletedValue`].
    Deleted { subject: String, version: u32, id: u32 },
    /// The compatibility level of a subject, or the global one when `subject` is `None`; its
    /// value is a [`ConfigValue`], or none to remove a subject's own level.
    Config { subject: Option<String> },
    /// The highest id ever handed out, so ids are never reused, also after permanent deletes
    /// and compaction; its value is an [`IdCeiling`].
    IdCeiling,
}

/// The value of a schema claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema_type: SchemaType,
    pub schema: String,
}

/// The value of a soft-delete flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedValue {
    /// Soft-deleted: hidden, but its id still resolves and it can be deleted permanently.
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    pub compatibility_level: Level,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdCeiling {
    pub max_id: u32,
}

/// A schema known by id.
#[derive(Debug)]
pub struct Stored {
    pub id: u32,
    pub parsed: ParsedSchema,
}

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct VersionEntry {
    pub subject: String,
    pub version: u32,
    pub schema: Arc<Stored>,
    pub deleted: bool,
}

#[derive(Debug, Default)]
struct Subject {
    versions: BTreeMap<u32, (u32, bool)>,
}

/// The registry's whole state.
#[derive(Debug, Default)]
pub struct State {
    schemas: HashMap<u32, Arc<Stored>>,
    by_content: HashMap<(SchemaType, String), u32>,
    subjects: BTreeMap<String, Subject>,
    global_level: Option<Level>,
    subject_levels: HashMap<String, Level>,
    max_id: u32,
    /// Records that did not parse or were void, for metrics and tests.
    pub skipped: u64,
}

/// Which version to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl State {
    /// Applies one record of the log. `value` is `None` for a tombstone.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = serde_json::from_slice::<RecordKey>(key) else {
            self.skipped += 1;
            return;
        };
        match (key, value) {
            (RecordKey::Schema { subject, version, id }, Some(v)) => {
                match serde_json::from_slice::<SchemaValue>(v) {
                    Ok(v) if v.subject == subject && v.version == version && v.id == id => {
                        self.claim(v)
                    }
                    _ => self.skipped += 1,
                }
            }
            (RecordKey::Schema { subject, version, id }, None) => {
                self.remove(&subject, version, id)
            }
            (RecordKey::Deleted { subject, version, id }, v) => {
                let deleted = match v.map(serde_json::from_slice::<DeletedValue>) {
                    None => false,
                    Some(Ok(d)) => d.deleted,
                    Some(Err(_)) => {
                        self.skipped += 1;
                        return;
                    }
                };
                if let Some(entry) =
                    self.subjects.get_mut(&subject).and_then(|s| s.versions.get_mut(&version))
                {
                    if entry.0 == id {
                        entry.1 = deleted;
                    }
                }
            }
            (RecordKey::Config { subject }, Some(v)) => {
                match serde_json::from_slice::<ConfigValue>(v) {
                    Ok(c) => match subject {
                        Some(s) => {
                            self.subject_levels.insert(s, c.compatibility_level);
                        }
                        None => self.global_level = Some(c.compatibility_level),
                    },
                    Err(_) => self.skipped += 1,
                }
            }
            (RecordKey::Config { subject }, None) => match subject {
                Some(s) => {
                    self.subject_levels.remove(&s);
                }
                None => self.global_level = None,
            },
            (RecordKey::IdCeiling, Some(v)) => match serde_json::from_slice::<IdCeiling>(v) {
                Ok(c) => self.max_id = self.max_id.max(c.max_id),
                Err(_) => self.skipped += 1,
            },
            (RecordKey::IdCeiling, None) => {}
        }
    }

    fn claim(&mut self, v: SchemaValue) {
        let Ok(parsed) = ParsedSchema::parse(v.schema_type, &v.schema) else {
            self.skipped += 1;
            return;
        };
        let subject = self.subjects.entry(v.subject.clone()).or_default();
        match subject.versions.get(&v.version) {
            // The same claim again (a writer retried): nothing changes.
            Some(&(id, _)) if id == v.id => return,
            // The version is taken by an earlier claim.
            Some(_) => {
                self.skipped += 1;
                return;
            }
            None => {}
        }
        let content = (v.schema_type, parsed.canonical.clone());
        let id_taken = self.schemas.get(&v.id).is_some_and(|s| {
            s.parsed.schema_type != v.schema_type || s.parsed.canonical != parsed.canonical
        });
        let content_has_other_id = self.by_content.get(&content).is_some_and(|&id| id != v.id);
        if id_taken || content_has_other_id {
            self.skipped += 1;
            if subject.versions.is_empty() {
                self.subjects.remove(&v.subject);
            }
            return;
        }
        subject.versions.insert(v.version, (v.id, false));
        self.schemas.entry(v.id).or_insert_with(|| Arc::new(Stored { id: v.id, parsed }));
        self.by_content.insert(content, v.id);
        self.max_id = self.max_id.max(v.id);
    }

    fn remove(&mut self, subject: &str, version: u32, id: u32) {
        let Some(s) = self.subjects.get_mut(subject) else { return };
        if s.versions.get(&version).is_none_or(|&(v_id, _)| v_id != id) {
            return;
        }
        s.versions.remove(&version);
        if s.versions.is_empty() {
            self.subjects.remove(subject);
        }
        // An id no version uses any more stops resolving; the ceiling keeps it from reuse.
        let still_used = self.subjects.values().any(|s| s.versions.values().any(|&(i, _)| i == id));
        if !still_used {
            if let Some(stored) = self.schemas.remove(&id) {
                self.by_content
                    .remove(&(stored.parsed.schema_type, stored.parsed.canonical.clone()));
            }
        }
    }

    /// Subjects with at least one live version (or any version when `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| deleted || s.versions.values().any(|&(_, d)| !d))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether the subject exists at all (live or soft-deleted versions).
    pub fn has_subject(&self, subject: &str) -> bool {
        self.subjects.contains_key(subject)
    }

    /// Version numbers of a subject, oldest first; `None` if it has none to show.
    pub fn versions(&self, subject: &str, deleted: bool) -> Option<Vec<u32>> {
        let s = self.subjects.get(subject)?;
        let v: Vec<u32> =
            s.versions.iter().filter(|(_, &(_, d))| deleted || !d).map(|(&n, _)| n).collect();
        (!v.is_empty()).then_some(v)
    }

    /// One version of a subject.
    pub fn version(&self, subject: &str, which: VersionRef, deleted: bool) -> Option<VersionEntry> {
        let s = self.subjects.get(subject)?;
        let (&version, &(id, is_deleted)) = match which {
            VersionRef::Latest => s.versions.iter().rev().find(|(_, &(_, d))| deleted || !d)?,
            VersionRef::Number(n) => {
                s.versions.get_key_value(&n).filter(|(_, &(_, d))| deleted || !d)?
            }
        };
        Some(VersionEntry {
            subject: subject.to_owned(),
            version,
            schema: Arc::clone(self.schemas.get(&id)?),
            deleted: is_deleted,
        })
    }

    /// Live versions of a subject, oldest first (what compatibility is checked against).
    pub fn live_versions(&self, subject: &str) -> Vec<VersionEntry> {
        self.versions(subject, false)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| self.version(subject, VersionRef::Number(v), false))
            .collect()
    }

    /// A schema by id.
    pub fn schema(&self, id: u32) -> Option<Arc<Stored>> {
        self.schemas.get(&id).cloned()
    }

    /// The id of a schema with this content, if any subject has it.
    pub fn id_of(&self, parsed: &ParsedSchema) -> Option<u32> {
        self.by_content.get(&(parsed.schema_type, parsed.canonical.clone())).copied()
    }

    /// The live version of `subject` with this content.
    pub fn lookup(
        &self,
        subject: &str,
        parsed: &ParsedSchema,
        deleted: bool,
    ) -> Option<VersionEntry> {
        let id = self.id_of(parsed)?;
        let s = self.subjects.get(subject)?;
        let (&version, _) = s.versions.iter().find(|(_, &(i, d))| i == id && (deleted || !d))?;
        self.version(subject, VersionRef::Number(version), deleted)
    }

    /// Subjects and versions that use schema `id`.
    pub fn usages(&self, id: u32, deleted: bool) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(name, s)| {
                s.versions
                    .iter()
                    .filter(move |(_, &(i, d))| i == id && (deleted || !d))
                    .map(move |(&v, _)| (name.clone(), v))
            })
            .collect()
    }

    /// The level a subject is checked with: its own, else the global one, else BACKWARD.
    pub fn level(&self, subject: Option<&str>) -> Level {
        subject
            .and_then(|s| self.subject_levels.get(s).copied())
            .or(self.global_level)
            .unwrap_or_default()
    }

    /// A subject's own level, if it has one.
    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.subject_levels.get(subject).copied()
    }

    /// The id a new schema would get.
    pub fn next_id(&self) -> u32 {
        self.max_id + 1
    }

    /// The version number a new version of `subject` would get (numbers are never reused while
    /// any version of the subject remains).
    pub fn next_version(&self, subject: &str) -> u32 {
        self.subjects.get(subject).and_then(|s| s.versions.keys().next_back()).map_or(1, |v| v + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &RecordKey) -> Vec<u8> {
        serde_json::to_vec(k).expect("json")
    }

    fn claim(state: &mut State, subject: &str, version: u32, id: u32, schema: &str) {
        let k = RecordKey::Schema { subject: subject.into(), version, id };
        let v = SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema_type: SchemaType::Avro,
            schema: schema.into(),
        };
        state.apply(&key(&k), Some(&serde_json::to_vec(&v).expect("json")));
    }

    const A: &str = r#""string""#;
    const B: &str = r#""long""#;

    #[test]
    fn first_claim_wins_ids_and_versions() {
        let mut s = State::default();
        claim(&mut s, "s", 1, 1, A);
        // Another instance claimed id 1 for different content at the same time: void.
        claim(&mut s, "t", 1, 1, B);
        assert!(!s.has_subject("t"));
        // Another instance claimed version 1 of "s" at the same time: void.
        claim(&mut s, "s", 1, 2, B);
        assert_eq!(s.version("s", VersionRef::Number(1), false).expect("v1").schema.id, 1);
        // The same content under a new id is void: content keeps its first id.
        claim(&mut s, "u", 1, 3, A);
        assert!(!s.has_subject("u"));
        assert_eq!(s.skipped, 3);
        // The same content in another subject under its id is fine.
        claim(&mut s, "u", 1, 1, A);
        assert_eq!(s.usages(1, false), vec![("s".to_owned(), 1), ("u".to_owned(), 1)]);
        assert_eq!(s.next_id(), 2);
        assert_eq!(s.next_version("s"), 2);
    }

    #[test]
    fn soft_then_permanent_delete() {
        let mut s = State::default();
        claim(&mut s, "s", 1, 1, A);
        claim(&mut s, "s", 2, 2, B);
        let flag = key(&RecordKey::Deleted { subject: "s".into(), version: 1, id: 1 });
        // A flag for another id of the same version changes nothing.
        s.apply(
            &key(&RecordKey::Deleted { subject: "s".into(), version: 1, id: 9 }),
            Some(br#"{"deleted":true}"#),
        );
        assert_eq!(s.versions("s", false), Some(vec![1, 2]));
        s.apply(&flag, Some(br#"{"deleted":true}"#));
        let k = key(&RecordKey::Schema { subject: "s".into(), version: 1, id: 1 });
        assert_eq!(s.versions("s", false), Some(vec![2]));
        assert_eq!(s.versions("s", true), Some(vec![1, 2]));
        assert!(s.schema(1).is_some(), "soft-deleted ids still resolve");
        s.apply(&k, None);
        assert_eq!(s.versions("s", true), Some(vec![2]));
        assert!(s.schema(1).is_none(), "permanently deleted ids stop resolving");
        assert_eq!(s.next_id(), 3, "but are never reused");
        assert_eq!(s.next_version("s"), 3);
    }

    #[test]
    fn levels_fall_back_to_global_then_backward() {
        let mut s = State::default();
        assert_eq!(s.level(Some("x")), Level::Backward);
        let global = key(&RecordKey::Config { subject: None });
        s.apply(&global, Some(br#"{"compatibilityLevel":"FULL"}"#));
        assert_eq!(s.level(Some("x")), Level::Full);
        let subject = key(&RecordKey::Config { subject: Some("x".into()) });
        s.apply(&subject, Some(br#"{"compatibilityLevel":"NONE"}"#));
        assert_eq!(s.level(Some("x")), Level::None);
        s.apply(&subject, None);
        assert_eq!(s.level(Some("x")), Level::Full);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let mut s = State::default();
        s.apply(b"not json", Some(b"{}"));
        s.apply(&key(&RecordKey::IdCeiling), Some(b"nope"));
        claim(&mut s, "s", 1, 1, "not a schema");
        assert_eq!(s.skipped, 3);
        assert!(s.subjects(true).is_empty());
    }

    #[test]
    fn replay_after_compaction_gives_the_same_state() {
        // A log with a winner, a void claim of the same version, and a soft delete of the
        // winner. Compaction keeps the last record per key, in log order.
        let mut log: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut push = |k: RecordKey, v: Option<Vec<u8>>| log.push((key(&k), v));
        let claim = |subject: &str, version: u32, id: u32, schema: &str| {
            let v = SchemaValue {
                subject: subject.into(),
                version,
                id,
                schema_type: SchemaType::Avro,
                schema: schema.into(),
            };
            (
                RecordKey::Schema { subject: subject.into(), version, id },
                Some(serde_json::to_vec(&v).expect("json")),
            )
        };
        let (k, v) = claim("s", 1, 1, A);
        push(k, v);
        // A losing claim of version 1...
        let (k, v) = claim("s", 1, 2, B);
        push(k.clone(), v);
        // ...its writer then claims version 2 (B gets id 3) and removes the void claim.
        let (k2, v2) = claim("s", 2, 3, B);
        push(k2, v2);
        push(k, None);
        // Soft delete of version 1, undone, then done again.
        let flag = RecordKey::Deleted { subject: "s".into(), version: 1, id: 1 };
        push(flag.clone(), Some(br#"{"deleted":true}"#.to_vec()));
        push(flag.clone(), Some(br#"{"deleted":false}"#.to_vec()));
        push(flag, Some(br#"{"deleted":true}"#.to_vec()));
        push(RecordKey::IdCeiling, Some(br#"{"maxId":3}"#.to_vec()));
        let apply_all = |records: &[(Vec<u8>, Option<Vec<u8>>)]| {
            let mut s = State::default();
            for (k, v) in records {
                s.apply(k, v.as_deref());
            }
            (s.versions("s", true), s.versions("s", false), s.next_id())
        };
        let full = apply_all(&log);
        let mut compacted: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (i, (k, v)) in log.iter().enumerate() {
            if !log[i + 1..].iter().any(|(k2, _)| k2 == k) {
                compacted.push((k.clone(), v.clone()));
            }
        }
        assert!(compacted.len() < log.len());
        assert_eq!(apply_all(&compacted), full);
        assert_eq!(full, (Some(vec![1, 2]), Some(vec![2]), 4));
    }
}
