//! `tributary up`, `status` and `down` as users run them, on free ports and a state folder of
//! their own, against the shared broker (`--no-kafka`, `--keep-kafka`: the broker is not
//! this test's to start or stop): every service comes up healthy, an event goes in, and after
//! `down` no process of the platform is left.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// The platform of one test: its config, state folder and environment.
struct Platform {
    dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Platform {
    /// Runs `tributary --config <config> <args>` with the platform's environment, killing it
    /// after `timeout`; its exit code and output.
    fn run(&self, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
        let out_path = self.dir.join(format!("{}.out", args[0]));
        let out = std::fs::File::create(&out_path).expect("output file");
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .expect("running tributary");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tributary {args:?} still running after {timeout:?}:\n{}",
                    std::fs::read_to_string(&out_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        (status.code(), std::fs::read_to_string(&out_path).unwrap_or_default())
    }

    fn pid(&self, name: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("state").join(format!("{name}.pid")));
        text.ok()?.trim().parse().ok()
    }
}

impl Drop for Platform {
    /// Whatever happened, nothing is left running.
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["down", "--keep-kafka"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process runs (a zombie, gone but not yet reaped, does not count).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
        Err(_) => false,
    }
}

fn post(addr: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    answer
}

fn platform() -> (Platform, String) {
    let suffix = tributary_test_support::random_suffix();
    let dir = std::env::temp_dir().join(format!("tributary-up-{suffix}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = tributary_test_support::free_port;
    let (gateway, registry, processor, sink) = (port(), port(), port(), port());
    let registry_url = format!("http://127.0.0.1:{registry}");
    let config = dir.join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            r#"[gateway]
listen = "127.0.0.1:{gateway}"
[gateway.registry]
url = "{registry_url}"
[registry]
listen = "127.0.0.1:{registry}"
topic = "_schemas-test-{suffix}"
[processor]
listen = "127.0.0.1:{processor}"
group_id = "test-up-processor-{suffix}"
[processor.registry]
url = "{registry_url}"
[sink]
listen = "127.0.0.1:{sink}"
group_id = "test-up-sink-{suffix}"
database = "{}"
[sink.registry]
url = "{registry_url}"
"#,
            dir.join("warehouse.duckdb").display()
        ),
    )
    .expect("config");
    let bootstrap = tributary_test_support::bootstrap();
    let kafka_port = bootstrap.rsplit(':').next().unwrap_or("9092").to_owned();
    let env = vec![
        ("TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS".to_owned(), bootstrap),
        ("TRIBUTARY_STATE_DIR".to_owned(), dir.join("state").display().to_string()),
        ("TRIBUTARY_PROMETHEUS_LISTEN".to_owned(), format!("127.0.0.1:{}", port())),
        ("KAFKA_METRICS_PORT".to_owned(), port().to_string()),
        // `status` asks kafka.sh about the broker on this port.
        ("KAFKA_PORT".to_owned(), kafka_port),
        ("TRIBUTARY_ROOT".to_owned(), tributary_test_support::repo_root().display().to_string()),
    ];
    (Platform { dir, config, env }, format!("127.0.0.1:{gateway}"))
}

#[test]
fn up_status_and_down_leave_no_process_behind() {
    let (platform, gateway) = platform();
    let (code, out) = platform.run(&["up", "--no-kafka"], Duration::from_secs(300));
    assert_eq!(code, Some(0), "up failed:\n{out}");
    assert!(out.contains(&format!("Gateway      http://{gateway}/api/v1")), "{out}");

    let mut names = vec!["registry", "gateway", "processor", "sink"];
    if platform.pid("prometheus").is_some() {
        names.push("prometheus");
    }
    let pids: Vec<(&str, i32)> = names
        .iter()
        .map(|n| (*n, platform.pid(n).unwrap_or_else(|| panic!("no pid file for {n}"))))
        .collect();
    for (name, pid) in &pids {
        assert!(alive(*pid), "{name} (pid {pid}) is not running after up");
    }

    let (code, out) = platform.run(&["status"], Duration::from_secs(60));
    assert_eq!(code, Some(0), "status:\n{out}");
    assert!(
        out.contains(&format!("gateway: running (pid {}) on http://{gateway}, healthy", pids[1].1)),
        "{out}"
    );

    let body = r#"{"event_id":"up-1","timestamp":"2026-11-30T12:00:00Z","event_type":"page_view","user_id":"u-1","payload":{}}"#;
    let answer = post(&gateway, "/api/v1/events/events.clickstream", body);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let started = Instant::now();
    let (code, out) = platform.run(&["down", "--keep-kafka"], Duration::from_secs(120));
    assert_eq!(code, Some(0), "down:\n{out}");
    for (name, pid) in &pids {
        assert!(!alive(*pid), "{name} (pid {pid}) still runs after down");
        assert!(out.contains(&format!("{name}: stopped")), "{out}");
        assert!(platform.pid(name).is_none(), "{name}.pid left behind");
    }
    assert!(started.elapsed() < Duration::from_secs(90), "down took {:?}", started.elapsed());

    // Nothing runs now: status says so, and its exit code too.
    let (code, out) = platform.run(&["status"], Duration::from_secs(60));
    assert_eq!(code, Some(1), "status after down:\n{out}");
    assert!(out.contains("gateway: not running"), "{out}");
}
