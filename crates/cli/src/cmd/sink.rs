//! `tributary sink`: topics into the DuckDB warehouse, exactly once, with `/metrics`,
//! `/health` and the SQL endpoint beside the loop.

use crate::config::{Config, FlagOverrides, GatewayFlags};
use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of /metrics, /health and the SQL endpoint, for example 127.0.0.1:8084.
    #[arg(long)]
    listen: Option<String>,
}

impl Args {
    /// The flags as a configuration layer.
    pub fn overrides(&self, flags: &mut FlagOverrides) {
        flags.sink = self.listen.clone().map(|l| GatewayFlags { listen: Some(l) });
    }
}

/// Opens the warehouse, then loads until SIGTERM, flushing the buffer.
pub async fn run(_args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
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
    tracing::info!(%addr, "sink listening");
    super::service::run_until_signal(
        listener,
        router,
        Arc::new(AtomicBool::new(false)),
        "stopping: flushing the buffer",
        move |stop| sink.run(stop).context("loading"),
    )
    .await?;
    tracing::info!("sink stopped");
    Ok(ExitCode::SUCCESS)
}
