//! The DuckDB warehouse, laid out like the Snowflake connector's tables.
//!
//! - `raw.<TABLE>`: one per topic, columns `RECORD_METADATA` and `RECORD_CONTENT` (JSON).
//! - `raw._offsets`: per topic and partition, the next offset to load — the connector's
//!   "channel offset token". It is written in the same transaction as the rows, so after a
//!   crash the sink resumes exactly where the warehouse's rows end.
//! - `analytics.<TABLE>`: for window-result topics, a view with typed columns (window start
//!   and end, key, count, sum, avg, min, max) that needs no JSON functions.
//! - `dedup.<TABLE>`: for event (source) topics, a view of the raw table with one row per
//!   `event_id`, the first by Kafka partition and offset. The raw table keeps what Kafka holds
//!   (a retry that two gateways both wrote is there twice); the view shows each event once.

use duckdb::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// One row for a `raw` table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metadata: String,
    pub content: String,
}

/// Rows per table and the next offset per (topic, partition), written together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Keyed by the shared names of the sink's topics, so buffering a record allocates no key.
    pub rows: HashMap<Arc<str>, Vec<Row>>,
    pub offsets: HashMap<(Arc<str>, i32), i64>,
}

impl Batch {
    pub fn row_count(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// What a topic's table holds, which decides the views beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Events (a source topic): a deduplicated view `dedup.<TABLE>`.
    Events,
    /// The processor's window results: a typed view `analytics.<TABLE>`.
    WindowResults,
    /// Anything else (dead letters, topics outside the catalog): the raw table only.
    Other,
}

/// Double quotes an identifier for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The warehouse.
pub struct Warehouse {
    conn: Connection,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse").finish_non_exhaustive()
    }
}

impl Warehouse {
    /// Opens (creating when missing) the database at `path` for writing, with DuckDB using
    /// `threads` threads (0: its default, one per core).
    pub fn open(path: &Path, threads: usize) -> Result<Self, duckdb::Error> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut config = duckdb::Config::default();
        if threads > 0 {
            config = config.threads(i64::try_from(threads).unwrap_or(i64::MAX))?;
        }
        // Settings are fixed here, for the writer and every reader of the instance alike.
        let conn = Connection::open_with_flags(path, crate::sql::locked_down(config)?)?;
        conn.execute_batch(
            "CREATE SCHEMA IF NOT EXISTS raw;
             CREATE SCHEMA IF NOT EXISTS analytics;
             CREATE SCHEMA IF NOT EXISTS dedup;
             CREATE TABLE IF NOT EXISTS raw._offsets (
                 topic VARCHAR NOT NULL,
                 \"partition\" INTEGER NOT NULL,
                 next_offset BIGINT NOT NULL,
                 PRIMARY KEY (topic, \"partition\")
             );",
        )?;
        Ok(Self { conn })
    }

    /// Another connection to the same database (for queries while the sink writes; see
    /// [`crate::sql`] for what keeps them to reading).
    pub fn reader(&self) -> Result<Connection, duckdb::Error> {
        self.conn.try_clone()
    }

    /// Creates the table of a topic, and the view its kind has beside it.
    pub fn ensure_table(&self, table: &str, kind: TableKind) -> Result<(), duckdb::Error> {
        let t = ident(table);
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS raw.{t} (RECORD_METADATA JSON, RECORD_CONTENT JSON);"
        ))?;
        if kind == TableKind::Events {
            // A row without an event_id (not an event) is kept as it is: it is no copy of
            // anything.
            self.conn.execute_batch(&format!(
                "CREATE OR REPLACE VIEW dedup.{t} AS SELECT RECORD_METADATA, RECORD_CONTENT
                 FROM raw.{t}
                 QUALIFY RECORD_CONTENT->>'event_id' IS NULL OR row_number() OVER (
                     PARTITION BY RECORD_CONTENT->>'event_id'
                     ORDER BY CAST(RECORD_METADATA->>'partition' AS INTEGER),
                              CAST(RECORD_METADATA->>'offset' AS BIGINT)) = 1;"
            ))?;
        }
        if kind == TableKind::WindowResults {
            self.conn.execute_batch(&format!(
                "CREATE OR REPLACE VIEW analytics.{t} AS SELECT
                     CAST(RECORD_CONTENT->>'window_start' AS TIMESTAMPTZ) AS window_start,
                     CAST(RECORD_CONTENT->>'window_end' AS TIMESTAMPTZ) AS window_end,
                     RECORD_CONTENT->>'window' AS \"window\",
                     RECORD_CONTENT->>'key' AS \"key\",
                     CAST(RECORD_CONTENT->>'count' AS BIGINT) AS \"count\",
                     CAST(RECORD_CONTENT->>'sum' AS DOUBLE) AS \"sum\",
                     CAST(RECORD_CONTENT->>'avg' AS DOUBLE) AS \"avg\",
                     CAST(RECORD_CONTENT->>'min' AS DOUBLE) AS \"min\",
                     CAST(RECORD_CONTENT->>'max' AS DOUBLE) AS \"max\",
                     RECORD_CONTENT->'counts' AS counts,
                     RECORD_CONTENT->'attributes' AS attributes,
                     RECORD_CONTENT->>'source_topic' AS source_topic
                 FROM raw.{t};"
            ))?;
        }
        Ok(())
    }

    /// The next offset to load per partition of `topic`.
    pub fn offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, duckdb::Error> {
        let mut stmt = self
            .conn
            .prepare("SELECT \"partition\", next_offset FROM raw._offsets WHERE topic = ?")?;
        let rows =
            stmt.query_map(params![topic], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)?)))?;
        rows.collect()
    }

    /// Writes the rows and the offsets in one transaction.
    pub fn write(&mut self, batch: &Batch) -> Result<(), duckdb::Error> {
        let tx = self.conn.transaction()?;
        for (table, rows) in &batch.rows {
            let mut app = tx.appender_to_db(table, "raw")?;
            for r in rows {
                app.append_row(params![r.metadata, r.content])?;
            }
            app.flush()?;
        }
        {
            let mut stmt = tx.prepare(
                "INSERT INTO raw._offsets VALUES (?, ?, ?)
                 ON CONFLICT (topic, \"partition\") DO UPDATE SET next_offset = excluded.next_offset",
            )?;
            for ((topic, partition), next) in &batch.offsets {
                stmt.execute(params![&**topic, partition, next])?;
            }
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_dedup_view_keeps_the_first_row_of_each_event_id_and_raw_keeps_all() {
        let dir = std::env::temp_dir().join(format!("tributary-dedup-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = Warehouse::open(&dir.join("w.duckdb"), 1).expect("warehouse");
        w.ensure_table("EVENTS", TableKind::Events).expect("table");
        let row = |partition: i32, offset: i64, content: serde_json::Value| Row {
            metadata: json!({"topic": "t", "partition": partition, "offset": offset}).to_string(),
            content: content.to_string(),
        };
        let rows = vec![
            row(1, 7, json!({"event_id": "a", "via": "retry"})),
            row(1, 3, json!({"event_id": "a", "via": "first"})),
            row(0, 9, json!({"event_id": "b"})),
            row(2, 0, json!({"not": "an event"})),
            row(2, 1, json!({"not": "an event"})),
        ];
        let mut batch = Batch::default();
        batch.rows.insert("EVENTS".into(), rows);
        batch.offsets.insert(("t".into(), 1), 8);
        w.write(&batch).expect("written");
        let conn = w.reader().expect("reader");
        let count =
            |sql: &str| crate::sql::query(&conn, sql, 10).expect("query").rows[0][0].clone();
        assert_eq!(count("SELECT count(*) FROM raw.EVENTS").as_deref(), Some("5"));
        assert_eq!(count("SELECT count(*) FROM dedup.EVENTS").as_deref(), Some("4"));
        let first = "SELECT RECORD_CONTENT->>'via' FROM dedup.EVENTS WHERE RECORD_CONTENT->>'event_id' = 'a'";
        assert_eq!(count(first).as_deref(), Some("first"), "the lowest offset wins");
        // Creating it again (every start of the sink) keeps the rows.
        w.ensure_table("EVENTS", TableKind::Events).expect("table again");
        assert_eq!(count("SELECT count(*) FROM dedup.EVENTS").as_deref(), Some("4"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
