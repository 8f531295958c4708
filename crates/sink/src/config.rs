//! Sink settings (`[sink]` in `tributary.toml`). Every field has a default.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tributary_core::secret::Secret;
use tributary_schema::client::RegistryClientConfig;

/// Settings of `tributary sink`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Address of `/metrics`, `/health` and the SQL endpoint (`POST /api/v1/sql`).
    pub listen: SocketAddr,
    /// The DuckDB file; `~` is the home directory. Created with its folder when missing.
    pub database: String,
    /// Consumer group of the sink.
    pub group_id: String,
    /// Topics to load; empty means every source, output and dead-letter topic of the catalog.
    pub topics: Vec<String>,
    /// Table name per topic, like the Snowflake connector's `snowflake.topic2table.map`; a topic
    /// without an entry gets its name in upper case with `.` and `-` as `_`.
    pub tables: BTreeMap<String, String>,
    /// Flush when this many records are buffered (the connector's `buffer.count.records`).
    pub buffer_count_records: usize,
    /// Flush when the oldest buffered record is this old, in seconds (`buffer.flush.time`).
    pub buffer_flush_time_secs: f64,
    /// Flush when the buffered values reach this many bytes (`buffer.size.bytes`).
    pub buffer_size_bytes: usize,
    /// Where records that cannot be decoded go.
    pub dlq_topic: String,
    /// The schema registry for registry-framed values (`[sink.registry]`).
    pub registry: RegistryClientConfig,
    /// Threads DuckDB may use for writes and queries (its `threads` setting); 0 means one per
    /// core, DuckDB's own default. One by default: the writer needs no more, and on a small host
    /// a second one competed with the loader and the broker (a sixth fewer rows a second).
    pub warehouse_threads: usize,
    /// Most memory DuckDB may hold for the warehouse (its `memory_limit`, e.g. `"64MB"`,
    /// `"2GB"`); past it, cached blocks are dropped and large queries spill to
    /// `<database>.tmp`. DuckDB's own default is 80% of the machine's memory.
    pub warehouse_memory_limit: String,
    /// How much write-ahead log DuckDB collects before it checkpoints the rows into the
    /// database file, compressed (its `checkpoint_threshold`). Each checkpoint compresses the
    /// table's last, partly filled row group again, so a small threshold costs CPU on every
    /// flush; one at or past `warehouse_memory_limit` makes DuckDB move the rows waiting for
    /// the checkpoint to its temporary file and read them back; a larger one makes a restart
    /// after a crash replay more log.
    pub warehouse_checkpoint_threshold: String,
    /// How DuckDB compresses the warehouse's columns at a checkpoint (its `force_compression`):
    /// `"zstd"` by default, which takes JSON text to about a third of the size of DuckDB's own
    /// choice for a third less CPU; `"auto"` lets DuckDB try its methods on every column and
    /// keep the smallest. A method a column's type cannot take leaves that column to DuckDB.
    pub warehouse_compression: String,
    /// Most rows a query on `POST /api/v1/sql` answers with; a longer result is cut there and
    /// flagged `"truncated": true`.
    pub sql_max_rows: usize,
    /// How long a query on `POST /api/v1/sql` may run, in milliseconds, before it is
    /// interrupted and refused with `query_timeout`.
    pub sql_timeout_ms: u64,
    /// The bearer token `POST /api/v1/sql` requires when set (`Authorization: Bearer <token>`);
    /// `tributary warehouse sql` sends it. Unset, only requests sent to an address or `localhost`
    /// are taken. Never printed; prefer `TRIBUTARY_SINK__SQL_TOKEN`.
    pub sql_token: Option<Secret>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8084)),
            database: "~/.cache/tributary/warehouse/tributary.duckdb".to_owned(),
            group_id: "tributary-sink".to_owned(),
            topics: Vec::new(),
            tables: BTreeMap::new(),
            buffer_count_records: 10_000,
            buffer_flush_time_secs: 60.0,
            buffer_size_bytes: 5_000_000,
            dlq_topic: "events.dlq".to_owned(),
            registry: RegistryClientConfig::with_timeout_ms(10_000),
            warehouse_threads: 1,
            warehouse_memory_limit: "64MB".to_owned(),
            warehouse_checkpoint_threshold: "48MB".to_owned(),
            warehouse_compression: "zstd".to_owned(),
            sql_max_rows: 10_000,
            sql_timeout_ms: 30_000,
            sql_token: None,
        }
    }
}

impl SinkConfig {
    /// The database path with `~` expanded.
    pub fn database_path(&self) -> PathBuf {
        match self.database.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from(&self.database), |h| PathBuf::from(h).join(rest)),
            None => PathBuf::from(&self.database),
        }
    }

    /// The table of `topic`.
    pub fn table_for(&self, topic: &str) -> String {
        self.tables.get(topic).cloned().unwrap_or_else(|| {
            topic
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_follow_the_map_or_the_topic_name() {
        let mut c = SinkConfig::default();
        assert_eq!(c.table_for("events.iot.sensors"), "EVENTS_IOT_SENSORS");
        assert_eq!(c.table_for("aggregates.clickstream.1m"), "AGGREGATES_CLICKSTREAM_1M");
        c.tables.insert("events.clickstream".into(), "CLICKS".into());
        assert_eq!(c.table_for("events.clickstream"), "CLICKS");
    }
}
