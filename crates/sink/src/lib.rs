//! Tributary's warehouse sink: Kafka topics into an embedded DuckDB warehouse laid out like the
//! Snowflake connector's tables, exactly once.
//!
//! - [`warehouse::Warehouse`]: the tables, and the rows and offsets written in one transaction.
//! - [`driver::Sink`]: the consumer group, the buffer and its flushes.

pub mod config;
pub mod driver;
pub mod metrics;
pub mod warehouse;

pub use config::SinkConfig;
pub use driver::{Sink, Status};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Why the sink could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] tributary_kafka::KafkaError),
    #[error("{0}")]
    Setup(String),
}

#[derive(Clone)]
struct AppState {
    status: Arc<Status>,
    reader: Arc<Mutex<duckdb::Connection>>,
}

/// `/metrics`, `/health` and `POST /api/v1/sql` of a running sink.
pub fn router(status: Arc<Status>, reader: duckdb::Connection) -> Router {
    metrics::prometheus();
    Router::new()
        .route("/metrics", get(|| async { metrics::prometheus().render() }))
        .route("/health", get(health))
        .route("/api/v1/sql", post(sql))
        .with_state(AppState { status, reader: Arc::new(Mutex::new(reader)) })
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let running = state.status.liveness.alive();
    let body = serde_json::json!({
        "status": if running { "ok" } else { "unavailable" },
        "last_flush_ms": state.status.last_flush_ms.load(Ordering::Relaxed),
    });
    (if running { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// Runs a query (the body is the SQL text) on the warehouse, while the sink keeps writing.
async fn sql(State(state): State<AppState>, body: String) -> impl IntoResponse {
    let reader = Arc::clone(&state.reader);
    let result = tokio::task::spawn_blocking(move || {
        let conn = reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        warehouse::query(&conn, &body)
    })
    .await;
    match result {
        Ok(Ok((columns, rows))) => {
            (StatusCode::OK, Json(serde_json::json!({"columns": columns, "rows": rows})))
        }
        Ok(Err(message)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_query", "message": message})),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": "internal", "message": e.to_string()})),
        ),
    }
}
