//! What the processor and the sink share: a blocking loop on a thread of its own, an ops HTTP
//! listener (`/metrics`, `/health`, ...) beside it, and SIGTERM asking the loop to stop.

use crate::signal::shutdown_signal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
