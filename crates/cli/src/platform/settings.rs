//! Where the local platform lives and what it talks to: the state directory, the repository's
//! `deploy/` scripts, the services' addresses (from the loaded configuration) and the settings
//! that are not part of the configuration (environment variables, as `deploy/kafka/kafka.sh`
//! has them).

use crate::config::Config;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The JMX exporter port on the broker, for Prometheus, when `KAFKA_METRICS_PORT` is unset.
pub const DEFAULT_KAFKA_METRICS_PORT: u16 = 9404;
/// Where Prometheus listens when `TRIBUTARY_PROMETHEUS_LISTEN` is unset.
pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9090";

/// The crate's directory in the checkout the binary was built from.
const BUILT_IN: &str = env!("CARGO_MANIFEST_DIR");

/// Everything `up`, `down` and `status` need to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Pid files, `logs/` and `prometheus/` (`TRIBUTARY_STATE_DIR`, default
    /// `$TRIBUTARY_CACHE/state`, default `~/.cache/tributary/state`).
    pub state_dir: PathBuf,
    /// The repository: `deploy/kafka/kafka.sh` and `deploy/monitoring/` (`TRIBUTARY_ROOT`,
    /// default the first directory upwards from the working directory that holds them, else
    /// the checkout the binary was built from).
    pub root: PathBuf,
    /// The broker's JMX exporter port (`KAFKA_METRICS_PORT`, default 9404), handed to
    /// kafka.sh and scraped by Prometheus.
    pub kafka_metrics_port: u16,
    /// Prometheus's listen address (`TRIBUTARY_PROMETHEUS_LISTEN`, default 127.0.0.1:9090).
    pub prometheus_listen: String,
    /// The Prometheus program (`PROMETHEUS_BIN`, default `prometheus` on `PATH`).
    pub prometheus_bin: String,
    /// The services' addresses, from the configuration.
    pub addrs: Addresses,
}

/// The addresses the configuration gives the services.
#[derive(Debug, Clone, PartialEq)]
pub struct Addresses {
    /// `[gateway] listen`.
    pub gateway: SocketAddr,
    /// `[registry] listen`.
    pub registry: SocketAddr,
    /// `[processor] listen`.
    pub processor: SocketAddr,
    /// `[sink] listen`.
    pub sink: SocketAddr,
    /// `[kafka] bootstrap_servers`.
    pub bootstrap: String,
}

impl Addresses {
    /// The addresses in `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            gateway: config.gateway.listen,
            registry: config.registry.listen,
            processor: config.processor.listen,
            sink: config.sink.listen,
            bootstrap: config.kafka.bootstrap_servers.clone(),
        }
    }
}

impl Settings {
    /// The settings for `config`, with the environment read through `env` and the repository
    /// looked for from `cwd`.
    pub fn new(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> anyhow::Result<Self> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let cache = match set("TRIBUTARY_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => {
                PathBuf::from(set("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/tributary")
            }
        };
        let state_dir =
            set("TRIBUTARY_STATE_DIR").map_or_else(|| cache.join("state"), PathBuf::from);
        let root = match set("TRIBUTARY_ROOT") {
            Some(dir) => PathBuf::from(dir),
            None => find_root(cwd).or_else(|| find_root(Path::new(BUILT_IN))).ok_or_else(|| {
                anyhow::anyhow!(
                    "no deploy/kafka/kafka.sh in {} or above; run this in the tributary repository or set TRIBUTARY_ROOT",
                    cwd.display()
                )
            })?,
        };
        let kafka_metrics_port = match set("KAFKA_METRICS_PORT") {
            Some(port) => {
                port.parse().map_err(|e| anyhow::anyhow!("KAFKA_METRICS_PORT={port}: {e}"))?
            }
            None => DEFAULT_KAFKA_METRICS_PORT,
        };
        Ok(Self {
            state_dir,
            root,
            kafka_metrics_port,
            prometheus_listen: set("TRIBUTARY_PROMETHEUS_LISTEN")
                .unwrap_or_else(|| DEFAULT_PROMETHEUS_LISTEN.into()),
            prometheus_bin: set("PROMETHEUS_BIN").unwrap_or_else(|| "prometheus".into()),
            addrs: Addresses::of(config),
        })
    }

    /// `<state>/<name>.pid`.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.pid"))
    }

    /// `<state>/logs/<name>.log`.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{name}.log"))
    }

    /// `deploy/kafka/kafka.sh`.
    pub fn kafka_script(&self) -> PathBuf {
        self.root.join("deploy/kafka/kafka.sh")
    }

    /// `deploy/kafka/cluster.sh`: the three-node SASL_SSL cluster.
    pub fn cluster_script(&self) -> PathBuf {
        self.root.join("deploy/kafka/cluster.sh")
    }

    /// `deploy/monitoring/`: prometheus.yml and rules/.
    pub fn monitoring_dir(&self) -> PathBuf {
        self.root.join("deploy/monitoring")
    }

    /// What Prometheus scrapes: job name -> address.
    pub fn scrape_targets(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("gateway", self.addrs.gateway.to_string()),
            ("processor", self.addrs.processor.to_string()),
            ("sink", self.addrs.sink.to_string()),
            ("kafka", format!("127.0.0.1:{}", self.kafka_metrics_port)),
        ])
    }
}

/// The first of `start` and its parents that holds `deploy/kafka/kafka.sh`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start.ancestors().find(|dir| dir.join("deploy/kafka/kafka.sh").is_file()).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name: &str| vars.get(name).cloned()
    }

    #[test]
    fn defaults_follow_the_cache_and_the_configuration() {
        let repo = tributary_test_support::repo_root();
        let s =
            Settings::new(&Config::default(), env(&[("HOME", "/home/u")]), &repo.join("crates"))
                .expect("settings");
        assert_eq!(s.state_dir, PathBuf::from("/home/u/.cache/tributary/state"));
        assert_eq!(s.root, repo);
        assert_eq!(s.kafka_metrics_port, 9404);
        assert_eq!(s.prometheus_listen, "127.0.0.1:9090");
        assert_eq!(s.prometheus_bin, "prometheus");
        assert_eq!(s.addrs.gateway.to_string(), "127.0.0.1:8080");
        assert_eq!(s.addrs.registry.to_string(), "127.0.0.1:8081");
        assert_eq!(s.addrs.processor.to_string(), "127.0.0.1:8082");
        assert_eq!(s.addrs.sink.to_string(), "127.0.0.1:8084");
        assert_eq!(
            s.pid_file("gateway"),
            PathBuf::from("/home/u/.cache/tributary/state/gateway.pid")
        );
        assert_eq!(
            s.log_file("sink"),
            PathBuf::from("/home/u/.cache/tributary/state/logs/sink.log")
        );
        assert_eq!(s.scrape_targets()["kafka"], "127.0.0.1:9404");
    }

    #[test]
    fn the_environment_overrides() {
        let mut config = Config::default();
        config.gateway.listen = "127.0.0.1:18080".parse().expect("addr");
        let s = Settings::new(
            &config,
            env(&[
                ("HOME", "/home/u"),
                ("TRIBUTARY_CACHE", "/c"),
                ("TRIBUTARY_ROOT", "/repo"),
                ("KAFKA_METRICS_PORT", "19404"),
                ("TRIBUTARY_PROMETHEUS_LISTEN", "127.0.0.1:19090"),
                ("PROMETHEUS_BIN", "/opt/prometheus"),
            ]),
            Path::new("/"),
        )
        .expect("settings");
        assert_eq!(s.state_dir, PathBuf::from("/c/state"));
        assert_eq!(s.root, PathBuf::from("/repo"));
        assert_eq!(s.kafka_script(), PathBuf::from("/repo/deploy/kafka/kafka.sh"));
        assert_eq!(s.prometheus_listen, "127.0.0.1:19090");
        assert_eq!(s.prometheus_bin, "/opt/prometheus");
        assert_eq!(s.scrape_targets()["gateway"], "127.0.0.1:18080");
        assert_eq!(s.scrape_targets()["kafka"], "127.0.0.1:19404");
        let s = Settings::new(
            &config,
            env(&[("TRIBUTARY_STATE_DIR", "/s"), ("TRIBUTARY_ROOT", "/repo")]),
            Path::new("/"),
        )
        .expect("settings");
        assert_eq!(s.state_dir, PathBuf::from("/s"));
    }

    #[test]
    fn bad_values_are_errors_and_the_repository_is_found() {
        let bad = Settings::new(
            &Config::default(),
            env(&[("TRIBUTARY_ROOT", "/repo"), ("KAFKA_METRICS_PORT", "x")]),
            Path::new("/"),
        );
        assert!(bad.expect_err("bad port").to_string().contains("KAFKA_METRICS_PORT"));
        assert_eq!(find_root(Path::new("/")), None);
        // Outside the repository, the checkout the binary was built from.
        let s = Settings::new(&Config::default(), env(&[]), Path::new("/")).expect("settings");
        assert_eq!(s.root, tributary_test_support::repo_root());
    }
}
