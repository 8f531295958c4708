//! `tributary processor`: windowed aggregates, enrichment and the dead-letter queue, exactly
//! once, with `/metrics` and `/health` beside the loop.

use crate::config::{Config, FlagOverrides, ProcessorFlags};
use anyhow::Context as _;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of /metrics and /health, for example 127.0.0.1:8082.
    #[arg(long)]
    listen: Option<String>,
    /// This instance's slot (its transactional id is <group_id>-<instance>); give each
    /// running instance its own, and a restarted one the slot it had.
    #[arg(long)]
    instance: Option<String>,
    /// Where source partitions without a committed offset start, when their results were
    /// written before (the group's offsets expired or were deleted): earliest reads them from
    /// their oldest record and writes results already written again; latest starts them at
    /// their end and skips what they hold now. Partitions with a checkpoint are not affected.
    #[arg(long, value_enum)]
    reset: Option<ResetArg>,
}

/// The values of `--reset`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ResetArg {
    Earliest,
    Latest,
}

impl From<ResetArg> for tributary_processor::Reset {
    fn from(r: ResetArg) -> Self {
        match r {
            ResetArg::Earliest => Self::Earliest,
            ResetArg::Latest => Self::Latest,
        }
    }
}

impl Args {
    /// The flags as a configuration layer.
    pub fn overrides(&self, flags: &mut FlagOverrides) {
        flags.processor =
            Some(ProcessorFlags { listen: self.listen.clone(), instance: self.instance.clone() });
    }
}

/// Sets the processor up, then processes until SIGTERM, committing the open transaction.
pub async fn run(args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    let catalog = cfg.catalog()?;
    let (listener, addr) = super::service::bind("processor", cfg.processor.listen).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::current();
    let (pcfg, kafka, flag) = (cfg.processor.clone(), cfg.kafka.clone(), Arc::clone(&stop));
    let reset = args.reset.map(Into::into);
    let processor = tokio::task::spawn_blocking(move || {
        tributary_processor::Processor::setup(pcfg, kafka, &catalog, handle, flag, reset)
    })
    .await?
    .context("starting the processor")?;
    let router = tributary_processor::router(processor.status());
    tracing::info!(%addr, instance = %cfg.processor.instance, "processor metrics listening");
    super::service::run_until_signal(
        listener,
        router,
        stop,
        "stopping: committing the open transaction",
        move |stop| processor.run(stop).context("processing"),
    )
    .await?;
    tracing::info!("processor stopped");
    Ok(ExitCode::SUCCESS)
}
