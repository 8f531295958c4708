//! `tributary down` and `tributary status`.

use super::cluster::{cluster_sh, KafkaMode};
use super::health::{healthy, Check};
use super::process::{self, Stopped};
use super::settings::Settings;
use super::{kafka_sh, SERVICES, STOP_GRACE};

/// Stops Prometheus and the services (the reverse of the start order), then Kafka unless
/// `keep_kafka`. Pid files that name nothing are removed.
pub fn down(settings: &Settings, keep_kafka: bool) -> anyhow::Result<()> {
    let names = std::iter::once("prometheus").chain(SERVICES.iter().rev().map(|s| s.name));
    for name in names {
        match process::stop(&settings.pid_file(name), STOP_GRACE)? {
            Stopped::NotRunning => {}
            Stopped::Terminated => println!("{name}: stopped"),
            Stopped::Killed => {
                eprintln!("{name}: still running after {}s; killed", STOP_GRACE.as_secs());
                println!("{name}: stopped");
            }
        }
    }
    if !keep_kafka {
        let status = match KafkaMode::recorded(settings) {
            KafkaMode::Single => kafka_sh(settings, "stop")?,
            KafkaMode::Cluster => cluster_sh(settings, &["stop"])?,
        };
        anyhow::ensure!(status.success(), "stopping kafka failed ({status})");
    }
    Ok(())
}

/// Says what runs and is healthy; false when something is missing or unhealthy.
pub async fn status(settings: &Settings) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder().build()?;
    let mut ok = match KafkaMode::recorded(settings) {
        KafkaMode::Single => kafka_sh(settings, "status")?,
        KafkaMode::Cluster => cluster_sh(settings, &["status"])?,
    }
    .success();
    // The order `make status` has always printed.
    for name in ["registry", "gateway", "sink", "processor"] {
        let Some(service) = SERVICES.iter().find(|s| s.name == name) else { continue };
        let running = process::running(&settings.pid_file(service.name));
        let url = service.health_url(settings);
        let passes = match running {
            Some(_) => healthy(&http, &url, service.check).await,
            None => false,
        };
        ok &= running.is_some() && passes;
        println!("{}", line(settings, service.name, running, passes));
    }
    let running = process::running(&settings.pid_file("prometheus"));
    let url = format!("http://{}/-/ready", settings.prometheus_listen);
    let ready = match running {
        Some(_) => healthy(&http, &url, Check::Ok).await,
        None => false,
    };
    let installed = process::installed(&settings.prometheus_bin).is_some();
    ok &= (running.is_some() && ready) || !installed;
    println!("{}", prometheus_line(settings, running.filter(|_| ready), installed));
    Ok(ok)
}

/// A service's status line.
pub fn line(s: &Settings, name: &str, pid: Option<i32>, healthy: bool) -> String {
    let log = s.log_file(name);
    let log = log.display();
    let a = &s.addrs;
    match (pid, healthy) {
        (None, _) => format!("{name}: not running (see {log})"),
        (Some(pid), true) => {
            let at = match name {
                "registry" => format!(" on http://{}", a.registry),
                "gateway" => format!(" on http://{}, healthy", a.gateway),
                "processor" => format!(", metrics on http://{}/metrics", a.processor),
                _ => ", warehouse queries: tributary warehouse sql \"...\"".to_owned(),
            };
            format!("{name}: running (pid {pid}){at}")
        }
        (Some(pid), false) => format!("{name}: running (pid {pid}), NOT healthy (see {log})"),
    }
}

/// Prometheus's status line: running and ready, not running, or not installed.
pub fn prometheus_line(s: &Settings, ready_pid: Option<i32>, installed: bool) -> String {
    match (ready_pid, installed) {
        (Some(pid), _) => {
            format!("prometheus: running (pid {pid}) on http://{}", s.prometheus_listen)
        }
        (None, true) => {
            format!("prometheus: not running (see {})", s.log_file("prometheus").display())
        }
        (None, false) => "prometheus: not installed (apt-get install prometheus)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn settings() -> Settings {
        let env = |name: &str| match name {
            "TRIBUTARY_ROOT" => Some("/repo".to_owned()),
            "TRIBUTARY_STATE_DIR" => Some("/state".to_owned()),
            _ => None,
        };
        Settings::new(&Config::default(), env, Path::new("/")).expect("settings")
    }

    #[test]
    fn status_lines_say_what_runs_where() {
        let s = settings();
        assert_eq!(
            line(&s, "gateway", Some(7), true),
            "gateway: running (pid 7) on http://127.0.0.1:8080, healthy"
        );
        assert_eq!(
            line(&s, "sink", Some(7), false),
            "sink: running (pid 7), NOT healthy (see /state/logs/sink.log)"
        );
        assert_eq!(
            line(&s, "registry", None, false),
            "registry: not running (see /state/logs/registry.log)"
        );
        assert_eq!(
            line(&s, "processor", Some(9), true),
            "processor: running (pid 9), metrics on http://127.0.0.1:8082/metrics"
        );
        assert_eq!(
            prometheus_line(&s, Some(3), true),
            "prometheus: running (pid 3) on http://127.0.0.1:9090"
        );
        assert!(prometheus_line(&s, None, false).contains("not installed"));
        assert!(prometheus_line(&s, None, true).contains("not running"));
    }

    #[test]
    fn down_with_nothing_running_removes_stale_pid_files() {
        let dir = std::env::temp_dir().join(format!("tributary-down-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // A pid that cannot be running.
        std::fs::write(dir.join("gateway.pid"), "999999999\n").expect("pid file");
        let env = |name: &str| match name {
            "TRIBUTARY_ROOT" => Some("/repo".to_owned()),
            _ => None,
        };
        let mut s = Settings::new(&Config::default(), env, Path::new("/")).expect("settings");
        s.state_dir = dir.clone();
        down(&s, true).expect("down");
        assert!(!dir.join("gateway.pid").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
