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
    /// Print the configuration after all layers are applied, as JSON (passwords redacted).
    Show,
}

pub fn run(args: Args, cfg: Config) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Show => {
            let mut shown = cfg;
            if shown.kafka.sasl_password.is_some() {
                shown.kafka.sasl_password = Some("<redacted>".into());
            }
            if shown.registry.auth_password.is_some() {
                shown.registry.auth_password = Some("<redacted>".into());
            }
            if shown.sink.registry_password.is_some() {
                shown.sink.registry_password = Some("<redacted>".into());
            }
            if shown.processor.registry_password.is_some() {
                shown.processor.registry_password = Some("<redacted>".into());
            }
            if shown.gateway.registry_password.is_some() {
                shown.gateway.registry_password = Some("<redacted>".into());
            }
            if shown.gateway.jwt_secret.is_some() {
                shown.gateway.jwt_secret = Some("<redacted>".into());
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
