//! `tributary`: one binary, one thin subcommand per component. Configuration comes from
//! `tributary.toml`, `TRIBUTARY_*` environment variables and flags (see docs/configuration.md).

mod config;
mod dlq;
mod gen;

/// mimalloc instead of glibc's malloc: the gateway allocates per event on many threads, and
/// glibc's arena locks were the largest item in its profile (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tributary_kafka::admin::{apply_topics, describe_topics};

#[derive(Debug, Parser)]
#[command(name = "tributary", version, about = "Real-time event streaming on Apache Kafka")]
struct Cli {
    /// Configuration file (default: ./tributary.toml when it exists).
    #[arg(long, global = true, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers, overriding the file and the environment.
    #[arg(long, global = true)]
    bootstrap_servers: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, global = true, env = "TRIBUTARY_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP/WebSocket ingestion gateway.
    Gateway {
        /// Address to listen on, for example 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the Confluent-compatible schema registry (stored in the `_schemas` topic).
    Registry {
        /// Address to listen on, for example 127.0.0.1:8081.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the stream processor: windowed aggregates, enrichment and the dead-letter queue,
    /// exactly once.
    Processor {
        /// Address of /metrics and /health, for example 127.0.0.1:8082.
        #[arg(long)]
        listen: Option<String>,
        /// This instance's slot (its transactional id is <group_id>-<instance>); give each
        /// running instance its own, and a restarted one the slot it had.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Run the warehouse sink: topics into the DuckDB warehouse, exactly once.
    Sink {
        /// Address of /metrics, /health and the SQL endpoint, for example 127.0.0.1:8084.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Query the warehouse.
    Warehouse {
        #[command(subcommand)]
        command: WarehouseCommand,
    },
    /// Produce synthetic IoT, clickstream and transaction traffic, with late, clock-skewed
    /// and malformed records, plus reference data for the keys.
    Gen(gen::GenArgs),
    /// Inspect the dead-letter topic and replay what is in it.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Manage the topic catalog on the cluster.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the gateway's OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create missing catalog topics; fail on a topic whose partition count differs.
    Apply {
        /// Override every topic's replication factor (3 on MSK).
        #[arg(long)]
        replication_factor: Option<i16>,
    },
    /// Show catalog topics with partitions and end offsets.
    List,
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

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configuration after all layers are applied, as JSON (passwords redacted).
    Show,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    // Colours only on a terminal: `make up` sends the log to a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let listen_flag =
        |l: &Option<String>| l.clone().map(|l| config::GatewayFlags { listen: Some(l) });
    let flags = config::FlagOverrides {
        kafka: cli
            .bootstrap_servers
            .clone()
            .map(|b| config::KafkaFlags { bootstrap_servers: Some(b) }),
        gateway: match &cli.command {
            Command::Gateway { listen } => listen_flag(listen),
            _ => None,
        },
        registry: match &cli.command {
            Command::Registry { listen } => listen_flag(listen),
            _ => None,
        },
        sink: match &cli.command {
            Command::Sink { listen } => listen_flag(listen),
            _ => None,
        },
        processor: match &cli.command {
            Command::Processor { listen, instance } => {
                Some(config::ProcessorFlags { listen: listen.clone(), instance: instance.clone() })
            }
            _ => None,
        },
    };
    let cfg = config::load(cli.config.as_deref(), &flags)?;
    match cli.command {
        Command::Gateway { .. } => {
            let catalog = cfg.catalog()?;
            let listener = tokio::net::TcpListener::bind(cfg.gateway.listen)
                .await
                .with_context(|| format!("binding the gateway to {}", cfg.gateway.listen))?;
            let addr = listener.local_addr()?;
            let state =
                tributary_gateway::AppState::new(cfg.gateway.clone(), cfg.kafka.clone(), catalog)?;
            let auth = if state.auth().is_some() { "jwt" } else { "off" };
            tracing::info!(%addr, bootstrap = %cfg.kafka.bootstrap_servers, auth, "gateway listening");
            tributary_gateway::serve(listener, state, tributary_gateway::shutdown_signal()).await?;
            tracing::info!("gateway stopped");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Registry { .. } => {
            let listener = tokio::net::TcpListener::bind(cfg.registry.listen)
                .await
                .with_context(|| format!("binding the registry to {}", cfg.registry.listen))?;
            let addr = listener.local_addr()?;
            let registry = tributary_registry::Registry::open(&cfg.registry, &cfg.kafka)
                .await
                .with_context(|| {
                    format!(
                        "opening the schema topic {} on {}",
                        cfg.registry.topic, cfg.kafka.bootstrap_servers
                    )
                })?;
            tracing::info!(%addr, topic = %cfg.registry.topic, auth = cfg.registry.auth_user.is_some(), "registry listening");
            tributary_registry::serve(listener, registry, tributary_gateway::shutdown_signal())
                .await?;
            tracing::info!("registry stopped");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Processor { .. } => {
            let catalog = cfg.catalog()?;
            let listener = tokio::net::TcpListener::bind(cfg.processor.listen)
                .await
                .with_context(|| format!("binding the processor to {}", cfg.processor.listen))?;
            let addr = listener.local_addr()?;
            let stop = Arc::new(AtomicBool::new(false));
            let handle = tokio::runtime::Handle::current();
            let (pcfg, kafka, flag) = (cfg.processor.clone(), cfg.kafka.clone(), Arc::clone(&stop));
            let processor = tokio::task::spawn_blocking(move || {
                tributary_processor::Processor::setup(pcfg, kafka, &catalog, handle, flag)
            })
            .await?
            .context("starting the processor")?;
            let server = axum::serve(listener, tributary_processor::router(processor.status()));
            tracing::info!(%addr, instance = %cfg.processor.instance, "processor metrics listening");
            let server = tokio::spawn(async move { server.await });
            let flag = Arc::clone(&stop);
            tokio::spawn(async move {
                tributary_gateway::shutdown_signal().await;
                tracing::info!("stopping: committing the open transaction");
                flag.store(true, Ordering::Relaxed);
            });
            let result = tokio::task::spawn_blocking(move || processor.run(&stop)).await?;
            server.abort();
            result.context("processing")?;
            tracing::info!("processor stopped");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Gen(args) => gen::run(&cfg, args).await,
        Command::Dlq { command } => dlq::run(&cfg, command).await,
        Command::Sink { .. } => {
            let catalog = cfg.catalog()?;
            let listener = tokio::net::TcpListener::bind(cfg.sink.listen)
                .await
                .with_context(|| format!("binding the sink to {}", cfg.sink.listen))?;
            let addr = listener.local_addr()?;
            let handle = tokio::runtime::Handle::current();
            let (scfg, kafka) = (cfg.sink.clone(), cfg.kafka.clone());
            let sink = tokio::task::spawn_blocking(move || {
                tributary_sink::Sink::setup(scfg, kafka, &catalog, handle)
            })
            .await?
            .context("starting the sink")?;
            let router = tributary_sink::router(sink.status(), sink.reader()?);
            let server = tokio::spawn(async move { axum::serve(listener, router).await });
            tracing::info!(%addr, "sink listening");
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            tokio::spawn(async move {
                tributary_gateway::shutdown_signal().await;
                tracing::info!("stopping: flushing the buffer");
                flag.store(true, Ordering::Relaxed);
            });
            let result = tokio::task::spawn_blocking(move || sink.run(&stop)).await?;
            server.abort();
            result.context("loading")?;
            tracing::info!("sink stopped");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Warehouse { command: WarehouseCommand::Sql { query, json } } => {
            warehouse_sql(&cfg, &query, json).await
        }
        Command::Topics { command: TopicsCommand::Apply { replication_factor } } => {
            let mut catalog = cfg.catalog()?;
            if let Some(rf) = replication_factor {
                catalog = catalog.with_replication_factor(rf)?;
            }
            let outcomes = apply_topics(&cfg.kafka, &catalog, Duration::from_secs(30))
                .await
                .with_context(|| format!("applying topics on {}", cfg.kafka.bootstrap_servers))?;
            let mut ok = true;
            for o in &outcomes {
                println!("{o}");
                ok &= o.is_ok();
            }
            if ok {
                Ok(std::process::ExitCode::SUCCESS)
            } else {
                eprintln!("error: some topics differ from the catalog (see MISMATCH above)");
                Ok(std::process::ExitCode::from(2))
            }
        }
        Command::Topics { command: TopicsCommand::List } => {
            let catalog = cfg.catalog()?;
            let names: Vec<String> = catalog.iter().map(|t| t.name.clone()).collect();
            let states = describe_topics(&cfg.kafka, names, Duration::from_secs(15))
                .await
                .with_context(|| format!("describing topics on {}", cfg.kafka.bootstrap_servers))?;
            println!(
                "{:<28} {:>10} {:>10} {:>14} {:<10} ROLE",
                "TOPIC", "PARTITIONS", "EXPECTED", "END OFFSETS", "KEY"
            );
            for (spec, st) in catalog.iter().zip(states) {
                let (parts, ends) = match &st.partitions {
                    None => ("missing".to_owned(), "-".to_owned()),
                    Some(ps) => {
                        (ps.len().to_string(), ps.iter().map(|p| p.high).sum::<i64>().to_string())
                    }
                };
                println!(
                    "{:<28} {:>10} {:>10} {:>14} {:<10} {}",
                    spec.name,
                    parts,
                    spec.partitions,
                    ends,
                    spec.key_field.as_deref().unwrap_or("-"),
                    serde_json::to_value(spec.role)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Config { command: ConfigCommand::Show } => {
            let mut shown = cfg.clone();
            if shown.kafka.sasl_password.is_some() {
                shown.kafka.sasl_password = Some("<redacted>".into());
            }
            if shown.registry.auth_password.is_some() {
                shown.registry.auth_password = Some("<redacted>".into());
            }
            if shown.sink.registry_password.is_some() {
                shown.sink.registry_password = Some("<redacted>".into());
            }
            if shown.processor.registry_password.is_some() {
                shown.processor.registry_password = Some("<redacted>".into());
            }
            if shown.gateway.registry_password.is_some() {
                shown.gateway.registry_password = Some("<redacted>".into());
            }
            if shown.gateway.jwt_secret.is_some() {
                shown.gateway.jwt_secret = Some("<redacted>".into());
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&tributary_gateway::ops::openapi_doc())?);
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// `tributary warehouse sql`: through the running sink, else on the file read-only.
async fn warehouse_sql(
    cfg: &config::Config,
    query: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
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
                    return Ok(std::process::ExitCode::from(2));
                }
                (
                    serde_json::from_value(body["columns"].clone())?,
                    serde_json::from_value(body["rows"].clone())?,
                )
            }
            Err(e) if e.is_connect() => {
                let path = cfg.sink.database_path();
                let (q, p) = (query.to_owned(), path.clone());
                let result = tokio::task::spawn_blocking(move || {
                    let conf = duckdb::Config::default()
                        .access_mode(duckdb::AccessMode::ReadOnly)
                        .map_err(|e| e.to_string())?;
                    let conn = duckdb::Connection::open_with_flags(&p, conf).map_err(|e| {
                        format!("opening {} (is the sink running elsewhere?): {e}", p.display())
                    })?;
                    tributary_sink::warehouse::query(&conn, &q)
                })
                .await?;
                match result {
                    Ok(r) => r,
                    Err(message) => {
                        eprintln!("error: {message}");
                        return Ok(std::process::ExitCode::from(2));
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
    Ok(std::process::ExitCode::SUCCESS)
}
