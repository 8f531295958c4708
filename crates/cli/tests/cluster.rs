//! The platform on a production-shaped cluster: three KRaft nodes, SASL_SSL with
//! SCRAM-SHA-512, replication factor 3, `min.insync.replicas=2`, ACLs per service user
//! (deploy/kafka/cluster.sh, `make up KAFKA=cluster`). The real binary, configured only
//! through the settings a user gives for MSK (bootstrap, protocol, mechanism, user, password,
//! CA file).

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tributary_test_support::cluster::client_config;
use tributary_test_support::platform::exclusive;
use tributary_test_support::{free_port, random_suffix, KillOnDrop, LocalCluster};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

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
    let _one = exclusive().await;
    let cluster = LocalCluster::shared_or_start();
    let s = Scenario::new();
    let admin = cluster.client_env("admin");

    // The catalog, applied as the admin user, takes the cluster's replication factor.
    let out = run(&s.config, &admin, &["topics", "apply"]);
    assert!(out.status.success(), "topics apply: {}", String::from_utf8_lossy(&out.stderr));
    let consumer: BaseConsumer = client_config(&admin).create().expect("admin client");
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

/// Waits (90 s at most) for a service started by [`service`] to exit, and requires it to fail
/// with a log naming every one of `words`.
fn exits_naming((mut child, _, log): (KillOnDrop, String, PathBuf), words: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("waiting for the service") {
            break status;
        }
        assert!(Instant::now() < deadline, "{} kept running", log.display());
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{text}");
    for word in words {
        assert!(text.contains(word), "startup names the cause ({word}): {text}");
    }
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
    let _one = exclusive().await;
    let cluster = LocalCluster::shared_or_start();
    let s = Scenario::new();
    let suffix = s.topic.trim_start_matches("events.").trim_end_matches(".clicks").to_owned();
    let config = with_services(
        &s,
        &format!("tributary-processor-{suffix}"),
        &format!("tributary-sink-{suffix}"),
    );
    // `topics apply` with a wrong password stops naming the refused credentials.
    let mut wrong = cluster.client_env("admin");
    wrong.insert("TRIBUTARY_KAFKA__SASL_PASSWORD".into(), "not-the-password".into());
    let out = run(&config, &wrong, &["topics", "apply"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("refused the credentials"), "{text}");
    let out = run(&config, &cluster.client_env("admin"), &["topics", "apply"]);
    assert!(out.status.success(), "topics apply: {}", String::from_utf8_lossy(&out.stderr));

    // A wrong password: the processor stops at startup naming the refused credentials.
    let mut wrong = cluster.client_env("processor");
    wrong.insert("TRIBUTARY_KAFKA__SASL_PASSWORD".into(), "not-the-password".into());
    let started = service(&s.dir, &config, &wrong, &["processor"], "proc-wrong");
    exits_naming(started, &["refused the credentials"]);

    // The registry: with a wrong password, and as a user without an ACL for `_schemas` (the
    // gateway's), it stops at startup naming the cause.
    let mut wrong = cluster.client_env("registry");
    wrong.insert("TRIBUTARY_KAFKA__SASL_PASSWORD".into(), "not-the-password".into());
    let started = service(&s.dir, &config, &wrong, &["registry"], "registry-wrong");
    exits_naming(started, &["refused the credentials"]);
    let gateway_user = cluster.client_env("gateway");
    let started = service(&s.dir, &config, &gateway_user, &["registry"], "registry-denied");
    exits_naming(started, &["denied access to a topic"]);

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

/// Dead letters as the processor writes them (the original record plus `dlq.*` headers), as
/// the admin user: (reason, key) each, from `source`.
async fn write_dead_letters(admin: &BTreeMap<String, String>, dlq: &str, source: &str, n: usize) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = client_config(admin).create().expect("admin producer");
    for i in 0..n {
        let reason = if i % 2 == 0 { "late" } else { "undecodable" };
        let offset = i.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "dlq.reason", value: Some(reason) })
            .insert(Header { key: "dlq.error", value: Some("why it failed") })
            .insert(Header { key: "dlq.source.topic", value: Some(source) })
            .insert(Header { key: "dlq.source.partition", value: Some("0") })
            .insert(Header { key: "dlq.source.offset", value: Some(offset.as_str()) });
        let key = format!("user-{i}");
        let value = format!("{{\"event_id\":\"dead-{i}\"}}");
        let record = FutureRecord::to(dlq).key(&key).payload(&value).headers(headers);
        producer.send(record, Duration::from_secs(30)).await.expect("dead letter written");
    }
}

/// The records committed on partitions `0..partitions` of `topic`, read with `env` until
/// `expected` came and nothing more for two seconds (so duplicates would show), within 60 s.
fn committed_records(
    env: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> usize {
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = client_config(env)
        .set("group.id", "tributary-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut n, mut quiet) = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && (n < expected || quiet.elapsed() < Duration::from_secs(2)) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(200)) {
            n += 1;
            quiet = Instant::now();
        }
    }
    n
}

fn stdout_of(what: &str, out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `tributary topics`, `gen` and `dlq` over SASL_SSL with the MSK settings (bootstrap,
/// mechanism, user, password, CA file), each as the user docs/deployment.md names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_tools_run_over_the_cluster_as_their_users() {
    let _one = exclusive().await;
    let cluster = LocalCluster::shared_or_start();
    let s = random_suffix();
    let dir = std::env::temp_dir().join(format!("tributary-cluster-cli-{s}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (dlq, source) = (format!("events.{s}.dlq"), format!("events.{s}.src"));
    // `gen` writes to the fixed topics of the example catalog; JSON here, so no registry is
    // needed, and one partition each to keep the shared cluster small.
    let mut toml = String::new();
    for (name, key, role) in [
        ("events.iot.sensors", "device_id", "source"),
        ("events.clickstream", "user_id", "source"),
        ("events.transactions", "user_id", "source"),
        ("reference.devices", "device_id", "reference"),
        ("reference.users", "user_id", "reference"),
        (source.as_str(), "user_id", "source"),
    ] {
        toml.push_str(&format!(
            "[[topics]]\nname = \"{name}\"\npartitions = 1\nkey_field = \"{key}\"\nrole = \"{role}\"\nvalue_format = \"json\"\n"
        ));
    }
    toml.push_str(&format!(
        "[[topics]]\nname = \"{dlq}\"\npartitions = 2\nrequire_key = false\nrole = \"dead_letter\"\nvalue_format = \"json\"\n"
    ));
    let config = dir.join("tributary.toml");
    std::fs::write(&config, toml).expect("config file");
    let admin = cluster.client_env("admin");

    // topics: apply (twice: the second finds everything there) and list, as admin.
    stdout_of("topics apply", &run(&config, &admin, &["topics", "apply"]));
    stdout_of("topics apply again", &run(&config, &admin, &["topics", "apply"]));
    let listed = stdout_of("topics list", &run(&config, &admin, &["topics", "list"]));
    let row = listed.lines().find(|l| l.starts_with(&dlq)).unwrap_or_default();
    assert_eq!(row.split_whitespace().nth(1), Some("2"), "{listed}");

    // gen: events through a gateway running as the gateway user; its reference data and
    // malformed records straight to Kafka as admin (no service user may write those).
    let http = reqwest::Client::new();
    let (_gw, base) = gateway(&dir, &config, &cluster.client_env("gateway"), "gateway");
    health_until(&http, &base, 60, |status, _| status == 200).await;
    let args = ["gen", "--rate", "40", "--duration", "3", "--seed", "7", "--gateway", &base];
    let out = stdout_of("gen", &run(&config, &admin, &args));
    let done = out.lines().find(|l| l.starts_with("gen: done:")).unwrap_or_default();
    let counts: Vec<u64> = done.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(counts.len() >= 2 && counts[0] > 0 && counts[0] == counts[1], "{out}");
    assert!(committed_records(&admin, "reference.users", 1, 1) > 0, "no reference data");

    // dlq: stats and list as the processor (its dead letters), replay as the processor too,
    // exactly once across two runs.
    write_dead_letters(&admin, &dlq, &source, 6).await;
    let processor = cluster.client_env("processor");
    let dlq_args = |args: &[&'static str]| -> Vec<String> {
        args.iter().map(|a| a.to_string()).chain(["--topic".into(), dlq.clone()]).collect()
    };
    let run_dlq = |args: &[&'static str]| {
        let args = dlq_args(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout_of(&args.join(" "), &run(&config, &processor, &args))
    };
    let stats: Value =
        serde_json::from_str(run_dlq(&["dlq", "stats", "--json"]).trim()).expect("stats JSON");
    assert_eq!(stats["total"], 6, "{stats}");
    let listed = run_dlq(&["dlq", "list", "--json", "--reason", "late"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    let replayed = run_dlq(&["dlq", "replay", "--reason", "late"]);
    assert!(replayed.contains(&format!("wrote 3 to {source}")), "{replayed}");
    let again = run_dlq(&["dlq", "replay", "--reason", "late"]);
    assert!(!again.contains(&format!("to {source}")), "a second replay wrote again: {again}");
    assert_eq!(committed_records(&admin, &source, 1, 3), 3, "records replayed to {source}");
    let _ = std::fs::remove_dir_all(&dir);
}
