//! `tributary registry`: the Confluent-compatible schema registry (schemas in `_schemas`).

use crate::config::{Config, FlagOverrides, GatewayFlags};
use anyhow::Context as _;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on, for example 127.0.0.1:8081.
    #[arg(long)]
    listen: Option<String>,
}

impl Args {
    /// The flags as a configuration layer.
    pub fn overrides(&self, flags: &mut FlagOverrides) {
        flags.registry = self.listen.clone().map(|l| GatewayFlags { listen: Some(l) });
    }
}

/// Reads the schema topic, then serves until SIGTERM.
pub async fn run(_args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(cfg.registry.listen)
        .await
        .with_context(|| format!("binding the registry to {}", cfg.registry.listen))?;
    let addr = listener.local_addr()?;
    let registry = tributary_schema::registry::Registry::open(&cfg.registry, &cfg.kafka)
        .await
        .with_context(|| {
            format!(
                "opening the schema topic {} on {}",
                cfg.registry.topic, cfg.kafka.bootstrap_servers
            )
        })?;
    tracing::info!(%addr, topic = %cfg.registry.topic, auth = cfg.registry.auth_user.is_some(), "registry listening");
    tributary_schema::registry::serve(listener, registry, crate::signal::shutdown_signal()).await?;
    tracing::info!("registry stopped");
    Ok(ExitCode::SUCCESS)
}
