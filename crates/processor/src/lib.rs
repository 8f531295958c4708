//! Tributary's stream processor: filter → enrich → key → window → aggregate, exactly once.
//!
//! - [`window::Engine`]: event-time panes, 1-minute tumbling and 5-minute sliding windows
//!   built from those panes, a grace period, late records reported rather than dropped.
//! - [`watermark::Clock`]: one partition's watermark, with the idle rule.
//! - [`task::Task`]: one input partition's state and how it is recovered by replay.
//! - [`dedupe::Seen`]: the events each pane counted, so a retry written twice counts once.
//! - [`record`]: decoding and the filter that sends bad records to the dead-letter topic.
//! - [`reference`]: reference data from compacted topics, kept current.
//! - [`output`]: a window result as the record written to its output topic.
//! - [`setup::Processor`]: from settings to a running processor, rebuilt after failures.
//! - `worker` and `partitions`: the loop of one consumer-group member — records, the
//!   transactions, rewinds to the last commit, rebalances and lag — in the states of
//!   [`phase::Phase`].

pub mod config;
pub mod dedupe;
pub mod metrics;
pub mod output;
mod partitions;
pub mod phase;
pub mod record;
pub mod reference;
pub mod setup;
pub mod task;
pub mod watermark;
pub mod window;
mod worker;

pub use config::{ProcessorConfig, SourceConfig};
pub use setup::{Processor, ProcessorHealth};

use std::sync::Arc;

/// Why the processor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A setting the processor cannot run with, or one the topic catalog contradicts.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] tributary_kafka::KafkaError),
    /// The output schema could not be registered or read back.
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Setup(String),
}

/// `/metrics` (Prometheus) and `/health` of a running processor.
pub fn router(health: Arc<ProcessorHealth>) -> axum::Router {
    tributary_ops::router(health, metrics::prometheus())
}
