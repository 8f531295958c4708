//! `tributary gateway`: the HTTP/WebSocket ingestion gateway.

use crate::config::{Config, FlagOverrides, GatewayFlags};
use anyhow::Context as _;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on, for example 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
}

impl Args {
    /// The flags as a configuration layer.
    pub fn overrides(&self, flags: &mut FlagOverrides) {
        flags.gateway = self.listen.clone().map(|l| GatewayFlags { listen: Some(l) });
    }
}

/// Serves until SIGTERM, then drains in-flight requests.
pub async fn run(_args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    let catalog = cfg.catalog()?;
    let listener = tokio::net::TcpListener::bind(cfg.gateway.listen)
        .await
        .with_context(|| format!("binding the gateway to {}", cfg.gateway.listen))?;
    let addr = listener.local_addr()?;
    let state = tributary_gateway::AppState::new(cfg.gateway.clone(), cfg.kafka.clone(), catalog)?;
    let auth = if state.auth().is_some() { "jwt" } else { "off" };
    tracing::info!(%addr, bootstrap = %cfg.kafka.bootstrap_servers, auth, "gateway listening");
    tributary_gateway::serve(listener, state, crate::signal::shutdown_signal()).await?;
    tracing::info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}
