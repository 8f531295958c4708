//! `POST /api/v1/events/{topic}`: writing one event.

use super::encode::{check_event, encode, read_event};
use super::write::{Ingest, Written};
use crate::body::read_json_body;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tributary_core::Event;
use tributary_kafka::Delivered;

/// The spec's `EventResponse`: where an accepted event landed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct EventResponse {
    /// `accepted` for a new write, `duplicate` for a retry answered from the dedupe window.
    pub status: String,
    pub event_id: String,
    pub partition: i32,
    pub offset: i64,
}

/// `POST /api/v1/events/{topic}`: write one event; 201 once Kafka acknowledged it.
#[utoipa::path(
    post, path = "/api/v1/events/{topic}", tag = "events",
    params(("topic" = String, Path, description = "Full topic name, for example events.clickstream")),
    request_body(content = Event, content_type = "application/json"),
    responses(
        (status = 201, description = "Written; Kafka acknowledged it", body = EventResponse),
        (status = 200, description = "A retry of an event_id already written; nothing new written", body = EventResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 403, description = "Topic not writable through the API", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 409, description = "event_id already used with different content", body = ErrorBody),
        (status = 408, description = "The body did not arrive within body_timeout_ms (`body_timeout`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid event; `field` names the offending field", body = ErrorBody),
        (status = 503, description = "Kafka (`kafka_unavailable`) or the schema registry (`schema_registry_unavailable`) unavailable, the producer's queue for Kafka full (`queue_full`, answered at once), or the gateway at max_in_flight_requests (`overloaded`); retry after Retry-After seconds", body = ErrorBody),
    )
)]
pub async fn publish(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let spec = state.writable_topic(&topic)?;
    let m = state.metrics_for(&spec.name);
    let checked = async {
        let cfg = &state.inner.config;
        let timeout = Duration::from_millis(cfg.body_timeout_ms);
        let bytes = read_json_body(&headers, body, cfg.max_body_bytes, timeout).await?;
        check_event(spec, read_event(&bytes)?)
    }
    .await
    .inspect_err(|e| m.rejected(e.status_and_code().1))?;
    let event_id = checked.event.event_id.clone();
    // A retry of a written event is answered before encoding: neither a newer schema version
    // nor an unreachable registry turns it into an error.
    let known = state.inner.dedupe.written(checked.dedupe_key, checked.fingerprint);
    let written = match known {
        Some(d) => Written::Duplicate(d),
        None => {
            let schema = state.inner.schemas.for_topic(spec).await?;
            let prepared = encode(checked, schema.as_ref())
                .inspect_err(|e| m.rejected(e.status_and_code().1))?;
            let deadline = state.write_deadline();
            let started = state.start_write(&spec.name, prepared, &Ingest::now()).await?;
            state.finish_write(&spec.name, started, deadline).await?
        }
    };
    let (status, code, d) = match written {
        Written::New(d) => (StatusCode::CREATED, "accepted", d),
        Written::Duplicate(d) => {
            m.duplicate(1);
            (StatusCode::OK, "duplicate", d)
        }
    };
    let json = HeaderValue::from_static("application/json");
    let mut resp =
        (status, [(header::CONTENT_TYPE, json)], answer(code, &event_id, d)).into_response();
    if code == "duplicate" {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The [`EventResponse`] JSON, written directly: one small buffer per answer instead of the
/// serializer's (a test checks it reads back as the same `EventResponse`).
fn answer(status: &str, event_id: &str, d: Delivered) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(80 + event_id.len());
    out.extend_from_slice(b"{\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\",\"event_id\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, event_id);
    let _ = write!(out, ",\"partition\":{},\"offset\":{}}}", d.partition, d.offset);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_event_response() {
        for (status, id) in [("accepted", "e-1"), ("duplicate", "q\"uo\\te\u{1}é\u{2028}")] {
            let d = Delivered { partition: 11, offset: i64::MAX };
            let body = answer(status, id, d);
            let read: EventResponse = serde_json::from_slice(&body).expect("JSON");
            let expected = EventResponse {
                status: status.to_owned(),
                event_id: id.to_owned(),
                partition: 11,
                offset: i64::MAX,
            };
            assert_eq!(read, expected);
            assert_eq!(body, serde_json::to_vec(&expected).expect("serializes"));
        }
    }
}
