//! Tributary's stream processor: filter → enrich → key → window → aggregate, exactly once.
//!
//! - [`window::Engine`]: event-time panes, 1-minute tumbling and 5-minute sliding windows
//!   built from those panes, a grace period, late records reported rather than dropped.
//! - [`watermark::Clock`]: one partition's watermark, with the idle rule.
//! - [`task::Task`]: one input partition's state and how it is recovered by replay.
//! - [`record`]: decoding and the filter that sends bad records to the dead-letter topic.
//! - [`reference`]: reference data from compacted topics, kept current.
//! - [`driver::Processor`]: the consumer group, the transactions and the rebalances.

pub mod config;
pub mod driver;
pub mod metrics;
pub mod record;
pub mod reference;
pub mod task;
pub mod watermark;
pub mod window;

pub use config::{ProcessorConfig, SourceConfig};
pub use driver::{Processor, Status};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why the processor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] tributary_kafka::KafkaError),
    #[error("{0}")]
    Setup(String),
}

/// `/metrics` (Prometheus) and `/health` of a running processor.
pub fn router(status: Arc<Status>) -> Router {
    metrics::prometheus();
    Router::new()
        .route("/metrics", get(|| async { metrics::prometheus().render() }))
        .route("/health", get(health))
        .with_state(status)
}

async fn health(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let running = status.liveness.alive();
    let body = serde_json::json!({
        "status": if running { "ok" } else { "unavailable" },
        "assigned_partitions": status.assigned.load(Ordering::Relaxed),
        "last_commit_ms": status.last_commit_ms.load(Ordering::Relaxed),
    });
    let code = if running { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body))
}
