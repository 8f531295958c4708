//! Metric names (one place) and the Prometheus recorder of the processor.

use metrics_exporter_prometheus::PrometheusHandle;

/// Source records processed (not counting replays after a restart), by `topic`.
pub const RECORDS_IN: &str = "processor_records_in_total";
/// Records read again after a restart or rebalance to rebuild open windows, by `topic`.
pub const RECORDS_REPLAYED: &str = "processor_records_replayed_total";
/// Records committed to an output, dead-letter or late topic, by `topic`.
pub const RECORDS_OUT: &str = "processor_records_out_total";
/// Records sent to the dead-letter (or late) topic, by `reason` and `source_topic`.
pub const DLQ_RECORDS: &str = "processor_dlq_records_total";
/// Records that arrived after their window closed, by `topic`.
pub const LATE_RECORDS: &str = "processor_late_records_total";
/// Records dropped because their pane already counted the key's `event_id` (a retry written
/// twice), by `topic`.
pub const DUPLICATES: &str = "processor_duplicates_total";
/// Window results whose key had no reference data, by `table`.
pub const REFERENCE_MISSES: &str = "processor_reference_misses_total";
/// Reference records whose value is not a JSON object (ignored), by `topic`.
pub const REFERENCE_INVALID: &str = "processor_reference_invalid_total";
/// Seconds from a window's end (event time) to its result being committed.
pub const LATENCY: &str = "stream_processing_latency_seconds";
/// Seconds between the wall clock and a partition's watermark, by `topic` and `partition`.
pub const WATERMARK_LAG: &str = "processor_watermark_lag_seconds";
/// Seconds one transaction commit (offsets and commit) took.
pub const COMMIT_DURATION: &str = "processor_transaction_commit_duration_seconds";
/// Transactions by `outcome` (`committed`, `aborted`).
pub const TRANSACTIONS: &str = "processor_transactions_total";
/// Records between the last processed offset and the partition's last stable offset, by
/// `topic` and `partition`.
pub const LAG: &str = "processor_lag_records";
/// Partitions this instance processes.
pub const ASSIGNED: &str = "processor_assigned_partitions";
/// Times every partition went back to its last commit, with a new producer, after the open
/// transaction was lost, by `reason`.
pub const REWINDS: &str = "processor_rewinds_total";
/// Times the consumer and producer were rebuilt after an error, by `reason`.
pub const REBUILDS: &str = "processor_rebuilds_total";

/// Histogram buckets: window latency in seconds to minutes, commits in milliseconds to seconds.
const BUCKETS: &[tributary_ops::Buckets] = &[
    (LATENCY, &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0]),
    (COMMIT_DURATION, &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    tributary_ops::prometheus(BUCKETS)
}
