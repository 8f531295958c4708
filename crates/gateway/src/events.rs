//! Writing events (single and batch) and reading the newest ones.

use crate::body::{parse_json, read_json_body};
use crate::dedupe::{fingerprint, Begin, Guard};
use crate::error::{ApiError, ErrorBody};
use crate::schemas::WriteSchema;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tributary_core::{Event, TopicSpec};
use tributary_kafka::reader::{read_latest, ConsumedRecord};
use tributary_kafka::{Delivered, KafkaError, OutgoingRecord, PendingDelivery};

/// The spec's `EventResponse`: where an accepted event landed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct EventResponse {
    /// `accepted` for a new write, `duplicate` for a retry answered from the dedupe window.
    pub status: String,
    pub event_id: String,
    pub partition: i32,
    pub offset: i64,
}

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

/// A record as the read endpoints return it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct RecordView {
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp (the gateway sets it to the ingest time), RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    /// The record value: JSON as written, or a registry-framed Avro/Protobuf value decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>)]
    pub event: Option<Value>,
    /// Registry id of the schema the value was written with, for registry-framed values.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub schema_id: Option<u32>,
    /// The record value, base64, when it is neither JSON nor a registry-framed Avro value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_base64: Option<String>,
    /// Record headers, values as UTF-8 (lossy).
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, Value>,
}

impl RecordView {
    /// A view of `r`; `decoded` is its value decoded from registry-framed Avro, if it was.
    pub fn from_record(r: ConsumedRecord, decoded: Option<(u32, Value)>) -> Self {
        use base64::Engine as _;
        let (event, value_base64, schema_id) = match (r.value, decoded) {
            (_, Some((id, v))) => (Some(v), None, Some(id)),
            (None, None) => (None, None, None),
            (Some(bytes), None) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => (Some(v), None, None),
                Err(_) => {
                    (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes)), None)
                }
            },
        };
        Self {
            partition: r.partition,
            offset: r.offset,
            timestamp: r
                .timestamp_ms
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            event,
            schema_id,
            value_base64,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k, Value::String(String::from_utf8_lossy(&v).into_owned())))
                .collect(),
        }
    }
}

/// Answer of `GET .../latest`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct LatestResponse {
    pub topic: String,
    /// Newest first.
    pub events: Vec<RecordView>,
}

/// An event checked and encoded, ready to write.
struct Prepared {
    event_id: String,
    event_type: String,
    key: Option<String>,
    value: Vec<u8>,
    /// The `content_type` header: how `value` is encoded.
    content_type: &'static [u8],
    fingerprint: u64,
}

/// The `content_type` header of registry-framed Avro values.
pub const AVRO_CONTENT_TYPE: &str = "application/vnd.confluent.avro";
/// The `content_type` header of registry-framed Protobuf values.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.confluent.protobuf";

/// Encodes an event with its topic's registered schema (Avro or Protobuf): the value is
/// Confluent-framed (magic byte, schema id, for Protobuf the message indexes, then the body). A field the schema requires and the event lacks, or
/// one whose type does not fit, is a 422 naming that field.
fn encode_framed(
    event: &Event,
    schema: &WriteSchema,
) -> Result<(Vec<u8>, &'static [u8]), ApiError> {
    let mut fields = match serde_json::to_value(event) {
        Ok(Value::Object(m)) => m,
        _ => return Err(ApiError::Internal("an event did not serialize to an object".into())),
    };
    // The event schema keeps time as epoch milliseconds, not text.
    fields.insert("timestamp".into(), Value::from(event.timestamp_millis()));
    let invalid = |e: tributary_schema::codec::EncodeError| {
        ApiError::Validation(tributary_core::FieldError { field: e.field, message: e.message })
    };
    let (body, content_type) = if let Some(proto) = schema.schema.proto() {
        (proto.encode(&fields).map_err(invalid)?, PROTOBUF_CONTENT_TYPE)
    } else if let Some(avro) = schema.schema.avro() {
        (tributary_schema::codec::encode_record(avro, &fields).map_err(invalid)?, AVRO_CONTENT_TYPE)
    } else {
        return Err(ApiError::Internal(format!(
            "schema {} is neither Avro nor Protobuf",
            schema.id
        )));
    };
    Ok((tributary_schema::frame(schema.id, &body), content_type.as_bytes()))
}

/// An event that passed validation, before it is encoded for its topic.
struct Checked {
    event: Event,
    key: Option<String>,
    canonical: Vec<u8>,
    fingerprint: u64,
}

/// Validates an event and finds its key. Needs nothing but the event: bad input is a 4xx even
/// while the schema registry is down.
fn check(spec: &TopicSpec, value: Value) -> Result<Checked, ApiError> {
    let event = Event::from_json(value).map_err(ApiError::Validation)?;
    let key = match &spec.key_field {
        None => None,
        Some(field) => match event.key_value(field) {
            Some(k) => Some(k),
            None if spec.require_key => {
                return Err(ApiError::MissingKey { topic: spec.name.clone(), field: field.clone() })
            }
            None => None,
        },
    };
    // The dedupe fingerprint is over the event's canonical JSON, not the encoded value: a retry
    // after the topic moved to a new schema version is still the same event.
    let canonical = event.to_json_bytes();
    let fingerprint = fingerprint(&canonical);
    Ok(Checked { event, key, canonical, fingerprint })
}

/// Encodes a checked event for its topic: framed with `schema`, or its canonical JSON.
fn encode(c: Checked, schema: Option<&WriteSchema>) -> Result<Prepared, ApiError> {
    let (value, content_type) = match schema {
        Some(schema) => encode_framed(&c.event, schema)?,
        None => (c.canonical, &b"application/json"[..]),
    };
    Ok(Prepared {
        fingerprint: c.fingerprint,
        event_id: c.event.event_id,
        event_type: c.event.event_type,
        key: c.key,
        value,
        content_type,
    })
}

/// The outcome of writing one prepared event.
enum Written {
    New(Delivered),
    Duplicate(Delivered),
}

/// A write that has been started: answered already, or waiting for Kafka.
enum Started {
    /// A retry answered from the dedupe window.
    Answered(Written),
    /// Handed to librdkafka; settled by [`AppState::settle`].
    Pending(PendingWrite),
    /// The same event is being written by another request; its outcome is ours.
    InFlight(tokio::sync::watch::Receiver<crate::dedupe::Outcome>),
}

/// A record in librdkafka's hands and the dedupe reservation its outcome settles.
struct PendingWrite {
    delivery: PendingDelivery,
    guard: Guard,
}

/// When writes start: the record timestamp and the `ingest_time` header. One per request, so a
/// batch formats the time once.
struct Ingest {
    millis: i64,
    text: String,
}

impl Ingest {
    fn now() -> Self {
        let now = Utc::now();
        Self {
            millis: now.timestamp_millis(),
            text: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

impl AppState {
    /// Starts writing one event: consults the dedupe window and hands the record to
    /// librdkafka. Events started one after another keep that order on their partition.
    async fn start_write(
        &self,
        topic: &str,
        p: Prepared,
        ingest: &Ingest,
        deadline: Instant,
    ) -> Result<Started, ApiError> {
        let guard = match self.inner.dedupe.begin(topic, &p.event_id, p.fingerprint) {
            Begin::Duplicate(d) => return Ok(Started::Answered(Written::Duplicate(d))),
            Begin::Conflict => return Err(ApiError::EventIdConflict(p.event_id)),
            Begin::InFlight(rx) => return Ok(Started::InFlight(rx)),
            Begin::New(guard) => guard,
        };
        let headers: [(&str, &[u8]); 3] = [
            ("event_type", p.event_type.as_bytes()),
            ("ingest_time", ingest.text.as_bytes()),
            ("content_type", p.content_type),
        ];
        let record = OutgoingRecord {
            topic,
            key: p.key.as_deref().map(str::as_bytes),
            value: &p.value,
            headers: &headers,
            timestamp_ms: Some(ingest.millis),
        };
        match self.inner.producer.enqueue(record, deadline).await {
            Ok(delivery) => Ok(Started::Pending(PendingWrite { delivery, guard })),
            Err(e) => {
                self.metrics_for(topic).failed(e.class, 1);
                guard.complete(Err(()));
                Err(self.unavailable(&e))
            }
        }
    }

    /// Waits for the broker's answers to `writes` and settles the dedupe window with them, in
    /// a task of its own: neither a client hanging up nor the request deadline can leave the
    /// window unsettled. One task per request, not per event.
    fn settle(
        &self,
        topic: &str,
        writes: Vec<PendingWrite>,
    ) -> JoinHandle<Vec<Result<Delivered, KafkaError>>> {
        let state = self.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let m = state.metrics_for(&topic);
            let mut results = Vec::with_capacity(writes.len());
            let (mut written, mut first_error) = (0, None);
            // Everything is enqueued already: awaiting in order delays nothing.
            for w in writes {
                let result = w.delivery.wait().await;
                match &result {
                    Ok(d) => {
                        written += 1;
                        w.guard.complete(Ok(*d));
                    }
                    Err(e) => {
                        m.failed(e.class, 1);
                        first_error.get_or_insert_with(|| e.to_string());
                        w.guard.complete(Err(()));
                    }
                }
                results.push(result);
            }
            m.written(written);
            if let Some(error) = first_error {
                tracing::warn!(topic = %topic, %error, "writes not acknowledged");
            }
            results
        })
    }

    /// Waits for writes being settled by [`Self::settle`], until `deadline` at most.
    async fn await_settled(
        &self,
        task: JoinHandle<Vec<Result<Delivered, KafkaError>>>,
        count: usize,
        deadline: Instant,
    ) -> Vec<Result<Written, ApiError>> {
        match tokio::time::timeout_at(deadline.into(), task).await {
            Err(_) => (0..count).map(|_| Err(self.late())).collect(),
            Ok(Err(e)) => (0..count)
                .map(|_| Err(ApiError::Internal(format!("write task failed: {e}"))))
                .collect(),
            Ok(Ok(results)) => results
                .into_iter()
                .map(|r| r.map(Written::New).map_err(|e| self.unavailable(&e)))
                .collect(),
        }
    }

    /// Waits for the outcome of the same event written by another request.
    async fn await_in_flight(
        &self,
        mut rx: tokio::sync::watch::Receiver<crate::dedupe::Outcome>,
        deadline: Instant,
    ) -> Result<Written, ApiError> {
        let outcome = tokio::time::timeout_at(deadline.into(), async {
            rx.wait_for(Option::is_some).await.map(|o| *o)
        })
        .await;
        match outcome {
            Ok(Ok(Some(Ok(d)))) => Ok(Written::Duplicate(d)),
            Err(_) => Err(self.late()),
            _ => Err(ApiError::Unavailable {
                message: "an earlier request with this event_id failed to write; retry".to_owned(),
                retry_after_secs: self.inner.config.retry_after_secs,
            }),
        }
    }

    /// Waits for one started write, until `deadline` at most.
    async fn finish_write(
        &self,
        topic: &str,
        started: Started,
        deadline: Instant,
    ) -> Result<Written, ApiError> {
        match started {
            Started::Answered(w) => Ok(w),
            Started::Pending(w) => {
                let task = self.settle(topic, vec![w]);
                self.await_settled(task, 1, deadline)
                    .await
                    .pop()
                    .unwrap_or_else(|| Err(self.late()))
            }
            Started::InFlight(rx) => self.await_in_flight(rx, deadline).await,
        }
    }

    fn late(&self) -> ApiError {
        ApiError::Unavailable {
            message: format!(
                "kafka did not acknowledge the write within {} ms; retrying with the same event_id is safe",
                self.inner.config.produce_timeout_ms
            ),
            retry_after_secs: self.inner.config.retry_after_secs,
        }
    }

    /// A record as the read endpoints show it, Avro values decoded through the registry.
    pub async fn view(&self, r: ConsumedRecord) -> RecordView {
        let decoded = match r.value.as_deref() {
            // JSON never starts with a zero byte; Confluent framing always does.
            Some(v) if v.first() == Some(&0) => self.inner.schemas.decode(v).await,
            _ => None,
        };
        RecordView::from_record(r, decoded)
    }

    /// The deadline of a write that starts now.
    fn write_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.inner.config.produce_timeout_ms)
    }
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
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid event; `field` names the offending field", body = ErrorBody),
        (status = 503, description = "Kafka (`kafka_unavailable`) or the schema registry (`schema_registry_unavailable`) unavailable; retry after Retry-After seconds", body = ErrorBody),
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
        let bytes = read_json_body(&headers, body, state.inner.config.max_body_bytes).await?;
        check(spec, parse_json(&bytes)?)
    }
    .await
    .inspect_err(|e| m.rejected(e.status_and_code().1))?;
    let event_id = checked.event.event_id.clone();
    // A retry of a written event is answered before encoding: neither a newer schema version
    // nor an unreachable registry turns it into an error.
    let known = state.inner.dedupe.written(&spec.name, &event_id, checked.fingerprint);
    let written = match known {
        Some(d) => Written::Duplicate(d),
        None => {
            let schema = state.inner.schemas.for_topic(spec).await?;
            let prepared = encode(checked, schema.as_ref())
                .inspect_err(|e| m.rejected(e.status_and_code().1))?;
            let deadline = state.write_deadline();
            let started = state.start_write(&spec.name, prepared, &Ingest::now(), deadline).await?;
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
    let mut resp = (
        status,
        Json(EventResponse {
            status: code.to_owned(),
            event_id,
            partition: d.partition,
            offset: d.offset,
        }),
    )
        .into_response();
    if code == "duplicate" {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// `POST /api/v1/events/{topic}/batch`: write many events; a result per event, in order.
#[utoipa::path(
    post, path = "/api/v1/events/{topic}/batch", tag = "events",
    params(("topic" = String, Path, description = "Full topic name")),
    request_body(content = Vec<Event>, content_type = "application/json"),
    responses(
        (status = 200, description = "Every event has a result; invalid ones were not written", body = BatchResponse),
        (status = 400, description = "Malformed JSON or not an array", body = ErrorBody),
        (status = 413, description = "Body or event count over the limit", body = ErrorBody),
        (status = 503, description = "Kafka did not acknowledge some events (status `failed`); retrying the whole batch is safe", body = BatchResponse),
    )
)]
pub async fn publish_batch(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let spec = state.writable_topic(&topic)?;
    let bytes = read_json_body(&headers, body, state.inner.config.max_batch_body_bytes).await?;
    let Value::Array(items) = parse_json(&bytes)? else {
        return Err(ApiError::BadRequest {
            code: "not_an_array",
            message: "a batch body must be a JSON array of events".to_owned(),
        });
    };
    let limit = state.inner.config.max_batch_events;
    if items.len() > limit {
        return Err(ApiError::BatchTooLarge { count: items.len(), limit });
    }
    let m = state.metrics_for(&spec.name);
    // Each event checked, and where it was written if this is a retry (looked up once).
    let checked: Vec<Result<(Checked, Option<Delivered>), ApiError>> = items
        .into_iter()
        .map(|item| {
            let c = check(spec, item)?;
            let known = state.inner.dedupe.written(&spec.name, &c.event.event_id, c.fingerprint);
            Ok((c, known))
        })
        .collect();
    // The schema is fetched once, and only when some event has to be encoded.
    let needs_schema = checked.iter().any(|c| matches!(c, Ok((_, None))));
    let schema = if needs_schema { state.inner.schemas.for_topic(spec).await? } else { None };
    let deadline = state.write_deadline();
    let ingest = Ingest::now();
    let mut results: Vec<Option<BatchItem>> = vec![None; checked.len()];
    let mut pending = Vec::new();
    let mut in_flight = Vec::new();
    // `id` is `None` for an event too malformed to have one.
    let mut done = |index: usize, id: Option<String>, outcome: Result<Written, ApiError>| {
        results[index] = Some(match outcome {
            Ok(Written::New(d)) => ok_item(index, id.unwrap_or_default(), "accepted", d),
            Ok(Written::Duplicate(d)) => {
                m.duplicate(1);
                ok_item(index, id.unwrap_or_default(), "duplicate", d)
            }
            Err(e) => error_item(index, id, &e),
        });
    };
    // Start every write in array order (so same-key events keep their order on the
    // partition), then wait for all of them together.
    for (index, c) in checked.into_iter().enumerate() {
        let (c, known) = match c {
            Ok(c) => c,
            Err(e) => {
                m.rejected(e.status_and_code().1);
                done(index, None, Err(e));
                continue;
            }
        };
        let id = Some(c.event.event_id.clone());
        if let Some(d) = known {
            done(index, id, Ok(Written::Duplicate(d)));
            continue;
        }
        let p = match encode(c, schema.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                m.rejected(e.status_and_code().1);
                done(index, id, Err(e));
                continue;
            }
        };
        match state.start_write(&spec.name, p, &ingest, deadline).await {
            Ok(Started::Answered(w)) => done(index, id, Ok(w)),
            Ok(Started::Pending(w)) => pending.push((index, id, w)),
            Ok(Started::InFlight(rx)) => in_flight.push((index, id, rx)),
            Err(e) => done(index, id, Err(e)),
        }
    }
    let (slots, writes): (Vec<(usize, Option<String>)>, Vec<PendingWrite>) =
        pending.into_iter().map(|(i, id, w)| ((i, id), w)).unzip();
    let task = state.settle(&spec.name, writes);
    let settled = state.await_settled(task, slots.len(), deadline).await;
    for ((index, id), outcome) in slots.into_iter().zip(settled) {
        done(index, id, outcome);
    }
    let waits = in_flight.into_iter().map(|(index, id, rx)| {
        let state = &state;
        async move { (index, id, state.await_in_flight(rx, deadline).await) }
    });
    for (index, id, outcome) in futures::future::join_all(waits).await {
        done(index, id, outcome);
    }
    let results: Vec<BatchItem> = results.into_iter().flatten().collect();
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
        return Ok(r);
    }
    Ok((StatusCode::OK, Json(resp)).into_response())
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

/// Query of `GET .../latest`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LatestQuery {
    /// How many events (default 20, at most `latest_max_limit`).
    pub limit: Option<usize>,
}

/// `GET /api/v1/events/{topic}/latest`: the newest committed events, newest first.
#[utoipa::path(
    get, path = "/api/v1/events/{topic}/latest", tag = "events",
    params(("topic" = String, Path, description = "Full topic name"), LatestQuery),
    responses(
        (status = 200, description = "Newest first", body = LatestResponse),
        (status = 400, description = "Bad limit", body = ErrorBody),
        (status = 404, description = "Unknown topic", body = ErrorBody),
        (status = 503, description = "Kafka unavailable", body = ErrorBody),
    )
)]
pub async fn latest(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<LatestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LatestResponse>, ApiError> {
    let spec = state.topic(&topic)?;
    let Query(q) = query
        .map_err(|e| ApiError::BadRequest { code: "invalid_parameter", message: e.body_text() })?;
    let cfg = &state.inner.config;
    let limit = q.limit.unwrap_or(cfg.latest_default_limit);
    if limit == 0 || limit > cfg.latest_max_limit {
        return Err(ApiError::BadRequest {
            code: "invalid_parameter",
            message: format!("limit must be between 1 and {}", cfg.latest_max_limit),
        });
    }
    let kafka = state.inner.kafka.clone();
    let name = spec.name.clone();
    let timeout = Duration::from_millis(cfg.latest_timeout_ms);
    let records = tokio::task::spawn_blocking(move || read_latest(&kafka, &name, limit, timeout))
        .await
        .map_err(|e| ApiError::Internal(format!("reader task failed: {e}")))?
        .map_err(|e| state.unavailable(&e))?;
    Ok(Json(LatestResponse {
        topic,
        events: {
            let mut views = Vec::with_capacity(records.len());
            for r in records {
                views.push(state.view(r).await);
            }
            views
        },
    }))
}
