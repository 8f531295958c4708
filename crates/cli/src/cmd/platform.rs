//! `tributary up | down | status`: the local platform (see [`crate::platform`]).

use crate::config::Config;
use crate::platform::{self, cluster::KafkaMode, settings::Settings, Globals};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Do not start Kafka: use the broker the configuration's bootstrap servers name.
    #[arg(long)]
    no_kafka: bool,
    /// Which Kafka: `single` (one PLAINTEXT broker on 127.0.0.1:9092) or `cluster` (three
    /// nodes on 127.0.0.1:29092-29094, SASL_SSL with SCRAM-SHA-512, replication factor 3,
    /// ACLs; each service connects as its own user).
    #[arg(long, value_enum, default_value = "single", env = "TRIBUTARY_KAFKA_MODE")]
    kafka: KafkaMode,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Leave Kafka running (stop only what `up` started besides it).
    #[arg(long)]
    keep_kafka: bool,
}

fn settings(cfg: &Config) -> anyhow::Result<Settings> {
    Settings::new(cfg, |name| std::env::var(name).ok(), &std::env::current_dir()?)
}

pub async fn up(args: UpArgs, cfg: Config, globals: Globals) -> anyhow::Result<ExitCode> {
    platform::up::up(&cfg, &settings(&cfg)?, &globals, !args.no_kafka, args.kafka).await?;
    Ok(ExitCode::SUCCESS)
}

/// Needs no configuration: what runs is named by the pid files in the state directory.
pub fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    platform::down::down(&settings(&Config::default())?, args.keep_kafka)?;
    Ok(ExitCode::SUCCESS)
}

/// Exit code 1 when something is not running or not healthy.
pub async fn status(cfg: Config) -> anyhow::Result<ExitCode> {
    let ok = platform::down::status(&settings(&cfg)?).await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
