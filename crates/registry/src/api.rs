//! The REST API, as Confluent Schema Registry clients use it: subjects and versions, schemas by
//! id, register and lookup, soft and permanent deletes. Compatibility checks and levels are in
//! [`crate::levels`].

use crate::error::{RegistryError, MEDIA_TYPE};
use crate::state::{DeletedValue, IdCeiling, RecordKey, SchemaValue, VersionEntry, VersionRef};
use crate::Registry;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use tributary_schema::compat::{ParsedSchema, SchemaType};

pub(crate) type Api = State<Arc<Registry>>;
pub(crate) type Result<T> = std::result::Result<T, RegistryError>;

/// A JSON answer with Confluent's media type.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut resp = serde_json::to_vec(&self.0).unwrap_or_default().into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        resp
    }
}

/// Query flags. Clients spell booleans differently (`true`, `True`, `1`): all are accepted.
#[derive(Debug, Deserialize, Default)]
pub struct Flags {
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default, deserialize_with = "flag")]
    permanent: bool,
    #[serde(default, rename = "defaultToGlobal", deserialize_with = "flag")]
    pub(crate) default_to_global: bool,
    #[serde(default, deserialize_with = "flag")]
    pub(crate) verbose: bool,
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    Ok(matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Parses a register/lookup/compatibility body (any content type; clients differ); a schema
/// text over `max_bytes` is refused before it is parsed.
pub(crate) fn schema_request(body: &Bytes, max_bytes: usize) -> Result<ParsedSchema> {
    let req: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        RegistryError::bad_request(format!("request body is not a schema request: {e}"))
    })?;
    if req.schema.len() > max_bytes {
        return Err(RegistryError::schema_too_large(req.schema.len(), max_bytes));
    }
    if !req.references.is_empty() {
        return Err(RegistryError::invalid_schema(
            "schema references are not supported by this registry yet",
        ));
    }
    let schema_type = match req.schema_type.as_deref() {
        None => SchemaType::Avro,
        Some(t) => SchemaType::parse(t)
            .ok_or_else(|| RegistryError::invalid_schema(&format!("unknown schema type {t:?}")))?,
    };
    ParsedSchema::parse(schema_type, &req.schema).map_err(|e| RegistryError::invalid_schema(&e.0))
}

pub(crate) fn parse_version(v: &str) -> Result<VersionRef> {
    match v {
        "latest" | "-1" => Ok(VersionRef::Latest),
        n => match n.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(VersionRef::Number(n)),
            _ => Err(RegistryError::invalid_version(v)),
        },
    }
}

fn entry_json(e: &VersionEntry) -> Value {
    let mut v = json!({
        "subject": e.subject,
        "version": e.version,
        "id": e.schema.id,
        "schema": e.schema.parsed.canonical,
    });
    if e.schema.parsed.schema_type != SchemaType::Avro {
        v["schemaType"] = json!(e.schema.parsed.schema_type.as_str());
    }
    v
}

/// A schema's own text as the whole answer, with the registry's media type (as Confluent does).
fn raw(text: String) -> Response {
    let mut resp = text.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    resp
}

pub async fn root() -> Json<Value> {
    Json(json!({}))
}

pub async fn schema_types() -> Json<Vec<&'static str>> {
    Json(vec!["AVRO", "PROTOBUF"])
}

pub async fn mode() -> Json<Value> {
    Json(json!({"mode": "READWRITE"}))
}

pub async fn schema_by_id(State(r): Api, Path(id): Path<u32>) -> Result<Json<Value>> {
    let stored = r
        .read_fresh(|st| {
            st.schema(id).ok_or_else(|| RegistryError::schema_not_found(&id.to_string()))
        })
        .await?;
    let mut v = json!({"schema": stored.parsed.canonical});
    if stored.parsed.schema_type != SchemaType::Avro {
        v["schemaType"] = json!(stored.parsed.schema_type.as_str());
    }
    Ok(Json(v))
}

pub async fn raw_schema_by_id(State(r): Api, Path(id): Path<u32>) -> Result<Response> {
    let stored = r
        .read_fresh(|st| {
            st.schema(id).ok_or_else(|| RegistryError::schema_not_found(&id.to_string()))
        })
        .await?;
    Ok(raw(stored.parsed.canonical.clone()))
}

pub async fn id_versions(
    State(r): Api,
    Path(id): Path<u32>,
    Query(f): Query<Flags>,
) -> Result<Json<Value>> {
    r.read_fresh(|st| {
        if st.schema(id).is_none() {
            return Err(RegistryError::schema_not_found(&id.to_string()));
        }
        Ok(Json(Value::Array(
            st.usages(id, f.deleted)
                .into_iter()
                .map(|(s, v)| json!({"subject": s, "version": v}))
                .collect(),
        )))
    })
    .await
}

pub async fn subjects(State(r): Api, Query(f): Query<Flags>) -> Json<Vec<String>> {
    Json(r.store.state().subjects(f.deleted))
}

pub async fn versions(
    State(r): Api,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Result<Json<Vec<u32>>> {
    r.read_fresh(|st| {
        st.versions(&subject, f.deleted)
            .map(Json)
            .ok_or_else(|| RegistryError::subject_not_found(&subject))
    })
    .await
}

fn find_version(
    state: &crate::state::State,
    subject: &str,
    version: &str,
    deleted: bool,
) -> Result<VersionEntry> {
    let which = parse_version(version)?;
    if !state.has_subject(subject) || state.versions(subject, deleted).is_none() {
        return Err(RegistryError::subject_not_found(subject));
    }
    state
        .version(subject, which, deleted)
        .ok_or_else(|| RegistryError::version_not_found(subject, version))
}

pub async fn version(
    State(r): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> Result<Json<Value>> {
    let e = r.read_fresh(|st| find_version(st, &subject, &version, f.deleted)).await?;
    Ok(Json(entry_json(&e)))
}

pub async fn raw_version(
    State(r): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> Result<Response> {
    let e = r.read_fresh(|st| find_version(st, &subject, &version, f.deleted)).await?;
    Ok(raw(e.schema.parsed.canonical.clone()))
}

pub async fn register(
    State(r): Api,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let parsed = schema_request(&body, r.limits.max_schema_bytes)?;
    let id = r.register(&subject, &parsed).await?;
    Ok(Json(json!({"id": id})))
}

pub async fn lookup(
    State(r): Api,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
    body: Bytes,
) -> Result<Json<Value>> {
    let parsed = schema_request(&body, r.limits.max_schema_bytes)?;
    r.read_fresh(|st| {
        if !st.has_subject(&subject) {
            return Err(RegistryError::subject_not_found(&subject));
        }
        st.lookup(&subject, &parsed, f.deleted)
            .map(|e| Json(entry_json(&e)))
            .ok_or_else(|| RegistryError::schema_not_found_in(&subject))
    })
    .await
}

pub async fn delete_subject(
    State(r): Api,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Result<Json<Vec<u32>>> {
    let _guard = r.write_lock.lock().await;
    r.store.sync().await.map_err(|e| RegistryError::store(&e))?;
    let (all, live) = {
        let state = r.store.state();
        let all: Vec<VersionEntry> = state
            .versions(&subject, true)
            .ok_or_else(|| RegistryError::subject_not_found(&subject))?
            .into_iter()
            .filter_map(|v| state.version(&subject, VersionRef::Number(v), true))
            .collect();
        let live: Vec<u32> = all.iter().filter(|e| !e.deleted).map(|e| e.version).collect();
        (all, live)
    };
    if f.permanent {
        if !live.is_empty() {
            return Err(RegistryError::subject_not_soft_deleted(&subject));
        }
        for e in &all {
            r.remove_version(e).await?;
        }
        return Ok(Json(all.iter().map(|e| e.version).collect()));
    }
    if live.is_empty() {
        return Err(RegistryError::subject_soft_deleted(&subject));
    }
    for e in all.iter().filter(|e| !e.deleted) {
        r.soft_delete(e).await?;
    }
    Ok(Json(live))
}

pub async fn delete_version(
    State(r): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> Result<Json<u32>> {
    let _guard = r.write_lock.lock().await;
    r.store.sync().await.map_err(|e| RegistryError::store(&e))?;
    let e = find_version(&r.store.state(), &subject, &version, true)?;
    if f.permanent {
        if !e.deleted {
            return Err(RegistryError::version_not_soft_deleted(&subject, e.version));
        }
        r.remove_version(&e).await?;
    } else {
        if e.deleted {
            return Err(RegistryError::version_soft_deleted(&subject, e.version));
        }
        r.soft_delete(&e).await?;
    }
    Ok(Json(e.version))
}

impl Registry {
    /// Runs `f` on the state; when it finds nothing, catches up with the log (another instance
    /// may have just written what was asked for) and runs it once more.
    async fn read_fresh<T>(&self, f: impl Fn(&crate::state::State) -> Result<T>) -> Result<T> {
        let first = f(&self.store.state());
        match first {
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                self.store.sync().await.map_err(|e| RegistryError::store(&e))?;
                f(&self.store.state())
            }
            other => other,
        }
    }

    pub(crate) async fn write<T: Serialize>(
        &self,
        key: &RecordKey,
        value: Option<&T>,
    ) -> Result<()> {
        let bytes = value.map(|v| serde_json::to_vec(v).unwrap_or_default());
        self.store.write(key, bytes).await.map_err(|e| RegistryError::store(&e))
    }

    async fn soft_delete(&self, e: &VersionEntry) -> Result<()> {
        let key =
            RecordKey::Deleted { subject: e.subject.clone(), version: e.version, id: e.schema.id };
        self.write(&key, Some(&DeletedValue { deleted: true })).await
    }

    async fn remove_version(&self, e: &VersionEntry) -> Result<()> {
        let (subject, version, id) = (e.subject.clone(), e.version, e.schema.id);
        self.write::<()>(&RecordKey::Deleted { subject: subject.clone(), version, id }, None)
            .await?;
        self.write::<()>(&RecordKey::Schema { subject, version, id }, None).await
    }

    /// Registers `parsed` under `subject`: the existing id when the subject already has it,
    /// else a new version after the compatibility check. Safe with several instances: a claim
    /// that loses in the log is removed and tried again.
    pub async fn register(&self, subject: &str, parsed: &ParsedSchema) -> Result<u32> {
        let _guard = self.write_lock.lock().await;
        for _ in 0..8 {
            self.store.sync().await.map_err(|e| RegistryError::store(&e))?;
            let (id, version, new_id) = {
                let state = self.store.state();
                if let Some(e) = state.lookup(subject, parsed, false) {
                    return Ok(e.schema.id);
                }
                let limits = self.limits;
                match state.versions(subject, true) {
                    None if state.subjects(true).len() >= limits.max_subjects => {
                        return Err(RegistryError::too_many_subjects(limits.max_subjects));
                    }
                    Some(v) if v.len() >= limits.max_versions_per_subject => {
                        let max = limits.max_versions_per_subject;
                        return Err(RegistryError::too_many_versions(subject, max));
                    }
                    _ => {}
                }
                let live = state.live_versions(subject);
                let reasons = state
                    .level(Some(subject))
                    .check(parsed, &live.iter().map(|e| &e.schema.parsed).collect::<Vec<_>>());
                if !reasons.is_empty() {
                    return Err(RegistryError::incompatible(&reasons));
                }
                match state.id_of(parsed) {
                    Some(id) => (id, state.next_version(subject), false),
                    None => (state.next_id(), state.next_version(subject), true),
                }
            };
            let key = RecordKey::Schema { subject: subject.to_owned(), version, id };
            let value = SchemaValue {
                subject: subject.to_owned(),
                version,
                id,
                schema_type: parsed.schema_type,
                schema: parsed.canonical.clone(),
            };
            self.write(&key, Some(&value)).await?;
            let won = self
                .store
                .state()
                .version(subject, VersionRef::Number(version), true)
                .is_some_and(|e| e.schema.id == id);
            if won {
                if new_id {
                    // The highest id this instance knows of, not just ours: compaction keeps only
                    // the last ceiling, which must not be lower than any id ever handed out.
                    let max_id = self.store.state().next_id().saturating_sub(1).max(id);
                    self.write(&RecordKey::IdCeiling, Some(&IdCeiling { max_id })).await?;
                }
                return Ok(id);
            }
            // Another instance claimed this id or version first: withdraw and try again.
            self.write::<()>(&key, None).await?;
        }
        Err(RegistryError::store(&tributary_kafka::KafkaError::new(
            "registering a schema: other instances kept claiming the same id",
            rdkafka::error::KafkaError::Canceled,
        )))
    }
}
