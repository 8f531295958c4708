//! Tributary's warehouse sink: Kafka topics into an embedded DuckDB warehouse laid out like the
//! Snowflake connector's tables, exactly once.
//!
//! - [`warehouse::Warehouse`]: the tables, and the rows and offsets written in one transaction.
//! - [`rows`]: a record as a warehouse row, and when the buffer is flushed.
//! - [`setup::Sink`]: from settings to a running sink, rebuilt after failures.
//! - `loader`: the loop of one consumer-group member — the buffer, dead letters, flushes,
//!   rebalances and lag — and `writer`, the thread that writes each flush to the warehouse.

pub mod config;
mod loader;
pub mod metrics;
pub mod rows;
pub mod setup;
pub mod warehouse;
mod writer;

pub use config::SinkConfig;
pub use loader::Rebuild;
pub use setup::{Sink, SinkHealth};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use std::sync::{Arc, Mutex};

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A setting the sink cannot run with.
    #[error("{0}")]
    Config(String),
    /// The warehouse could not be opened or prepared.
    #[error("{0}")]
    Warehouse(String),
    #[error(transparent)]
    Kafka(#[from] tributary_kafka::KafkaError),
}

/// `/metrics`, `/health` and `POST /api/v1/sql` of a running sink.
pub fn router(health: Arc<SinkHealth>, reader: duckdb::Connection) -> Router {
    let sql =
        Router::new().route("/api/v1/sql", post(sql)).with_state(Arc::new(Mutex::new(reader)));
    tributary_ops::router(health, metrics::prometheus()).merge(sql)
}

/// Runs a query (the body is the SQL text) on the warehouse, while the sink keeps writing.
async fn sql(
    State(reader): State<Arc<Mutex<duckdb::Connection>>>,
    body: String,
) -> impl IntoResponse {
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
