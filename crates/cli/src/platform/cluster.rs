//! The Kafka that `up` starts: the single PLAINTEXT broker (`deploy/kafka/kafka.sh`, the
//! default) or the three-node SASL_SSL cluster with SCRAM users and ACLs
//! (`deploy/kafka/cluster.sh`). The choice is kept in the state directory, so `down` and
//! `status` act on what `up` started.

use super::parse_env;
use super::settings::Settings;
use crate::config::Config;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::process::{Command, ExitStatus};
use tributary_core::Secret;

/// Which Kafka the local platform runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KafkaMode {
    /// One KRaft node, PLAINTEXT on 127.0.0.1:9092, replication factor 1.
    #[default]
    Single,
    /// Three KRaft nodes, SASL_SSL with SCRAM-SHA-512, replication factor 3,
    /// `min.insync.replicas=2`, ACLs per service user.
    Cluster,
}

impl KafkaMode {
    /// The mode `up` recorded in the state directory (single when none is).
    pub fn recorded(settings: &Settings) -> Self {
        match std::fs::read_to_string(mode_file(settings)) {
            Ok(text) if text.trim() == "cluster" => Self::Cluster,
            _ => Self::Single,
        }
    }

    /// Keeps the mode for `down` and `status`.
    pub fn record(self, settings: &Settings) -> anyhow::Result<()> {
        let path = mode_file(settings);
        let text = match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
        };
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

fn mode_file(settings: &Settings) -> std::path::PathBuf {
    settings.state_dir.join("kafka-mode")
}

/// `deploy/kafka/cluster.sh <args>`, its output on ours; its exit code.
pub fn cluster_sh(settings: &Settings, args: &[&str]) -> anyhow::Result<ExitStatus> {
    let script = settings.cluster_script();
    Command::new(&script)
        .args(args)
        .status()
        .with_context(|| format!("running {} {}", script.display(), args.join(" ")))
}

/// `cluster.sh env`: where the cluster keeps its state (empty when it fails).
pub fn cluster_sh_env(settings: &Settings) -> BTreeMap<String, String> {
    let out = Command::new(settings.cluster_script()).arg("env").output();
    out.map(|o| parse_env(&String::from_utf8_lossy(&o.stdout))).unwrap_or_default()
}

/// The `TRIBUTARY_KAFKA__*` settings of the cluster's SCRAM user `user`.
pub fn client_env(settings: &Settings, user: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let script = settings.cluster_script();
    let out = Command::new(&script)
        .args(["client-env", user])
        .output()
        .with_context(|| format!("running {} client-env {user}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} client-env {user} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(parse_env(&String::from_utf8_lossy(&out.stdout)))
}

/// `config` with the Kafka settings of `env` (what [`client_env`] returns), for the commands
/// `up` runs itself (the topic catalog, as the admin user).
pub fn with_client_env(config: &Config, env: &BTreeMap<String, String>) -> Config {
    let mut config = config.clone();
    let k = &mut config.kafka;
    let get = |name: &str| env.get(&format!("TRIBUTARY_KAFKA__{name}")).cloned();
    if let Some(v) = get("BOOTSTRAP_SERVERS") {
        k.bootstrap_servers = v;
    }
    if let Some(v) = get("SECURITY_PROTOCOL") {
        k.security_protocol = v;
    }
    k.sasl_mechanism = get("SASL_MECHANISM").or(k.sasl_mechanism.take());
    k.sasl_username = get("SASL_USERNAME").or(k.sasl_username.take());
    k.sasl_password = get("SASL_PASSWORD").map(Secret::new).or(k.sasl_password.take());
    k.ssl_ca_location = get("SSL_CA_LOCATION").or(k.ssl_ca_location.take());
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_settings_replace_the_configured_kafka_ones() {
        let env = parse_env(
            "TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:29092,127.0.0.1:29093\n\
             TRIBUTARY_KAFKA__SECURITY_PROTOCOL=sasl_ssl\n\
             TRIBUTARY_KAFKA__SASL_MECHANISM=SCRAM-SHA-512\n\
             TRIBUTARY_KAFKA__SASL_USERNAME=admin\n\
             TRIBUTARY_KAFKA__SASL_PASSWORD=s3cret=with=equals\n\
             TRIBUTARY_KAFKA__SSL_CA_LOCATION=/state/tls/ca.pem\n",
        );
        let mut base = Config::default();
        base.kafka.client_id = "kept".to_owned();
        let c = with_client_env(&base, &env);
        assert_eq!(c.kafka.bootstrap_servers, "127.0.0.1:29092,127.0.0.1:29093");
        assert_eq!(c.kafka.security_protocol, "sasl_ssl");
        assert_eq!(c.kafka.sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(c.kafka.sasl_username.as_deref(), Some("admin"));
        assert_eq!(c.kafka.sasl_password.as_ref().map(Secret::expose), Some("s3cret=with=equals"));
        assert_eq!(c.kafka.ssl_ca_location.as_deref(), Some("/state/tls/ca.pem"));
        assert_eq!(c.kafka.client_id, "kept");
        assert_eq!(with_client_env(&base, &BTreeMap::new()), base);
    }
}
