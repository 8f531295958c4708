//! `tributary gateway`: the HTTP/WebSocket ingestion gateway.

use crate::config::Config;
use std::process::ExitCode;

/// Serves until SIGTERM, then drains in-flight requests.
pub async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let catalog = cfg.catalog()?;
    let (listener, addr) = super::service::bind("gateway", cfg.gateway.listen).await?;
    let state = tributary_gateway::AppState::new(cfg.gateway.clone(), cfg.kafka.clone(), catalog)?;
    let auth = if state.auth().is_some() { "jwt" } else { "off" };
    let tls = state.tls();
    tracing::info!(%addr, bootstrap = %cfg.kafka.bootstrap_servers, auth, tls, "gateway listening");
    tributary_gateway::serve(listener, state, crate::signal::shutdown_signal()).await?;
    tracing::info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}
