//! The `tributary` binary as users run it: topics apply/list against a real broker, and the
//! gateway draining in-flight requests on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("config dir");
    let path = dir.join("tributary.toml");
    std::fs::write(&path, body).expect("config file");
    path
}

fn tributary(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS", tributary_test_support::bootstrap())
        .output()
        .expect("running tributary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process that is killed if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tributary-cli-{}", tributary_test_support::random_suffix()))
}

#[test]
fn topics_apply_is_idempotent_and_refuses_a_partition_mismatch() {
    let dir = temp_dir();
    let topic = tributary_test_support::random_topic("apply");
    let catalog = |partitions: i32| {
        format!("[[topics]]\nname = \"{topic}\"\npartitions = {partitions}\nkey_field = \"user_id\"\nrole = \"source\"\n")
    };
    let config = write_config(&dir, &catalog(3));
    let (code, out, err) = tributary(&config, &["topics", "apply"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("created    {topic} (3 partitions)")), "{out}");

    let (code, out, _) = tributary(&config, &["topics", "apply"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("exists     {topic} (3 partitions)")), "{out}");

    let (code, out, _) = tributary(&config, &["topics", "list"]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with(&topic)).expect("topic listed");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["3", "3", "0"], "{line}");

    // The catalog now says 5: Kafka would have to move keys, so apply refuses and says why.
    let config = write_config(&dir, &catalog(5));
    let (code, out, err) = tributary(&config, &["topics", "apply"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("MISMATCH") && out.contains("has 3 partitions but the catalog says 5"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = temp_dir();
    let config = write_config(&dir, "[gateway]\nlisten = \"127.0.0.1:1\"\nmax_body_byte = 5\n");
    let (code, _, err) = tributary(&config, &["config", "show"]);
    assert_eq!(code, 1);
    assert!(err.contains("max_body_byte"), "names the unknown key: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends a raw request; an empty answer while nothing listens yet.
fn http(addr: &str, request: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else { return String::new() };
    if s.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn sigterm_lets_in_flight_writes_finish_then_exits_zero() {
    let dir = temp_dir();
    let topic = tributary_test_support::random_topic("drain");
    let port = tributary_test_support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = write_config(
        &dir,
        &format!(
            "[gateway]\nlisten = \"{addr}\"\n[[topics]]\nname = \"{topic}\"\npartitions = 3\nkey_field = \"user_id\"\nrole = \"source\"\nvalue_format = \"json\"\n"
        ),
    );
    assert_eq!(tributary(&config, &["topics", "apply"]).0, 0);
    let mut child = KillOnDrop(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("gateway")
            .env("TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS", tributary_test_support::bootstrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the gateway"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http(&addr, "GET /api/v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline, "gateway never became healthy");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A request in flight: headers and half the body sent, then SIGTERM, then the rest.
    let body = r#"{"event_id":"drain-1","timestamp":"2026-11-30T12:00:00Z","event_type":"t","user_id":"u-1","payload":{}}"#;
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = TcpStream::connect(&addr).expect("connect");
    write!(
        s,
        "POST /api/v1/events/{topic} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}",
        body.len()
    )
    .expect("write head");
    s.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    let term =
        Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
    assert!(term.success());
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(tail.as_bytes()).expect("the in-flight request may finish sending");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "in-flight write answered: {answer}");
    assert!(answer.contains("\"offset\":0"), "{answer}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "gateway did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    // New connections are refused once it is gone.
    assert!(TcpStream::connect(&addr).is_err());
    let _ = std::fs::remove_dir_all(dir);
}
