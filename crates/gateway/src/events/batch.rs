//! `POST /api/v1/events/{topic}/batch`: writing many events, a result for each, in order.

use super::encode::{check_event, encode, read_event, Checked};
use super::write::{Ingest, PendingWrite, Started, Written};
use crate::body::{parse_json, read_json_body};
use crate::dedupe::Outcome;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::TopicMetrics;
use crate::schemas::WriteSchema;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tributary_core::{Event, TopicSpec};
use tributary_kafka::Delivered;

/// One result of a batch, in the position of its event.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct BatchItem {
    /// Position of the event in the request array.
    pub index: usize,
    /// `accepted`, `duplicate`, `rejected` (bad event, not written) or `failed` (Kafka did not
    /// acknowledge it; safe to retry).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<i64>,
    /// The error, for `rejected` and `failed`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[serde(flatten)]
    pub error: Option<ErrorBody>,
}

/// Answer of a batch write.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct BatchResponse {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub failed: usize,
    pub results: Vec<BatchItem>,
}

/// An event checked, and where it was written if this is a retry (looked up once).
type CheckedItem = Result<(Checked, Option<Delivered>), ApiError>;

/// `POST /api/v1/events/{topic}/batch`: write many events; a result per event, in order.
#[utoipa::path(
    post, path = "/api/v1/events/{topic}/batch", tag = "events",
    params(("topic" = String, Path, description = "Full topic name")),
    request_body(content = Vec<Event>, content_type = "application/json"),
    responses(
        (status = 200, description = "Every event has a result; invalid ones were not written", body = BatchResponse),
        (status = 400, description = "Malformed JSON or not an array", body = ErrorBody),
        (status = 408, description = "The body did not arrive within body_timeout_ms (`body_timeout`)", body = ErrorBody),
        (status = 413, description = "Body or event count over the limit", body = ErrorBody),
        (status = 503, description = "Kafka did not acknowledge some events, or the producer's queue for Kafka was full (status `failed`, code `kafka_unavailable` or `queue_full`); retrying the whole batch is safe", body = BatchResponse),
    )
)]
pub async fn publish_batch(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let spec = state.writable_topic(&topic)?;
    let bytes = read_batch(&state, &headers, body).await?;
    let items = batch_items(&state, &bytes)?;
    let m = state.metrics_for(&spec.name);
    let checked = check_all(&state, spec, items)?;
    // The schema is fetched once, and only when some event has to be encoded.
    let needs_schema = checked.iter().any(|c| matches!(c, Ok((_, None))));
    let schema = if needs_schema { state.inner.schemas.for_topic(spec).await? } else { None };
    let mut batch = Batch::new(&state, &spec.name, m, checked.len());
    batch.start_all(checked, schema.as_ref()).await;
    let results = batch.finish().await;
    Ok(respond(&state, results))
}

/// Reads a batch body, at most `max_batch_body_bytes`.
async fn read_batch(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let cfg = &state.inner.config;
    let timeout = Duration::from_millis(cfg.body_timeout_ms);
    read_json_body(headers, body, cfg.max_batch_body_bytes, timeout).await
}

/// The events of a batch body, each as its JSON text: a JSON array of at most
/// `max_batch_events` events. Each is read on its own afterwards, so no tree is built for the
/// whole batch.
fn batch_items<'a>(state: &AppState, bytes: &'a [u8]) -> Result<Vec<&'a RawValue>, ApiError> {
    let items: Vec<&RawValue> = match serde_json::from_slice(bytes) {
        Ok(items) => items,
        Err(_) => {
            // Malformed JSON gets the parser's 400; well-formed JSON that is not an array, this.
            parse_json(bytes)?;
            return Err(ApiError::BadRequest {
                code: "not_an_array",
                message: "a batch body must be a JSON array of events".to_owned(),
            });
        }
    };
    let limit = state.inner.config.max_batch_events;
    if items.len() > limit {
        return Err(ApiError::BatchTooLarge { count: items.len(), limit });
    }
    Ok(items)
}

/// Checks every event and looks up where it was written if it is a retry. All lookups happen
/// before any write starts. An event the array holds but JSON does not accept (a lone
/// surrogate escape, nesting too deep: the split into items does not look that closely) makes
/// the whole body malformed, as when the body was read in one piece: nothing of it is written.
fn check_all(
    state: &AppState,
    spec: &TopicSpec,
    items: Vec<&RawValue>,
) -> Result<Vec<CheckedItem>, ApiError> {
    items
        .into_iter()
        .map(|item| match read_event(item.get().as_bytes()) {
            Err(malformed @ ApiError::MalformedJson(_)) => Err(malformed),
            event => Ok(event.and_then(|event| {
                let c = check_event(spec, event)?;
                let known = state.inner.dedupe.written(c.dedupe_key, c.fingerprint);
                Ok((c, known))
            })),
        })
        .collect()
}

/// The writes of one batch: a result slot per event, and the writes still waiting.
struct Batch<'a> {
    state: &'a AppState,
    topic: &'a str,
    m: &'a TopicMetrics,
    deadline: Instant,
    ingest: Ingest,
    results: Vec<Option<BatchItem>>,
    /// Handed to librdkafka, waiting for the broker's answer.
    pending: Vec<(usize, Option<String>, PendingWrite)>,
    /// The same event being written by another request.
    in_flight: Vec<(usize, Option<String>, watch::Receiver<Outcome>)>,
}

impl<'a> Batch<'a> {
    fn new(state: &'a AppState, topic: &'a str, m: &'a TopicMetrics, len: usize) -> Self {
        let deadline = state.write_deadline();
        let ingest = Ingest::now();
        Self {
            state,
            topic,
            m,
            deadline,
            ingest,
            results: vec![None; len],
            pending: Vec::new(),
            in_flight: Vec::new(),
        }
    }

    /// Records the result of event `index`; `id` is `None` for an event too malformed to
    /// have one.
    fn done(&mut self, index: usize, id: Option<String>, outcome: Result<Written, ApiError>) {
        self.results[index] = Some(match outcome {
            Ok(Written::New(d)) => ok_item(index, id.unwrap_or_default(), "accepted", d),
            Ok(Written::Duplicate(d)) => {
                self.m.duplicate(1);
                ok_item(index, id.unwrap_or_default(), "duplicate", d)
            }
            Err(e) => error_item(index, id, &e),
        });
    }

    /// Starts every write in array order, so same-key events keep their order on the
    /// partition.
    async fn start_all(&mut self, checked: Vec<CheckedItem>, schema: Option<&WriteSchema>) {
        for (index, c) in checked.into_iter().enumerate() {
            self.start(index, c, schema).await;
        }
    }

    /// Starts writing event `index`, or records why it is not written.
    async fn start(&mut self, index: usize, c: CheckedItem, schema: Option<&WriteSchema>) {
        let (c, known) = match c {
            Ok(c) => c,
            Err(e) => {
                self.m.rejected(e.status_and_code().1);
                self.done(index, None, Err(e));
                return;
            }
        };
        let id = Some(c.event.event_id.clone());
        if let Some(d) = known {
            self.done(index, id, Ok(Written::Duplicate(d)));
            return;
        }
        let p = match encode(c, schema) {
            Ok(p) => p,
            Err(e) => {
                self.m.rejected(e.status_and_code().1);
                self.done(index, id, Err(e));
                return;
            }
        };
        match self.state.start_write(self.topic, p, &self.ingest).await {
            Ok(Started::Answered(w)) => self.done(index, id, Ok(w)),
            Ok(Started::Pending(w)) => self.pending.push((index, id, w)),
            Ok(Started::InFlight(rx)) => self.in_flight.push((index, id, rx)),
            Err(e) => self.done(index, id, Err(e)),
        }
    }

    /// Waits for all started writes together, until the deadline at most: first those handed
    /// to librdkafka, then those another request is writing. The results, in array order.
    async fn finish(mut self) -> Vec<BatchItem> {
        let (slots, writes): (Vec<(usize, Option<String>)>, Vec<PendingWrite>) =
            std::mem::take(&mut self.pending).into_iter().map(|(i, id, w)| ((i, id), w)).unzip();
        let task = self.state.settle(self.topic, writes);
        let settled = self.state.await_settled(task, slots.len(), self.deadline).await;
        for ((index, id), outcome) in slots.into_iter().zip(settled) {
            self.done(index, id, outcome);
        }
        let (state, deadline) = (self.state, self.deadline);
        let waits =
            std::mem::take(&mut self.in_flight).into_iter().map(|(index, id, rx)| async move {
                (index, id, state.await_in_flight(rx, deadline).await)
            });
        for (index, id, outcome) in futures::future::join_all(waits).await {
            self.done(index, id, outcome);
        }
        self.results.into_iter().flatten().collect()
    }
}

/// The answer: 200, or 503 with `Retry-After` when Kafka did not acknowledge some events.
fn respond(state: &AppState, results: Vec<BatchItem>) -> Response {
    let count = |s: &str| results.iter().filter(|r| r.status == s).count();
    let resp = BatchResponse {
        accepted: count("accepted"),
        duplicates: count("duplicate"),
        rejected: count("rejected"),
        failed: count("failed"),
        results,
    };
    if resp.failed > 0 {
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(resp)).into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(state.inner.config.retry_after_secs),
        );
        return r;
    }
    (StatusCode::OK, Json(resp)).into_response()
}

/// A batch result for an event that was not written: `failed` when Kafka was unavailable (a
/// retry may succeed), `rejected` otherwise (a retry will not help).
fn error_item(index: usize, event_id: Option<String>, e: &ApiError) -> BatchItem {
    let status = if matches!(e, ApiError::Unavailable { .. }) { "failed" } else { "rejected" };
    BatchItem {
        index,
        status: status.into(),
        event_id,
        partition: None,
        offset: None,
        error: Some(e.body()),
    }
}

fn ok_item(index: usize, id: String, status: &str, d: Delivered) -> BatchItem {
    BatchItem {
        index,
        status: status.into(),
        event_id: Some(id),
        partition: Some(d.partition),
        offset: Some(d.offset),
        error: None,
    }
}
