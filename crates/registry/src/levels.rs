//! Compatibility in the REST API: checking a schema against a subject's versions, and the global
//! and per-subject compatibility levels (`/compatibility/...`, `/config...`).

use crate::api::{parse_version, schema_request, Api, Flags, Json, Result};
use crate::error::RegistryError;
use crate::state::{ConfigValue, RecordKey, VersionRef};
use crate::Registry;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{json, Value};
use tributary_schema::compat::{Level, ParsedSchema};

fn check(
    r: &Registry,
    subject: &str,
    parsed: &ParsedSchema,
    against: Option<&str>,
    verbose: bool,
) -> Result<Json<Value>> {
    let state = r.store.state();
    let level = state.level(Some(subject));
    let live = state.live_versions(subject);
    let reasons = match against {
        None => level.check(parsed, &live.iter().map(|e| &e.schema.parsed).collect::<Vec<_>>()),
        Some(v) => {
            let which = parse_version(v)?;
            if live.is_empty() && which == VersionRef::Latest {
                Vec::new()
            } else {
                if !state.has_subject(subject) {
                    return Err(RegistryError::subject_not_found(subject));
                }
                let e = state
                    .version(subject, which, false)
                    .ok_or_else(|| RegistryError::version_not_found(subject, v))?;
                // One version: the level's direction, not its history.
                let single = match level {
                    Level::BackwardTransitive => Level::Backward,
                    Level::ForwardTransitive => Level::Forward,
                    Level::FullTransitive => Level::Full,
                    l => l,
                };
                single.check(parsed, &[&e.schema.parsed])
            }
        }
    };
    let mut v = json!({"is_compatible": reasons.is_empty()});
    if verbose {
        v["messages"] = json!(reasons);
    }
    Ok(Json(v))
}

pub async fn compatibility_version(
    State(r): Api,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
    body: Bytes,
) -> Result<Json<Value>> {
    let parsed = schema_request(&body, r.limits.max_schema_bytes)?;
    check(&r, &subject, &parsed, Some(&version), f.verbose)
}

pub async fn compatibility_all(
    State(r): Api,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
    body: Bytes,
) -> Result<Json<Value>> {
    let parsed = schema_request(&body, r.limits.max_schema_bytes)?;
    check(&r, &subject, &parsed, None, f.verbose)
}

#[derive(Debug, Deserialize)]
struct LevelRequest {
    compatibility: String,
}

fn level_request(body: &Bytes) -> Result<Level> {
    let req: LevelRequest = serde_json::from_slice(body).map_err(|e| {
        RegistryError::bad_request(format!(
            "request body must be {{\"compatibility\": LEVEL}}: {e}"
        ))
    })?;
    Level::parse(&req.compatibility).ok_or_else(|| RegistryError::invalid_level(&req.compatibility))
}

pub async fn get_global_config(State(r): Api) -> Json<Value> {
    Json(json!({"compatibilityLevel": r.store.state().level(None)}))
}

/// Sets the level of `subject`, or the global one; answers as Confluent does.
async fn set_level(r: &Registry, subject: Option<String>, body: &Bytes) -> Result<Json<Value>> {
    let level = level_request(body)?;
    let value = ConfigValue { compatibility_level: level };
    r.write(&RecordKey::Config { subject }, Some(&value)).await?;
    Ok(Json(json!({"compatibility": level})))
}

pub async fn put_global_config(State(r): Api, body: Bytes) -> Result<Json<Value>> {
    set_level(&r, None, &body).await
}

pub async fn get_subject_config(
    State(r): Api,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> Result<Json<Value>> {
    let state = r.store.state();
    match state.subject_level(&subject) {
        Some(l) => Ok(Json(json!({"compatibilityLevel": l}))),
        None if f.default_to_global => Ok(Json(json!({"compatibilityLevel": state.level(None)}))),
        None => Err(RegistryError::subject_level_not_configured(&subject)),
    }
}

pub async fn put_subject_config(
    State(r): Api,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    set_level(&r, Some(subject), &body).await
}

pub async fn delete_subject_config(
    State(r): Api,
    Path(subject): Path<String>,
) -> Result<Json<Value>> {
    let previous = r
        .store
        .state()
        .subject_level(&subject)
        .ok_or_else(|| RegistryError::subject_not_found(&subject))?;
    r.write::<ConfigValue>(&RecordKey::Config { subject: Some(subject) }, None).await?;
    Ok(Json(json!({"compatibilityLevel": previous})))
}
