//! `GET /api/v1/events/{topic}/latest`: the newest committed events of a topic, read with a
//! reader from the gateway's bounded pool (shared with streams that catch up).

use super::view::RecordView;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tributary_kafka::reader::read_latest;

/// Answer of `GET .../latest`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct LatestResponse {
    pub topic: String,
    /// Newest first.
    pub events: Vec<RecordView>,
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
        (status = 503, description = "Kafka unavailable, or `overloaded`: no pooled reader came free within `latest_timeout_ms`", body = ErrorBody),
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
    // One deadline for waiting for a pooled reader and for reading.
    let deadline = Instant::now() + Duration::from_millis(cfg.latest_timeout_ms);
    let hubs = &state.inner.hubs;
    let Some(permit) = hubs.reader_permit(Duration::from_millis(cfg.latest_timeout_ms)).await
    else {
        return Err(ApiError::Overloaded {
            limit: cfg.reader_pool_size,
            retry_after_secs: cfg.retry_after_secs,
        });
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    let records = tokio::task::spawn_blocking(move || {
        let read = read_latest(&kafka, &name, limit, timeout);
        drop(permit);
        read
    })
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
