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
            println!("{}", show(&cfg)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `config show` prints. Passwords, keys and tokens are `Secret`s, which serialize as
/// "***", and a registry URL's password too (config.rs, `no_secret_ever_shows`).
pub fn show(cfg: &Config) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(cfg)?)
}
