//! `tributary up`: Kafka, the topics, the services in order, each healthy before the next,
//! then Prometheus, then where everything is.

use super::cluster::{self, KafkaMode};
use super::health::{wait_healthy, Check};
use super::process::{self, Started};
use super::settings::Settings;
use super::{kafka_sh, parse_env, prometheus, Globals, SERVICES};
use crate::config::Config;
use anyhow::Context as _;
use std::process::Command;
use std::time::Duration;

/// Locally the warehouse flushes every 2 s (production keeps the 60 s default), so rows show
/// up while you watch; `TRIBUTARY_SINK__BUFFER_FLUSH_TIME_SECS` in the environment wins.
const LOCAL_SINK_FLUSH_SECS: &str = "2";

/// Starts what is not running yet and waits until all of it is healthy.
pub async fn up(
    cfg: &Config,
    settings: &Settings,
    globals: &Globals,
    start_kafka: bool,
    mode: KafkaMode,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().build()?;
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("creating {}", settings.state_dir.display()))?;
    mode.record(settings)?;
    if start_kafka {
        let status = match mode {
            KafkaMode::Single => kafka_sh(settings, "start")?,
            KafkaMode::Cluster => cluster::cluster_sh(settings, &["start"])?,
        };
        anyhow::ensure!(status.success(), "kafka did not start ({status})");
    }
    // On the cluster, the catalog is applied as its admin user and each service connects as
    // its own SCRAM user, allowed only what it does.
    let admin = match mode {
        KafkaMode::Single => cfg.clone(),
        KafkaMode::Cluster => {
            cluster::with_client_env(cfg, &cluster::client_env(settings, "admin")?)
        }
    };
    if !crate::cmd::topics::apply(&admin, None).await? {
        anyhow::bail!("the topics on {} differ from the catalog", admin.kafka.bootstrap_servers);
    }
    for service in SERVICES {
        let mut command = globals.command(service.name)?;
        if mode == KafkaMode::Cluster {
            command.envs(cluster::client_env(settings, service.name)?);
        }
        if service.name == "sink"
            && std::env::var_os("TRIBUTARY_SINK__BUFFER_FLUSH_TIME_SECS").is_none()
        {
            command.env("TRIBUTARY_SINK__BUFFER_FLUSH_TIME_SECS", LOCAL_SINK_FLUSH_SECS);
        }
        let mut started = start(settings, service.name, command)?;
        let (url, log) = (service.health_url(settings), settings.log_file(service.name));
        let (name, check) = (service.name, service.check);
        wait_healthy(&http, name, &url, check, service.deadline, &mut started, &log).await?;
    }
    start_prometheus(settings, &http).await?;
    let mut settings = settings.clone();
    if mode == KafkaMode::Cluster {
        settings.addrs.bootstrap = format!(
            "{} (SASL_SSL, SCRAM-SHA-512; settings per user: deploy/kafka/cluster.sh client-env USER)",
            admin.kafka.bootstrap_servers
        );
    }
    let mut kafka = kafka_env(&settings);
    if mode == KafkaMode::Cluster {
        let env = cluster::cluster_sh_env(&settings);
        if let Some(dir) = env.get("KAFKA_CLUSTER_STATE_DIR") {
            kafka.insert("KAFKA_STATE_DIR".to_owned(), format!("{dir}/node-1"));
        }
    }
    println!("{}", summary(&settings, &kafka));
    Ok(())
}

/// Starts `name` unless its pid file names a running process, saying so.
fn start(settings: &Settings, name: &str, command: Command) -> anyhow::Result<Started> {
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("creating {}", settings.state_dir.display()))?;
    let pid_file = settings.pid_file(name);
    if let Some(pid) = process::running(&pid_file) {
        println!("{name}: already running (pid {pid})");
    }
    process::start(command, &pid_file, &settings.log_file(name))
}

/// Prometheus with deploy/monitoring/prometheus.yml, its targets at the addresses in use;
/// skipped, saying how to install it, when it is not installed.
async fn start_prometheus(settings: &Settings, http: &reqwest::Client) -> anyhow::Result<()> {
    let Some(bin) = process::installed(&settings.prometheus_bin) else {
        println!("prometheus: not installed, skipped (Debian: apt-get install prometheus; then make up again)");
        return Ok(());
    };
    let dir = settings.state_dir.join("prometheus");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let monitoring = settings.monitoring_dir();
    let template_path = monitoring.join("prometheus.yml");
    let template = std::fs::read_to_string(&template_path)
        .with_context(|| format!("reading {}", template_path.display()))?;
    let rendered =
        prometheus::render(&template, &settings.scrape_targets(), &monitoring.join("rules"))?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, rendered).with_context(|| format!("writing {}", config.display()))?;
    let mut command = Command::new(bin);
    command.args([
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        "--storage.tsdb.retention.time=7d".to_owned(),
        format!("--web.listen-address={}", settings.prometheus_listen),
        "--web.enable-lifecycle".to_owned(),
    ]);
    let mut started = start(settings, "prometheus", command)?;
    let url = format!("http://{}/-/ready", settings.prometheus_listen);
    let log = settings.log_file("prometheus");
    let deadline = Duration::from_secs(60);
    wait_healthy(http, "prometheus", &url, Check::Ok, deadline, &mut started, &log).await
}

/// `kafka.sh env`: where the broker keeps its state and its tools (empty when it fails).
fn kafka_env(settings: &Settings) -> std::collections::BTreeMap<String, String> {
    let out = Command::new(settings.kafka_script()).arg("env").output();
    out.map(|o| parse_env(&String::from_utf8_lossy(&o.stdout))).unwrap_or_default()
}

/// Where everything is, and what to try first.
pub fn summary(s: &Settings, kafka: &std::collections::BTreeMap<String, String>) -> String {
    let bin = std::env::current_exe().unwrap_or_else(|_| "tributary".into());
    let bin = bin.display();
    let (gw, reg, prom) = (s.addrs.gateway, s.addrs.registry, &s.prometheus_listen);
    let (processor, sink, kport) = (s.addrs.processor, s.addrs.sink, s.kafka_metrics_port);
    let bootstrap = &s.addrs.bootstrap;
    let khome = kafka.get("KAFKA_HOME").map_or("", String::as_str);
    let kstate = kafka.get("KAFKA_STATE_DIR").map_or("", String::as_str);
    let state = s.state_dir.display();
    format!(
        r#"
Tributary is up.

  Gateway      http://{gw}/api/v1   (OpenAPI: http://{gw}/api/v1/openapi.json)
  Registry     http://{reg}   (Confluent Schema Registry API; schemas in the _schemas topic)
  Health       http://{gw}/api/v1/health
  Metrics      http://{gw}/metrics  (Prometheus)  and  /api/v1/metrics (JSON)
  Processor    http://{processor}/metrics  (windowed aggregates into aggregates.*, bad records into events.dlq)
  Warehouse    {bin} warehouse sql "SELECT count(*) FROM raw.EVENTS_CLICKSTREAM"  (DuckDB, loaded by the sink; metrics http://{sink}/metrics)
  Kafka        {bootstrap}  (Apache Kafka, KRaft; tools in {khome}/bin; metrics http://127.0.0.1:{kport}/metrics)
  Prometheus   http://{prom}  (alerts: http://{prom}/alerts; rules and Grafana dashboards in deploy/monitoring)

Send an event:

  curl -s -X POST http://{gw}/api/v1/events/events.clickstream \
    -H 'content-type: application/json' \
    -d '{{"event_id":"evt-'"$(date +%s%N)"'","timestamp":"'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'","event_type":"page_view","user_id":"user-1","payload":{{"url":"/home"}}}}'

Read it back:

  curl -s 'http://{gw}/api/v1/events/events.clickstream/latest?limit=5'

Generate traffic for the three sources (late, skewed and malformed records included), and
watch one-minute windows appear a minute later:

  {bin} gen --rate 200 --duration 120
  curl -s 'http://{gw}/api/v1/events/aggregates.iot.sensors.1m/latest?limit=3'

Logs: {state}/logs/{{gateway,registry,processor,sink,prometheus}}.log and {kstate}/logs/server.log
Stop: make down"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_summary_names_the_addresses_in_use() {
        let mut cfg = Config::default();
        cfg.gateway.listen = "127.0.0.1:18080".parse().expect("addr");
        cfg.sink.listen = "127.0.0.1:18084".parse().expect("addr");
        let env = |name: &str| match name {
            "TRIBUTARY_ROOT" => Some("/repo".to_owned()),
            "TRIBUTARY_STATE_DIR" => Some("/state".to_owned()),
            "TRIBUTARY_PROMETHEUS_LISTEN" => Some("127.0.0.1:19090".to_owned()),
            _ => None,
        };
        let s = Settings::new(&cfg, env, Path::new("/")).expect("settings");
        let kafka = parse_env("KAFKA_HOME=/k\nKAFKA_STATE_DIR=/ks\n");
        let text = summary(&s, &kafka);
        assert!(text.contains("Gateway      http://127.0.0.1:18080/api/v1"), "{text}");
        assert!(text.contains("metrics http://127.0.0.1:18084/metrics"), "{text}");
        assert!(text.contains("Prometheus   http://127.0.0.1:19090"), "{text}");
        assert!(text.contains("tools in /k/bin"), "{text}");
        assert!(text.contains("Logs: /state/logs/{gateway,registry,processor,sink,prometheus}.log and /ks/logs/server.log"), "{text}");
        assert!(text.contains(r#"-d '{"event_id":"evt-'"$(date +%s%N)"'""#), "{text}");
    }
}
