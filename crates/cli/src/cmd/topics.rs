//! `tributary topics apply | list`: the topic catalog on the cluster.

use crate::config::Config;
use anyhow::Context as _;
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Duration;
use tributary_kafka::admin::{apply_topics, describe_topics};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create missing catalog topics; fail on a topic whose partition count differs.
    Apply {
        /// Override every topic's replication factor (3 on MSK).
        #[arg(long)]
        replication_factor: Option<i16>,
    },
    /// Show catalog topics with partitions and end offsets.
    List,
}

pub async fn run(args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    match args.command {
        TopicsCommand::Apply { replication_factor } => {
            if apply(&cfg, replication_factor).await? {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: some topics differ from the catalog (see MISMATCH above)");
                Ok(ExitCode::from(2))
            }
        }
        TopicsCommand::List => list(&cfg).await,
    }
}

/// Creates what is missing and prints what it found; false when a topic differs from the
/// catalog.
pub async fn apply(cfg: &Config, replication_factor: Option<i16>) -> anyhow::Result<bool> {
    let mut catalog = cfg.catalog()?;
    if let Some(rf) = replication_factor {
        catalog = catalog.with_replication_factor(rf)?;
    }
    let outcomes = apply_topics(&cfg.kafka, &catalog, Duration::from_secs(30))
        .await
        .with_context(|| format!("applying topics on {}", cfg.kafka.bootstrap_servers))?;
    let mut ok = true;
    for o in &outcomes {
        println!("{o}");
        ok &= o.is_ok();
    }
    Ok(ok)
}

async fn list(cfg: &Config) -> anyhow::Result<ExitCode> {
    let catalog = cfg.catalog()?;
    let names: Vec<String> = catalog.iter().map(|t| t.name.clone()).collect();
    let states = describe_topics(&cfg.kafka, names, Duration::from_secs(15))
        .await
        .with_context(|| format!("describing topics on {}", cfg.kafka.bootstrap_servers))?;
    println!(
        "{:<28} {:>10} {:>10} {:>14} {:<10} ROLE",
        "TOPIC", "PARTITIONS", "EXPECTED", "END OFFSETS", "KEY"
    );
    for (spec, st) in catalog.iter().zip(states) {
        let (parts, ends) = match &st.partitions {
            None => ("missing".to_owned(), "-".to_owned()),
            Some(ps) => (ps.len().to_string(), ps.iter().map(|p| p.high).sum::<i64>().to_string()),
        };
        println!(
            "{:<28} {:>10} {:>10} {:>14} {:<10} {}",
            spec.name,
            parts,
            spec.partitions,
            ends,
            spec.key_field.as_deref().unwrap_or("-"),
            serde_json::to_value(spec.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
