//! Metric names (one place) and the Prometheus recorder of the sink.

use metrics_exporter_prometheus::PrometheusHandle;

/// Histogram buckets of flushes: seconds, and rows.
const BUCKETS: &[tributary_ops::Buckets] = &[
    (FLUSH_DURATION, &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
    (FLUSH_ROWS, &[1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0]),
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    tributary_ops::prometheus(BUCKETS)
}

/// Rows committed to the warehouse, by `table`.
pub const ROWS_WRITTEN: &str = "sink_rows_written_total";
/// Seconds one flush (one DuckDB transaction: rows and offsets) took.
pub const FLUSH_DURATION: &str = "sink_flush_duration_seconds";
/// Rows per flush.
pub const FLUSH_ROWS: &str = "sink_flush_rows";
/// Flushes by `trigger` (`count`, `bytes`, `time`, `rebalance`, `shutdown`).
pub const FLUSHES: &str = "sink_flushes_total";
/// Records between the last stable offset and what the warehouse has, by `topic` and
/// `partition` (from the offsets committed after each flush).
pub const LAG: &str = "sink_lag_records";
/// Records sent to the dead-letter topic, by `reason`.
pub const DEAD_LETTERS: &str = "sink_dead_letters_total";
/// Times the consumer was rebuilt after an error, by `reason`.
pub const REBUILDS: &str = "sink_rebuilds_total";
