//! The query side of the warehouse: what `POST /api/v1/sql` and `tributary warehouse sql` run,
//! and what keeps a query to reading the warehouse.
//!
//! Three layers, each enough on its own for the attacks we know of:
//! - [`check_one_query`]: DuckDB's own parser splits the text and classifies each statement;
//!   exactly one statement, a query (`SELECT`, `WITH`, `FROM`, `VALUES`, `TABLE`, `DESCRIBE`,
//!   `SHOW`, `SUMMARIZE`), passes. The text that finally runs is checked again.
//! - [`query`] runs it in a `READ ONLY` transaction that is always rolled back.
//! - [`locked_down`]: the DuckDB instance (the sink's writer and every reader share it) has no
//!   external access (no file but the warehouse's own, no network), installs and loads no
//!   extension, and its configuration is locked, so no query can turn any of it back on.

use duckdb::{AccessMode, Connection};
use std::path::Path;

/// Column names and rows of a query result, every value as text (`None` for NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// The result had more rows than the cap: `rows` holds the first ones.
    pub truncated: bool,
}

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not exactly one query: a write, a setting, several statements, or text that does not
    /// parse.
    #[error("{0}")]
    Refused(String),
    /// DuckDB could not run the query (an unknown table, a file it may not read, a type error,
    /// or an interrupt).
    #[error("{0}")]
    Failed(String),
}

fn failed(e: duckdb::Error) -> QueryError {
    QueryError::Failed(e.to_string())
}

/// Settings of the whole DuckDB instance — the sink's writer and its readers alike, since
/// DuckDB scopes them to the database, not to a connection. The writer needs none of what they
/// take away: it writes the warehouse file (always allowed) with statically linked extensions.
pub fn locked_down(config: duckdb::Config) -> Result<duckdb::Config, duckdb::Error> {
    config
        .enable_external_access(false)?
        .with("autoinstall_known_extensions", "false")?
        .with("autoload_known_extensions", "false")?
        .with("allow_community_extensions", "false")?
        .with("lock_configuration", "true")
}

/// Opens the warehouse file read-only and [`locked_down`] (for when no sink holds it: DuckDB
/// lets only one process write a file).
pub fn open_read_only(path: &Path) -> Result<Connection, String> {
    let conf = duckdb::Config::default()
        .access_mode(AccessMode::ReadOnly)
        .and_then(locked_down)
        .map_err(|e| e.to_string())?;
    Connection::open_with_flags(path, conf)
        .map_err(|e| format!("opening {} (is the sink running elsewhere?): {e}", path.display()))
}

/// Checks that `sql` is exactly one query, with DuckDB's parser: `json_serialize_sql` parses the
/// text, lists every statement in it and serializes only queries.
pub fn check_one_query(conn: &Connection, sql: &str) -> Result<(), QueryError> {
    let verdict: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0))
        .map_err(failed)?;
    let verdict: serde_json::Value = serde_json::from_str(&verdict)
        .map_err(|e| QueryError::Failed(format!("reading the parser's verdict: {e}")))?;
    if verdict["error"] != false {
        let message = verdict["error_message"].as_str().unwrap_or("unknown error");
        return Err(QueryError::Refused(if verdict["error_type"] == "not implemented" {
            "only a query is accepted (SELECT, WITH, FROM, VALUES, TABLE, DESCRIBE, SHOW or \
             SUMMARIZE), nothing that writes, attaches, copies, loads or sets"
                .to_owned()
        } else {
            format!("the query does not parse: {message}")
        }));
    }
    match verdict["statements"].as_array().map_or(0, Vec::len) {
        1 => Ok(()),
        0 => Err(QueryError::Refused("the query is empty".to_owned())),
        n => Err(QueryError::Refused(format!("exactly one statement is accepted, not {n}"))),
    }
}

/// Runs one query (see [`check_one_query`]) in a read-only transaction that is rolled back, and
/// returns at most `max_rows` rows, every value as text.
pub fn query(conn: &Connection, sql: &str, max_rows: usize) -> Result<Answer, QueryError> {
    check_one_query(conn, sql)?;
    let body = sql.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    // Every column as text: one printable form for every DuckDB type. One row past the cap
    // tells a result that fits from one that does not.
    let wrapped = format!(
        "SELECT COLUMNS(*)::VARCHAR FROM (\n{body}\n) LIMIT {}",
        max_rows.saturating_add(1)
    );
    check_one_query(conn, &wrapped)?;
    conn.execute_batch("BEGIN TRANSACTION READ ONLY").map_err(failed)?;
    let answer = fetch(conn, &wrapped, max_rows);
    let rolled_back = conn.execute_batch("ROLLBACK");
    let answer = answer?;
    rolled_back.map_err(failed)?;
    Ok(answer)
}

/// The rows of `sql` (every column text), at most `max_rows`.
fn fetch(conn: &Connection, sql: &str, max_rows: usize) -> Result<Answer, QueryError> {
    let mut stmt = conn.prepare(sql).map_err(failed)?;
    let mut answer = Answer::default();
    let mut rows = stmt.query([]).map_err(failed)?;
    let mut columns: Option<Vec<String>> = None;
    while let Some(row) = rows.next().map_err(failed)? {
        if answer.rows.len() == max_rows {
            answer.truncated = true;
            break;
        }
        let stmt_ref = row.as_ref();
        let n = stmt_ref.column_count();
        if columns.is_none() {
            columns = Some(stmt_ref.column_names());
        }
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(row.get::<_, Option<String>>(i).map_err(failed)?);
        }
        answer.rows.push(values);
    }
    drop(rows);
    answer.columns = columns.unwrap_or_else(|| stmt.column_names());
    Ok(answer)
}

/// A result as an aligned text table.
pub fn render(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".to_owned());
    let mut width: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(cell(v).chars().count());
            }
        }
    }
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&width)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(columns.to_vec());
    out.push('\n');
    out.push_str(&width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(cell).collect()));
        out.push('\n');
    }
    out.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::{Batch, TableKind, Warehouse};
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    /// A warehouse in a fresh folder, with one partition's offset recorded by the writer.
    fn warehouse() -> (std::path::PathBuf, Warehouse) {
        let dir = std::env::temp_dir().join(format!(
            "tributary-sql-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut wh =
            Warehouse::open(&dir.join("w.duckdb"), &crate::warehouse::Tuning::single_thread())
                .expect("open");
        wh.ensure_table("T", TableKind::Other).expect("table");
        let mut batch =
            Batch { rows: HashMap::new(), offsets: HashMap::from([(("topic".into(), 0), 42)]) };
        wh.write(&mut batch).expect("write");
        (dir, wh)
    }

    fn offsets(conn: &Connection) -> Vec<Vec<Option<String>>> {
        query(conn, "SELECT * FROM raw._offsets", 10).expect("offsets").rows
    }

    #[test]
    fn only_one_query_runs_and_nothing_writes_reads_files_or_loads() {
        let (dir, wh) = warehouse();
        let conn = wh.reader().expect("reader");
        let before = offsets(&conn);
        assert_eq!(before, vec![vec![Some("topic".into()), Some("0".into()), Some("42".into())]]);
        let copy = dir.join("copy.csv");
        let attach = dir.join("other.duckdb");
        for sql in [
            "select 1); DELETE FROM raw._offsets; select (1".to_owned(),
            "SELECT 1; DELETE FROM raw._offsets".to_owned(),
            "DELETE FROM raw._offsets".to_owned(),
            "SELECT * FROM read_text('/proc/self/environ')".to_owned(),
            "SELECT * FROM read_blob('/etc/passwd')".to_owned(),
            "SELECT * FROM glob('/*')".to_owned(),
            format!("COPY raw._offsets TO '{}'", copy.display()),
            format!("ATTACH '{}' AS other", attach.display()),
            "INSTALL httpfs".to_owned(),
            "LOAD httpfs".to_owned(),
            "SET enable_external_access = true".to_owned(),
            "SET lock_configuration = false".to_owned(),
            "INSERT INTO raw._offsets VALUES ('x', 1, 1)".to_owned(),
            "CREATE TABLE raw.stolen AS SELECT 1".to_owned(),
            "SELECT * FROM query('DELETE FROM raw._offsets')".to_owned(),
            "EXPLAIN ANALYZE DELETE FROM raw._offsets".to_owned(),
            String::new(),
        ] {
            let e = query(&conn, &sql, 10).expect_err(&sql);
            assert!(!e.to_string().is_empty(), "{sql}");
        }
        assert!(!copy.exists() && !attach.exists(), "no file written");
        assert_eq!(offsets(&conn), before, "raw._offsets intact");
        // The settings cannot be changed on any connection, the writer's included.
        assert!(conn.execute_batch("SET enable_external_access = true").is_err());
        assert!(conn.execute_batch("SET autoinstall_known_extensions = true").is_err());
        // Queries of every kind still answer, and the writer still writes.
        assert_eq!(
            query(&conn, "SELECT 1 AS one;", 10).expect("select").rows,
            [[Some("1".into())]]
        );
        assert!(!query(&conn, "DESCRIBE raw._offsets", 10).expect("describe").rows.is_empty());
        assert!(query(&conn, "SUMMARIZE raw._offsets", 10).is_ok());
        assert!(query(&conn, "SHOW TABLES", 10).is_ok());
        assert!(query(&conn, "WITH x AS (SELECT 2) FROM x", 10).is_ok());
        assert!(query(&conn, "SELECT '{\"a\":1}'::JSON->>'a'", 10).is_ok(), "JSON is loaded");
        let mut wh = wh;
        let mut batch =
            Batch { rows: HashMap::new(), offsets: HashMap::from([(("topic".into(), 0), 43)]) };
        wh.write(&mut batch).expect("the writer still writes");
        assert_eq!(offsets(&conn)[0][2].as_deref(), Some("43"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_result_over_the_cap_is_cut_and_flagged() {
        let (dir, wh) = warehouse();
        let conn = wh.reader().expect("reader");
        let answer = query(&conn, "SELECT * FROM range(100) t(i) ORDER BY i", 10).expect("query");
        assert_eq!(answer.columns, ["i"]);
        assert_eq!(answer.rows.len(), 10);
        assert_eq!(answer.rows[9], [Some("9".into())]);
        assert!(answer.truncated);
        let answer = query(&conn, "SELECT * FROM range(10)", 10).expect("query");
        assert_eq!((answer.rows.len(), answer.truncated), (10, false));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_interrupt_stops_a_running_query() {
        let (dir, wh) = warehouse();
        let conn = wh.reader().expect("reader");
        let handle = conn.interrupt_handle();
        let started = Instant::now();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            handle.interrupt();
        });
        let e = query(&conn, "SELECT sum(hash(i)) FROM range(1000000000000) t(i)", 10)
            .expect_err("interrupted");
        stopper.join().expect("stopper");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}: {e}", started.elapsed());
        assert!(e.to_string().to_lowercase().contains("interrupt"), "{e}");
        assert!(query(&conn, "SELECT 1", 10).is_ok(), "the connection still answers");
        let _ = std::fs::remove_dir_all(dir);
    }
}
