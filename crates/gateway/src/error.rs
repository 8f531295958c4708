//! The API's error type: every client error is `{"error": code, "message": text}` with the
//! right status, as DESIGN.md promises.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tributary_core::FieldError;
use tributary_kafka::{ErrorClass, KafkaError};

/// The JSON body of every error answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct ErrorBody {
    /// Machine-readable code, for example `validation_failed`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The offending field (dotted path), for validation errors.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

/// Everything a handler can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Validation(FieldError),
    #[error(
        "event has no {field}, the key of topic {topic}; set it at the top level or in payload"
    )]
    MissingKey { topic: String, field: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive within {limit_ms} ms")]
    BodyTimeout { limit_ms: u64 },
    #[error("the gateway is working on {limit} requests already; retry later")]
    Overloaded { limit: usize, retry_after_secs: u64 },
    #[error("too many {class} requests from this client; retry in {retry_after_secs} s")]
    RateLimited { class: &'static str, retry_after_secs: u64 },
    #[error("the gateway's queue for kafka is full (kafka is slow or unreachable); retry later")]
    QueueFull { retry_after_secs: u64 },
    #[error("batch has {count} events; at most {limit} are allowed")]
    BatchTooLarge { count: usize, limit: usize },
    #[error("content type must be application/json, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("unknown topic {topic:?}; known topics: {known}")]
    UnknownTopic { topic: String, known: String },
    #[error("topic {0:?} is written by the platform, not through the API")]
    TopicNotWritable(String),
    #[error("event_id {0:?} was already accepted on this topic with different content")]
    EventIdConflict(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("kafka is unavailable: {message}")]
    Unavailable { message: String, retry_after_secs: u64 },
    #[error("{message}")]
    RegistryUnavailable { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Internal(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{message}")]
    Unauthorized { message: String, invalid_token: bool },
    #[error("the bearer token lacks the scope {scope}{}", topic.as_ref().map(|t| format!(" (or {scope}:{t})")).unwrap_or_default())]
    InsufficientScope { scope: String, topic: Option<String> },
}

impl ApiError {
    /// Status and machine code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::MissingKey { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "missing_key"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            Self::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::QueueFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::UnknownTopic { .. } => (StatusCode::NOT_FOUND, "unknown_topic"),
            Self::TopicNotWritable(_) => (StatusCode::FORBIDDEN, "topic_not_writable"),
            Self::EventIdConflict(_) => (StatusCode::CONFLICT, "event_id_conflict"),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "kafka_unavailable"),
            Self::RegistryUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "schema_registry_unavailable")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::InsufficientScope { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let field = match self {
            Self::Validation(e) => Some(e.field.clone()),
            Self::MissingKey { field, .. } => Some(field.clone()),
            _ => None,
        };
        ErrorBody { error: self.status_and_code().1.to_owned(), message: self.to_string(), field }
    }

    /// Maps a Kafka failure: unavailable → 503, rejected → 422-like 400s, the rest → 500.
    pub fn from_kafka(err: &KafkaError, retry_after_secs: u64) -> Self {
        if err.is_queue_full() {
            return Self::QueueFull { retry_after_secs };
        }
        match err.class {
            ErrorClass::Unavailable => {
                Self::Unavailable { message: err.to_string(), retry_after_secs }
            }
            ErrorClass::Rejected => {
                Self::BadRequest { code: "rejected_by_kafka", message: err.to_string() }
            }
            ErrorClass::Internal => Self::Internal(err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        let mut resp = (status, Json(self.body())).into_response();
        if let Self::Unavailable { retry_after_secs, .. }
        | Self::RegistryUnavailable { retry_after_secs, .. }
        | Self::Overloaded { retry_after_secs, .. }
        | Self::RateLimited { retry_after_secs, .. }
        | Self::QueueFull { retry_after_secs } = self
        {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        // The rest of such a body is never read: the connection cannot carry another request.
        if let Self::PayloadTooLarge { .. } | Self::BodyTimeout { .. } = self {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // RFC 6750: say how to authenticate, and what was wrong.
        let challenge = match &self {
            Self::Unauthorized { invalid_token: false, .. } => {
                Some("Bearer realm=\"tributary\"".to_owned())
            }
            Self::Unauthorized { invalid_token: true, .. } => {
                Some("Bearer realm=\"tributary\", error=\"invalid_token\"".to_owned())
            }
            Self::InsufficientScope { scope, .. } => Some(format!(
                "Bearer realm=\"tributary\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let e =
            ApiError::Validation(FieldError { field: "timestamp".into(), message: "bad".into() });
        assert_eq!(e.status_and_code(), (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"));
        assert_eq!(e.body().field.as_deref(), Some("timestamp"));
        let e = ApiError::Unavailable { message: "down".into(), retry_after_secs: 3 };
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
}
