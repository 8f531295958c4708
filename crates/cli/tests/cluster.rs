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
