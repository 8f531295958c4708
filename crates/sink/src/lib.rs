//! Tributary's warehouse sink: Kafka topics into an embedded DuckDB warehouse laid out like the
//! Snowflake connector's tables, exactly once.
//!
//! - [`warehouse::Warehouse`]: the tables, and the rows and offsets written in one transaction.
//! - [`rows`]: a record as a warehouse row, and when the buffer is flushed.
//! - [`setup::Sink`]: from settings to a running sink, rebuilt after failures.
//! - [`sql`]: queries on the warehouse, kept to reading; `api`: `POST /api/v1/sql`.
//! - `loader`: the loop of one consumer-group member — the buffer, dead letters, flushes,
//!   rebalances and lag — and `writer`, the thread that writes each flush to the warehouse.

mod api;
pub mod config;
mod loader;
pub mod metrics;
pub mod rows;
pub mod setup;
pub mod sql;
pub mod warehouse;
mod writer;

pub use config::SinkConfig;
pub use loader::Rebuild;
pub use setup::{Sink, SinkHealth};

use axum::routing::post;
use axum::Router;
use std::sync::Arc;

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

/// `/metrics`, `/health` and `POST /api/v1/sql` of a running sink; `reader` is a connection
/// to the warehouse that each query clones.
pub fn router(health: Arc<SinkHealth>, reader: duckdb::Connection, config: &SinkConfig) -> Router {
    let state = Arc::new(api::SqlState::new(reader, config));
    let sql = Router::new().route("/api/v1/sql", post(api::sql)).with_state(state);
    tributary_ops::router(health, metrics::prometheus()).merge(sql)
}
