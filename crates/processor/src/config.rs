//! Processor settings (`[processor]` in `tributary.toml`). Every field has a default.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tributary_schema::client::RegistryClientConfig;

/// What the processor does with one source topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source topic; its key field comes from the topic catalog.
    pub topic: String,
    /// Dotted path of the number aggregated with sum, avg, min and max (for example
    /// `payload.value`); records without it go to the dead-letter topic. `None` only counts.
    #[serde(default)]
    pub measure: Option<String>,
    /// Dotted path of a text field counted per value (clickstream: `event_type`).
    #[serde(default)]
    pub count_by: Option<String>,
    /// Compacted topic whose value for the group key enriches each result.
    #[serde(default)]
    pub reference: Option<String>,
}

/// Settings of `tributary processor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// Address of the `/metrics` and `/health` endpoints.
    pub listen: SocketAddr,
    /// Consumer group shared by every processor instance.
    pub group_id: String,
    /// This instance's slot: its transactional id is `<group_id>-<instance>`. Give every
    /// running instance its own slot, and a restarted instance the slot it had, so that it
    /// fences its predecessor's unfinished transaction at once.
    pub instance: String,
    /// How often output, dead letters and consumed offsets commit as one transaction, in ms.
    pub commit_interval_ms: u64,
    /// Kafka's `transaction.timeout.ms`: how long a crashed instance's open transaction can
    /// hold up the partitions it had.
    pub transaction_timeout_ms: u64,
    /// Width of a tumbling window and a pane, and the slide of sliding windows, in ms.
    pub window_ms: i64,
    /// Width of a sliding window, in panes (5 × 1 minute).
    pub sliding_panes: i64,
    /// How far behind a partition's newest event time a record may arrive and still count
    /// (bounded out-of-orderness), in ms.
    pub out_of_orderness_ms: i64,
    /// How long a window stays open after the watermark passed its end, in ms.
    pub grace_ms: i64,
    /// How long a caught-up partition must be quiet before its watermark moves on without
    /// records (from its newest event time, by the wall time since that event was read), in ms.
    pub idle_ms: i64,
    /// Records whose event time is more than this ahead of their Kafka timestamp go to the
    /// dead-letter topic (`timestamp_out_of_bounds`), in ms.
    pub max_future_ms: i64,
    /// Records whose event time is more than this behind their Kafka timestamp go to the
    /// dead-letter topic (`timestamp_out_of_bounds`), in ms. Also the furthest the idle rule
    /// leaves a partition's watermark behind the wall clock (plus `out_of_orderness_ms`).
    pub max_past_ms: i64,
    /// The most categories (values of a source's `count_by`) one window result lists in
    /// `counts`: those with the most records, ties broken by name; the records of the others
    /// are counted in `other_count`, and how many they are in `other_categories`.
    pub max_categories: usize,
    /// Where records that fail the filters go.
    pub dlq_topic: String,
    /// Where late records go (reason `late`); the dead-letter topic by default.
    pub late_topic: String,
    /// The schema registry for registry-framed input and Avro output (`[processor.registry]`).
    pub registry: RegistryClientConfig,
    /// Longest wait for reference topics to be loaded before processing starts, in ms.
    pub reference_load_timeout_ms: u64,
    /// The sources and what to aggregate in each.
    pub sources: Vec<SourceConfig>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        let source =
            |topic: &str, measure: Option<&str>, count_by: Option<&str>, r: &str| SourceConfig {
                topic: topic.to_owned(),
                measure: measure.map(str::to_owned),
                count_by: count_by.map(str::to_owned),
                reference: Some(r.to_owned()),
            };
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            group_id: "tributary-processor".to_owned(),
            instance: "0".to_owned(),
            commit_interval_ms: 100,
            transaction_timeout_ms: 10_000,
            window_ms: 60_000,
            sliding_panes: 5,
            out_of_orderness_ms: 5_000,
            grace_ms: 10_000,
            idle_ms: 5_000,
            max_future_ms: 5 * 60_000,
            max_past_ms: 60 * 60_000,
            max_categories: 1_000,
            dlq_topic: "events.dlq".to_owned(),
            late_topic: "events.dlq".to_owned(),
            registry: RegistryClientConfig::with_timeout_ms(10_000),
            reference_load_timeout_ms: 30_000,
            sources: vec![
                source("events.iot.sensors", Some("payload.value"), None, "reference.devices"),
                source("events.clickstream", None, Some("event_type"), "reference.users"),
                source("events.transactions", Some("payload.amount"), None, "reference.users"),
            ],
        }
    }
}

impl ProcessorConfig {
    /// The transactional id of this instance's producer.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance)
    }
}
