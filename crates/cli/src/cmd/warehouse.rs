//! `tributary warehouse sql`: queries on the warehouse, through the running sink when there is
//! one (DuckDB lets only one process write a file), else on the file, read-only.

use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Duration;
use tributary_sink::sql;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: WarehouseCommand,
}

#[derive(Debug, Subcommand)]
enum WarehouseCommand {
    /// Run a query and print the result as a table: through the running sink when there is
    /// one (DuckDB lets only one process write a file), else on the file, read-only.
    Sql {
        /// The query, for example "SELECT count(*) FROM raw.EVENTS_CLICKSTREAM".
        query: String,
        /// Print JSON ({"columns": [...], "rows": [[...]]}) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    match args.command {
        WarehouseCommand::Sql { query, json } => sql(&cfg, &query, json).await,
    }
}

/// `tributary warehouse sql`: through the running sink, else on the file read-only.
async fn sql(cfg: &Config, query: &str, json: bool) -> anyhow::Result<ExitCode> {
    let answer = match ask_sink(cfg, query).await? {
        Some(answer) => answer,
        None => {
            let (q, p, max_rows) =
                (query.to_owned(), cfg.sink.database_path(), cfg.sink.sql_max_rows);
            let result = tokio::task::spawn_blocking(move || {
                let conn = sql::open_read_only(&p)?;
                sql::query(&conn, &q, max_rows).map_err(|e| e.to_string())
            })
            .await?;
            result
        }
    };
    let answer = match answer {
        Ok(a) => a,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    if answer.truncated {
        eprintln!(
            "warning: the result has more than {} rows ([sink] sql_max_rows); these are the first",
            answer.rows.len()
        );
    }
    if json {
        let (c, r, t) = (&answer.columns, &answer.rows, answer.truncated);
        println!("{}", serde_json::json!({"columns": c, "rows": r, "truncated": t}));
    } else {
        print!("{}", sql::render(&answer.columns, &answer.rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// The running sink's answer to `query` (`Err`: its refusal), or `None` when no sink listens.
async fn ask_sink(
    cfg: &Config,
    query: &str,
) -> anyhow::Result<Option<Result<sql::Answer, String>>> {
    let url = format!("http://{}/api/v1/sql", cfg.sink.listen);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let mut request = http.post(&url).json(&serde_json::json!({ "sql": query }));
    if let Some(token) = &cfg.sink.sql_token {
        request = request.bearer_auth(token.expose());
    }
    let resp = match request.send().await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(e).context(format!("asking the sink at {url}")),
    };
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("reading the sink's answer")?;
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("the query failed").to_owned();
        return Ok(Some(Err(message)));
    }
    Ok(Some(Ok(sql::Answer {
        columns: serde_json::from_value(body["columns"].clone())?,
        rows: serde_json::from_value(body["rows"].clone())?,
        truncated: body["truncated"].as_bool().unwrap_or(false),
    })))
}
