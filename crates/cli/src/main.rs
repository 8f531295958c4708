//! `tributary`: one binary, one thin subcommand per component (see `cmd/`). Configuration
//! comes from `tributary.toml`, `TRIBUTARY_*` environment variables and flags (see
//! docs/configuration.md).

mod cmd;
mod config;
mod platform;
mod signal;

/// mimalloc instead of glibc's malloc: the gateway allocates per event on many threads, and
/// glibc's arena locks were the largest item in its profile (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    Gateway(cmd::service::ListenArgs),
    /// Run the Confluent-compatible schema registry (stored in the `_schemas` topic).
    Registry(cmd::service::ListenArgs),
    /// Run the stream processor: windowed aggregates, enrichment and the dead-letter queue,
    /// exactly once.
    Processor(cmd::processor::Args),
    /// Run the warehouse sink: topics into the DuckDB warehouse, exactly once.
    Sink(cmd::service::ListenArgs),
    /// Start the local platform: Kafka, the topics, registry, gateway, processor, sink and
    /// Prometheus; prints where everything is.
    Up(cmd::platform::UpArgs),
    /// Stop everything `up` started.
    Down(cmd::platform::DownArgs),
    /// Say what of the local platform runs and is healthy.
    Status,
    /// Query the warehouse.
    Warehouse(cmd::warehouse::Args),
    /// Produce synthetic IoT, clickstream and transaction traffic, with late, clock-skewed
    /// and malformed records, plus reference data for the keys.
    Gen(cmd::gen::GenArgs),
    /// Inspect the dead-letter topic and replay what is in it.
    Dlq {
        #[command(subcommand)]
        command: cmd::dlq::DlqCommand,
    },
    /// Manage the topic catalog on the cluster.
    Topics(cmd::topics::Args),
    /// Show the effective configuration.
    Config(cmd::config::Args),
    /// Print the gateway's OpenAPI document.
    Openapi,
}

impl Command {
    /// The subcommand's flags as the top configuration layer.
    fn overrides(&self, flags: &mut config::FlagOverrides) {
        match self {
            Command::Gateway(args) => flags.gateway = args.flags(),
            Command::Registry(args) => flags.registry = args.flags(),
            Command::Processor(args) => args.overrides(flags),
            Command::Sink(args) => flags.sink = args.flags(),
            _ => {}
        }
    }
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration (defaults, file, environment, flags) and runs the subcommand.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut flags = config::FlagOverrides {
        kafka: cli
            .bootstrap_servers
            .clone()
            .map(|b| config::KafkaFlags { bootstrap_servers: Some(b) }),
        ..Default::default()
    };
    cli.command.overrides(&mut flags);
    if let Command::Down(args) = cli.command {
        return cmd::platform::down(args);
    }
    let globals = platform::Globals {
        config: cli.config.clone(),
        bootstrap_servers: cli.bootstrap_servers.clone(),
        log_format: cli.log_format.clone(),
    };
    let cfg = config::load(cli.config.as_deref(), &flags)?;
    match cli.command {
        Command::Gateway(_) => cmd::gateway::run(cfg).await,
        Command::Registry(_) => cmd::registry::run(cfg).await,
        Command::Processor(args) => cmd::processor::run(args, cfg).await,
        Command::Sink(_) => cmd::sink::run(cfg).await,
        Command::Up(args) => cmd::platform::up(args, cfg, globals).await,
        Command::Down(args) => cmd::platform::down(args),
        Command::Status => cmd::platform::status(cfg).await,
        Command::Warehouse(args) => cmd::warehouse::run(args, cfg).await,
        Command::Gen(args) => cmd::gen::run(args, cfg).await,
        Command::Dlq { command } => cmd::dlq::run(&cfg, command).await,
        Command::Topics(args) => cmd::topics::run(args, cfg).await,
        Command::Config(args) => cmd::config::run(args, cfg),
        Command::Openapi => cmd::openapi::run(),
    }
}
