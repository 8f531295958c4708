//! `tributary warehouse sql`: queries on the warehouse, through the running sink when there is
//! one (DuckDB lets only one process write a file), else on the file, read-only.

use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Duration;

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
    let url = format!("http://{}/api/v1/sql", cfg.sink.listen);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let (columns, rows): (Vec<String>, Vec<Vec<Option<String>>>) =
        match http.post(&url).body(query.to_owned()).send().await {
            Ok(resp) => {
                let status = resp.status();
                let body: serde_json::Value =
                    resp.json().await.context("reading the sink's answer")?;
                if !status.is_success() {
                    eprintln!("error: {}", body["message"].as_str().unwrap_or("the query failed"));
                    return Ok(ExitCode::from(2));
                }
                (
                    serde_json::from_value(body["columns"].clone())?,
                    serde_json::from_value(body["rows"].clone())?,
                )
            }
            Err(e) if e.is_connect() => {
                let (q, p) = (query.to_owned(), cfg.sink.database_path());
                let result = tokio::task::spawn_blocking(move || {
                    tributary_sink::warehouse::query_file(&p, &q)
                })
                .await?;
                match result {
                    Ok(r) => r,
                    Err(message) => {
                        eprintln!("error: {message}");
                        return Ok(ExitCode::from(2));
                    }
                }
            }
            Err(e) => return Err(e).context(format!("asking the sink at {url}")),
        };
    if json {
        println!("{}", serde_json::json!({"columns": columns, "rows": rows}));
    } else {
        print!("{}", tributary_sink::warehouse::render(&columns, &rows));
    }
    Ok(ExitCode::SUCCESS)
}
