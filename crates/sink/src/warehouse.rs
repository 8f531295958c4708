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

use duckdb::arrow::array::{ArrayBuilder as _, ArrayRef, RecordBatch, StringBuilder};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The rows of one `raw` table, column by column: each value is written into its column's
/// buffer as it comes, with no allocation of its own, and the columns go to DuckDB whole.
#[derive(Debug, Default)]
pub struct Rows {
    metadata: StringBuilder,
    content: StringBuilder,
}

impl Rows {
    /// Appends one row.
    pub fn push(&mut self, metadata: &str, content: &str) {
        self.metadata.append_value(metadata);
        self.content.append_value(content);
    }

    pub fn len(&self) -> usize {
        self.metadata.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as an Arrow record batch (metadata, content), leaving this empty.
    fn take(&mut self) -> Result<RecordBatch, duckdb::Error> {
        let schema = Schema::new(vec![
            Field::new("RECORD_METADATA", DataType::Utf8, false),
            Field::new("RECORD_CONTENT", DataType::Utf8, false),
        ]);
        let columns: Vec<ArrayRef> =
            vec![Arc::new(self.metadata.finish()), Arc::new(self.content.finish())];
        RecordBatch::try_new(Arc::new(schema), columns)
            .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))
    }
}

/// Rows per table and the next offset per (topic, partition), written together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Keyed by the shared names of the sink's topics, so buffering a record allocates no key.
    pub rows: HashMap<Arc<str>, Rows>,
    pub offsets: HashMap<(Arc<str>, i32), i64>,
}

impl Batch {
    pub fn row_count(&self) -> usize {
        self.rows.values().map(Rows::len).sum()
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

/// How DuckDB runs the warehouse: its `threads`, `memory_limit`, `checkpoint_threshold` and
/// `force_compression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// 0: DuckDB's default, one per core.
    pub threads: usize,
    /// Empty: DuckDB's default.
    pub memory_limit: String,
    /// Empty: DuckDB's default.
    pub checkpoint_threshold: String,
    /// Empty: DuckDB's default (`auto`).
    pub compression: String,
}

impl Tuning {
    /// One thread and DuckDB's defaults otherwise (for tests).
    pub fn single_thread() -> Self {
        Self {
            threads: 1,
            memory_limit: String::new(),
            checkpoint_threshold: String::new(),
            compression: String::new(),
        }
    }
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
    /// Opens (creating when missing) the database at `path` for writing, DuckDB tuned by
    /// `tuning`.
    pub fn open(path: &Path, tuning: &Tuning) -> Result<Self, duckdb::Error> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut config = duckdb::Config::default();
        if tuning.threads > 0 {
            config = config.threads(i64::try_from(tuning.threads).unwrap_or(i64::MAX))?;
        }
        if !tuning.memory_limit.is_empty() {
            config = config.max_memory(&tuning.memory_limit)?;
        }
        if !tuning.checkpoint_threshold.is_empty() {
            config = config.with("checkpoint_threshold", &tuning.checkpoint_threshold)?;
        }
        if !tuning.compression.is_empty() {
            config = config.with("force_compression", &tuning.compression)?;
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

    /// Writes the rows and the offsets in one transaction. The rows are taken from the batch.
    pub fn write(&mut self, batch: &mut Batch) -> Result<(), duckdb::Error> {
        let tx = self.conn.transaction()?;
        for (table, rows) in &mut batch.rows {
            let mut app = tx.appender_to_db(table, "raw")?;
            app.append_record_batch(rows.take()?)?;
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
        let mut w =
            Warehouse::open(&dir.join("w.duckdb"), &Tuning::single_thread()).expect("warehouse");
        w.ensure_table("EVENTS", TableKind::Events).expect("table");
        let mut rows = Rows::default();
        let mut row = |partition: i32, offset: i64, content: serde_json::Value| {
            let metadata = json!({"topic": "t", "partition": partition, "offset": offset});
            rows.push(&metadata.to_string(), &content.to_string());
        };
        row(1, 7, json!({"event_id": "a", "via": "retry"}));
        row(1, 3, json!({"event_id": "a", "via": "first"}));
        row(0, 9, json!({"event_id": "b"}));
        row(2, 0, json!({"not": "an event"}));
        row(2, 1, json!({"not": "an event"}));
        let mut batch = Batch::default();
        batch.rows.insert("EVENTS".into(), rows);
        batch.offsets.insert(("t".into(), 1), 8);
        assert_eq!(batch.row_count(), 5);
        w.write(&mut batch).expect("written");
        assert_eq!(batch.row_count(), 0, "the rows were taken");
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

    /// The compression of a table's columns on disk, per column.
    fn compression_of(w: &Warehouse, table: &str) -> Vec<(String, String)> {
        w.conn.execute_batch("CHECKPOINT").expect("checkpoint");
        let mut stmt = w
            .conn
            .prepare(
                "SELECT DISTINCT column_name, compression FROM pragma_storage_info(?)
                 WHERE segment_type <> 'VALIDITY' ORDER BY ALL",
            )
            .expect("prepared");
        let rows = stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?))).expect("storage info");
        rows.collect::<Result<_, _>>().expect("rows")
    }

    #[test]
    fn json_columns_are_stored_with_the_configured_compression() {
        let dir =
            std::env::temp_dir().join(format!("tributary-compression-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |name: &str, compression: &str| {
            let tuning = Tuning { compression: compression.to_owned(), ..Tuning::single_thread() };
            let mut w = Warehouse::open(&dir.join(name), &tuning).expect("warehouse");
            w.ensure_table("EVENTS", TableKind::Events).expect("table");
            let mut rows = Rows::default();
            for i in 0..5_000 {
                let metadata = json!({"topic": "t", "partition": i % 7, "offset": i});
                let content = json!({"event_id": format!("e-{i}"), "payload": {"url": "/home"}});
                rows.push(&metadata.to_string(), &content.to_string());
            }
            let mut batch = Batch::default();
            batch.rows.insert("EVENTS".into(), rows);
            w.write(&mut batch).expect("written");
            compression_of(&w, "raw.EVENTS")
        };
        let zstd = write("zstd.duckdb", "zstd");
        assert_eq!(
            zstd,
            [("RECORD_CONTENT".into(), "ZSTD".into()), ("RECORD_METADATA".into(), "ZSTD".into())]
        );
        let auto = write("auto.duckdb", "");
        assert!(auto.iter().all(|(_, c)| c != "ZSTD"), "DuckDB's own choice: {auto:?}");
        let bad = Tuning { compression: "squeeze".into(), ..Tuning::single_thread() };
        let err = Warehouse::open(&dir.join("bad.duckdb"), &bad).expect_err("refused");
        assert!(err.to_string().contains("squeeze"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
