//! `tributary sink`: topics into the DuckDB warehouse, exactly once, with `/metrics`,
//! `/health` and the SQL endpoint beside the loop.

use crate::config::Config;
use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Opens the warehouse, then loads until SIGTERM, flushing the buffer.
pub async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let catalog = cfg.catalog()?;
    let (listener, addr) = super::service::bind("sink", cfg.sink.listen).await?;
    let handle = tokio::runtime::Handle::current();
    let (scfg, kafka) = (cfg.sink.clone(), cfg.kafka.clone());
    let sink = tokio::task::spawn_blocking(move || {
        tributary_sink::Sink::setup(scfg, kafka, &catalog, handle)
    })
    .await?
    .context("starting the sink")?;
    let router = tributary_sink::router(sink.status(), sink.reader()?, &cfg.sink);
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
