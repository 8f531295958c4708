//! What the processor and the sink share: a blocking loop on a thread of its own, an ops HTTP
//! listener (`/metrics`, `/health`, ...) beside it, and SIGTERM asking the loop to stop.

use crate::config::GatewayFlags;
use crate::signal::shutdown_signal;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `--listen`, the one flag of the gateway, the registry and the sink.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// Address to listen on, overriding `listen` of the service's section (for example
    /// 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
}

impl ListenArgs {
    /// The flag as a configuration layer of the service's section.
    pub fn flags(&self) -> Option<GatewayFlags> {
        self.listen.clone().map(|l| GatewayFlags { listen: Some(l) })
    }
}

/// Binds the listener of service `what`; it and the address it got.
pub async fn bind(
    what: &str,
    addr: SocketAddr,
) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} to {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `router` on `listener` while `work` runs on a blocking thread. On SIGTERM or Ctrl-C
/// it logs `stopping` and sets `stop`, which `work` checks, so the loop finishes what it holds
/// (commits, flushes) and returns; the listener closes once `work` has returned.
pub async fn run_until_signal<F>(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: Arc<AtomicBool>,
    stopping: &'static str,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(&AtomicBool) -> anyhow::Result<()> + Send + 'static,
{
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("{stopping}");
        flag.store(true, Ordering::Relaxed);
    });
    let result = tokio::task::spawn_blocking(move || work(&stop)).await?;
    server.abort();
    result
}
