//! The local platform (`tributary up | down | status`): Kafka through `deploy/kafka/kafka.sh`
//! (the JVM side stays shell), the topic catalog, the registry, gateway, processor and sink
//! as `tributary <service>` processes, and Prometheus when it is installed.
//!
//! - [`settings`]: where things are and their addresses, from the loaded configuration;
//! - [`process`]: pid files, detached starts, SIGTERM-then-SIGKILL stops;
//! - [`health`]: health checks with deadlines;
//! - [`prometheus`]: Prometheus's configuration rendered from the configuration (pure);
//! - [`cluster`]: the three-node SASL_SSL cluster instead of the single broker;
//! - [`up`] and [`down`]: the flows (`down` also has `status`).

pub mod cluster;
pub mod down;
pub mod health;
pub mod process;
pub mod prometheus;
pub mod settings;
pub mod up;

use health::Check;
use settings::Settings;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long a service gets to stop on SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A Tributary service of the platform, in start order.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// Its subcommand, and the name of its pid and log files.
    pub name: &'static str,
    /// The path on its listener that says it is healthy.
    pub health_path: &'static str,
    /// What counts as healthy.
    pub check: Check,
    /// How long `up` waits for it to become healthy.
    pub deadline: Duration,
}

/// The services in start order (`down` stops them in reverse).
pub const SERVICES: [Service; 4] = [
    Service {
        name: "registry",
        health_path: "/subjects",
        check: Check::AnswersOrAuth,
        deadline: Duration::from_secs(60),
    },
    Service {
        name: "gateway",
        health_path: "/api/v1/health",
        check: Check::Ok,
        deadline: Duration::from_secs(60),
    },
    // Setup reads the reference topics first: up to a minute for their leaders right after a
    // broker start, then reference_load_timeout_ms (30 s) for the data.
    Service {
        name: "processor",
        health_path: "/health",
        check: Check::Ok,
        deadline: Duration::from_secs(120),
    },
    Service {
        name: "sink",
        health_path: "/health",
        check: Check::Ok,
        deadline: Duration::from_secs(60),
    },
];

impl Service {
    /// Its health URL on the address the configuration gives it.
    pub fn health_url(&self, settings: &Settings) -> String {
        let a = &settings.addrs;
        let addr = match self.name {
            "registry" => a.registry,
            "gateway" => a.gateway,
            "processor" => a.processor,
            _ => a.sink,
        };
        format!("http://{addr}{}", self.health_path)
    }
}

/// The global flags `up` was given, handed on to the services it starts, so they load the
/// configuration `up` loaded.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--bootstrap-servers`.
    pub bootstrap_servers: Option<String>,
    /// `--log-format`.
    pub log_format: String,
}

impl Globals {
    /// `tributary <global flags> <subcommand>`, run by this very binary.
    pub fn command(&self, subcommand: &str) -> anyhow::Result<Command> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(self.args()?).arg(subcommand);
        Ok(command)
    }

    /// The global flags as arguments; a relative `--config` made absolute.
    fn args(&self) -> anyhow::Result<Vec<OsString>> {
        let mut args: Vec<OsString> = vec!["--log-format".into(), self.log_format.clone().into()];
        if let Some(path) = &self.config {
            args.push("--config".into());
            args.push(std::path::absolute(path)?.into_os_string());
        }
        if let Some(bootstrap) = &self.bootstrap_servers {
            args.push("--bootstrap-servers".into());
            args.push(bootstrap.into());
        }
        Ok(args)
    }
}

/// `deploy/kafka/kafka.sh <verb>`, its output on ours; its exit code.
pub fn kafka_sh(settings: &Settings, verb: &str) -> anyhow::Result<std::process::ExitStatus> {
    let script = settings.kafka_script();
    Command::new(&script)
        .arg(verb)
        .env("KAFKA_METRICS_PORT", settings.kafka_metrics_port.to_string())
        .status()
        .map_err(|e| anyhow::anyhow!("running {} {verb}: {e}", script.display()))
}

/// `KEY=VALUE` lines (what `kafka.sh env` prints) as a map.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_env_lines_parse() {
        let env = parse_env("KAFKA_HOME=/c/kafka-4.3.1\nKAFKA_STATE_DIR=/c/state/kafka-9092\nKAFKA_METRICS_PORT=\nnoise\n");
        assert_eq!(env["KAFKA_HOME"], "/c/kafka-4.3.1");
        assert_eq!(env["KAFKA_STATE_DIR"], "/c/state/kafka-9092");
        assert_eq!(env["KAFKA_METRICS_PORT"], "");
        assert_eq!(env.len(), 3);
    }

    #[test]
    fn services_start_in_order_with_their_deadlines() {
        let names: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
        assert_eq!(names, ["registry", "gateway", "processor", "sink"]);
        assert_eq!(SERVICES[2].deadline, Duration::from_secs(120));
        let settings = Settings::new(
            &crate::config::Config::default(),
            |name| (name == "TRIBUTARY_ROOT").then(|| "/repo".to_owned()),
            std::path::Path::new("/"),
        )
        .expect("settings");
        assert_eq!(SERVICES[0].health_url(&settings), "http://127.0.0.1:8081/subjects");
        assert_eq!(SERVICES[1].health_url(&settings), "http://127.0.0.1:8080/api/v1/health");
        assert_eq!(SERVICES[3].health_url(&settings), "http://127.0.0.1:8084/health");
    }

    #[test]
    fn services_get_the_global_flags_of_up() {
        let globals = Globals {
            config: Some("rel/tributary.toml".into()),
            bootstrap_servers: Some("b:1".into()),
            log_format: "json".into(),
        };
        let args = globals.args().expect("args");
        assert_eq!(args[..2], ["--log-format", "json"]);
        assert_eq!(args[2], "--config");
        assert!(PathBuf::from(&args[3]).is_absolute());
        assert!(PathBuf::from(&args[3]).ends_with("rel/tributary.toml"));
        assert_eq!(args[4..], ["--bootstrap-servers", "b:1"]);
    }
}
