//! The platform on a production-shaped cluster: three KRaft nodes, SASL_SSL with
//! SCRAM-SHA-512, replication factor 3, `min.insync.replicas=2`, ACLs per service user
//! (deploy/kafka/cluster.sh, `make up KAFKA=cluster`). The real binary, configured only
//! through the settings a user gives for MSK (bootstrap, protocol, mechanism, user, password,
//! CA file).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tributary_test_support::{free_port, random_suffix, KillOnDrop, LocalCluster};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// librdkafka settings from a user's `TRIBUTARY_KAFKA__*` settings.
fn client(env: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (name, key) in [
        ("BOOTSTRAP_SERVERS", "bootstrap.servers"),
        ("SECURITY_PROTOCOL", "security.protocol"),
        ("SASL_MECHANISM", "sasl.mechanism"),
        ("SASL_USERNAME", "sasl.username"),
        ("SASL_PASSWORD", "sasl.password"),
        ("SSL_CA_LOCATION", "ssl.ca.location"),
    ] {
        if let Some(v) = env.get(&format!("TRIBUTARY_KAFKA__{name}")) {
            c.set(key, v);
        }
    }
    c
}

/// `tributary <args>` with `env`, its output.
fn run(config: &Path, env: &BTreeMap<String, String>, args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("--config").arg(config).args(args).envs(env).output().expect("tributary")
}

/// A gateway on a free port with `env`, its log in `dir`; the child and its base URL.
fn gateway(
    dir: &Path,
    config: &Path,
    env: &BTreeMap<String, String>,
    name: &str,
) -> (KillOnDrop, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["gateway", "--listen", &addr])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting the gateway");
    (KillOnDrop(child), format!("http://{addr}"))
}

/// The gateway's health answer once `done` holds for it, within `secs`.
async fn health_until(
    http: &reqwest::Client,
    base: &str,
    secs: u64,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/api/v1/health")).send().await {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return (status, body);
            }
            last = (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("health never got there within {secs} s; last answer {last:?}");
}

struct Scenario {
    dir: PathBuf,
    config: PathBuf,
    topic: String,
}

impl Scenario {
    /// A catalog of one JSON source topic under `events.` (the gateway user's ACL prefix).
    fn new() -> Self {
        let s = random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-cluster-test-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let topic = format!("events.{s}.clicks");
        let toml = format!(
            "[[topics]]\nname = \"{topic}\"\npartitions = 3\nkey_field = \"user_id\"\nrole = \"source\"\nvalue_format = \"json\"\n"
        );
        let config = dir.join("tributary.toml");
        std::fs::write(&config, toml).expect("config file");
        Self { dir, config, topic }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_use_their_own_users_and_name_what_the_cluster_refuses() {
    let cluster = LocalCluster::shared_or_start();
    let s = Scenario::new();
    let admin = cluster.client_env("admin");

    // The catalog, applied as the admin user, takes the cluster's replication factor.
    let out = run(&s.config, &admin, &["topics", "apply"]);
    assert!(out.status.success(), "topics apply: {}", String::from_utf8_lossy(&out.stderr));
    let consumer: BaseConsumer = client(&admin).create().expect("admin client");
    let md = consumer
        .fetch_metadata(Some(&s.topic), Duration::from_secs(20))
        .expect("metadata of the new topic");
    let replicas: Vec<usize> =
        md.topics()[0].partitions().iter().map(|p| p.replicas().len()).collect();
    assert_eq!(replicas, vec![3, 3, 3], "replicas per partition of {}", s.topic);

    // The gateway as its own user: healthy, writes acknowledged by two replicas, reads back.
    let http = reqwest::Client::new();
    let (_gw, base) = gateway(&s.dir, &s.config, &cluster.client_env("gateway"), "gateway");
    health_until(&http, &base, 60, |status, _| status == 200).await;
    for i in 0..3 {
        let event = json!({"event_id": format!("e-{i}"), "timestamp": "2026-12-05T10:00:00Z",
            "event_type": "click", "user_id": format!("user-{i}"), "payload": {}});
        let r = http
            .post(format!("{base}/api/v1/events/{}", s.topic))
            .json(&event)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap_or_default());
    }
    let latest: Value = http
        .get(format!("{base}/api/v1/events/{}/latest?limit=10", s.topic))
        .send()
        .await
        .expect("GET latest")
        .json()
        .await
        .expect("JSON");
    assert_eq!(latest["events"].as_array().map(Vec::len), Some(3), "{latest}");

    // A user without an ACL for the catalog's topics: health says access is denied, not that
    // the topics are missing.
    let (_denied, base) = gateway(&s.dir, &s.config, &cluster.client_env("registry"), "denied");
    let (_, body) = health_until(&http, &base, 60, |status, _| status == 503).await;
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("denied the gateway access") && reason.contains(&s.topic), "{body}");

    // A wrong password: health names the refused credentials, not a dead broker.
    let mut wrong = cluster.client_env("gateway");
    wrong.insert("TRIBUTARY_KAFKA__SASL_PASSWORD".into(), "not-the-password".into());
    let (_wrong, base) = gateway(&s.dir, &s.config, &wrong, "wrong-password");
    let (_, body) = health_until(&http, &base, 60, |status, body| {
        status == 503 && body["reason"].as_str().is_some_and(|r| r.contains("credentials"))
    })
    .await;
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(!reason.contains("127.0.0.1"), "health names no host: {body}");
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// `tributary <service> --listen <free port>` with `env`, its log in `dir`; the child, its
/// base URL and its log file.
fn service(
    dir: &Path,
    config: &Path,
    env: &BTreeMap<String, String>,
    args: &[&str],
    name: &str,
) -> (KillOnDrop, String, PathBuf) {
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .args(["--listen", &addr])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting the service");
    (KillOnDrop(child), format!("http://{addr}"), log_path)
}

/// The `reason` of a processor's or sink's `/health` once it answers 503 with one containing
/// every word of `words`, within `secs`; panics with the last answer and the log otherwise.
async fn reason_until(base: &str, log: &Path, secs: u64, words: &[&str]) -> String {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let reason = body["reason"].as_str().unwrap_or_default().to_owned();
            if status == 503 && words.iter().all(|w| reason.contains(w)) {
                return reason;
            }
            last = (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    panic!("no 503 naming {words:?} within {secs} s; last answer {last:?}; log tail {tail:#?}");
}

/// The processor's and the sink's own sections of the configuration: a group `group`, JSON
/// results (no registry needed), the sink's warehouse in `dir`.
fn with_services(s: &Scenario, processor_group: &str, sink_group: &str) -> PathBuf {
    let out = |w: &str| tributary_core::aggregate_topic(&s.topic, w);
    let mut toml = std::fs::read_to_string(&s.config).expect("config");
    for w in ["1m", "5m"] {
        toml.push_str(&format!(
            "[[topics]]\nname = \"{}\"\npartitions = 3\nrole = \"output\"\nvalue_format = \"json\"\nrequire_key = false\n",
            out(w)
        ));
    }
    toml.push_str(&format!(
        "[processor]\ngroup_id = \"{processor_group}\"\nwindow_ms = 2000\n\
         [[processor.sources]]\ntopic = \"{}\"\n\
         [sink]\ngroup_id = \"{sink_group}\"\ndatabase = \"{}\"\ntopics = [\"{}\"]\n",
        s.topic,
        s.dir.join("warehouse.duckdb").display(),
        s.topic,
    ));
    let config = s.dir.join(format!("services-{processor_group}.toml"));
    std::fs::write(&config, toml).expect("config file");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_and_sink_name_what_the_cluster_refuses() {
    let cluster = LocalCluster::shared_or_start();
    let s = Scenario::new();
    let suffix = s.topic.trim_start_matches("events.").trim_end_matches(".clicks").to_owned();
    let config = with_services(
        &s,
        &format!("tributary-processor-{suffix}"),
        &format!("tributary-sink-{suffix}"),
    );
    let out = run(&config, &cluster.client_env("admin"), &["topics", "apply"]);
    assert!(out.status.success(), "topics apply: {}", String::from_utf8_lossy(&out.stderr));

    // A wrong password: the processor stops at startup naming the refused credentials.
    let mut wrong = cluster.client_env("processor");
    wrong.insert("TRIBUTARY_KAFKA__SASL_PASSWORD".into(), "not-the-password".into());
    let (mut proc, _, log) = service(&s.dir, &config, &wrong, &["processor"], "proc-wrong");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = proc.0.try_wait().expect("waiting for the processor") {
            break status;
        }
        assert!(Instant::now() < deadline, "the processor kept running with a wrong password");
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{text}");
    assert!(text.contains("refused the credentials"), "startup names the cause: {text}");

    // The sink with a wrong password: unhealthy, and health says why.
    let mut wrong = cluster.client_env("sink");
    wrong.insert("TRIBUTARY_KAFKA__SASL_PASSWORD".into(), "not-the-password".into());
    let (_sink, base, log) = service(&s.dir, &config, &wrong, &["sink"], "sink-wrong");
    let reason = reason_until(&base, &log, 60, &["refused the credentials"]).await;
    assert!(!reason.contains("127.0.0.1"), "health names no host: {reason}");
    drop(_sink);

    // The sink as a user without an ACL for its group (the processor's user).
    let (_sink, base, log) =
        service(&s.dir, &config, &cluster.client_env("processor"), &["sink"], "sink-denied");
    reason_until(&base, &log, 60, &["denied", "group"]).await;
    drop(_sink);

    // The processor as a user without an ACL for its transactional id (the sink's user, in a
    // group that user may join): unhealthy, and health says why.
    let config = with_services(
        &s,
        &format!("tributary-sink-proc-{suffix}"),
        &format!("tributary-sink-{suffix}"),
    );
    let (_proc, base, log) =
        service(&s.dir, &config, &cluster.client_env("sink"), &["processor"], "proc-denied");
    reason_until(&base, &log, 90, &["denied", "transactional id"]).await;
    let _ = std::fs::remove_dir_all(&s.dir);
}
