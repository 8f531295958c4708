//! Errors in Confluent's format: `{"error_code": 40401, "message": "..."}` with the HTTP status
//! Confluent uses for that code, so Confluent clients report them as they would their own.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Confluent's media type for registry answers.
pub const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry error with its HTTP status and Confluent error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error_code: u32,
    message: &'a str,
}

impl RegistryError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub fn subject_not_found(s: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40401, format!("Subject '{s}' not found."))
    }
    pub fn version_not_found(s: &str, v: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40402, format!("Version {v} not found for subject '{s}'."))
    }
    pub fn schema_not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, format!("Schema {what} not found"))
    }
    pub fn schema_not_found_in(subject: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, format!("Schema not found in subject '{subject}'"))
    }
    pub fn subject_soft_deleted(s: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40404,
            format!("Subject '{s}' was soft deleted. Set permanent=true to delete permanently"),
        )
    }
    pub fn subject_not_soft_deleted(s: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40405,
            format!("Subject '{s}' was not deleted first before being permanently deleted"),
        )
    }
    pub fn version_soft_deleted(s: &str, v: u32) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40406, format!("Subject '{s}' Version {v} was soft deleted. Set permanent=true to delete permanently"))
    }
    pub fn version_not_soft_deleted(s: &str, v: u32) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40407,
            format!(
                "Subject '{s}' Version {v} was not deleted first before being permanently deleted"
            ),
        )
    }
    pub fn subject_level_not_configured(s: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{s}' does not have subject-level compatibility configured"),
        )
    }
    pub fn incompatible(reasons: &[String]) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject: {}",
                reasons.join("; ")
            ),
        )
    }
    pub fn invalid_schema(why: &str) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, why.to_owned())
    }
    pub fn invalid_version(v: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!("The specified version '{v}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""),
        )
    }
    pub fn invalid_level(l: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("Invalid compatibility level {l:?}. Valid values are NONE, BACKWARD, FORWARD, FULL, BACKWARD_TRANSITIVE, FORWARD_TRANSITIVE, and FULL_TRANSITIVE"),
        )
    }
    pub fn bad_request(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 400, why)
    }
    pub fn schema_too_large(bytes: usize, max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
            format!("Schema text is {bytes} bytes, more than max_schema_bytes ({max})"),
        )
    }
    pub fn too_many_subjects(max: usize) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!(
                "The registry holds max_subjects ({max}) subjects; permanently delete one first"
            ),
        )
    }
    pub fn too_many_versions(s: &str, max: usize) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!("Subject '{s}' holds max_versions_per_subject ({max}) versions; permanently delete one first"),
        )
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            401,
            "Unauthorized: valid basic-auth credentials are required",
        )
    }
    pub fn store(e: &tributary_kafka::KafkaError) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("Error in the backend data store: {e}"),
        )
    }
    pub fn not_found_route(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 404, format!("HTTP 404 Not Found: {path}"))
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body { error_code: self.code, message: &self.message })
            .unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tributary-registry\""),
            );
        }
        resp
    }
}
