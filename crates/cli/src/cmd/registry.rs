//! `tributary registry`: the Confluent-compatible schema registry (schemas in `_schemas`).

use crate::config::Config;
use anyhow::Context as _;
use std::process::ExitCode;

/// Reads the schema topic, then serves until SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    let (listener, addr) = super::service::bind("registry", cfg.registry.listen).await?;
    let registry =
        tributary_registry::Registry::open(&cfg.registry, &cfg.kafka).await.with_context(|| {
            format!(
                "opening the schema topic {} on {}",
                cfg.registry.topic, cfg.kafka.bootstrap_servers
            )
        })?;
    let (auth, tls) = (cfg.registry.auth_user.is_some(), registry.tls());
    tracing::info!(%addr, topic = %cfg.registry.topic, auth, tls, "registry listening");
    tributary_registry::serve(listener, registry, crate::signal::shutdown_signal()).await?;
    tracing::info!("registry stopped");
    Ok(ExitCode::SUCCESS)
}
