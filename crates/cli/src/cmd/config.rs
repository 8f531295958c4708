//! `tributary config show`: the effective configuration.

use crate::config::Config;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the configuration after all layers are applied, as JSON (passwords and keys as
    /// "***").
    Show,
}

pub fn run(args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Show => {
            // Passwords and keys are `Secret`s: they serialize as "***".
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
