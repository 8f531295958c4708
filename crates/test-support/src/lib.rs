//! Helpers for Tributary's integration tests: the shared broker's address, random names, and
//! waiting for a condition with a deadline instead of sleeping.
//!
//! Integration tests talk to a real Kafka broker. `make test` (scripts/test.sh) exports
//! `TRIBUTARY_TEST_BOOTSTRAP`; [`bootstrap`] reads it. Tests that must stop and restart a
//! broker start one of their own with [`LocalBroker`]. HTTPS tests make their certificates
//! with [`TestCa`].

pub mod broker;
pub mod cluster;
mod exact;
pub mod load;
pub mod platform;
pub mod tls;

pub use broker::LocalBroker;
pub use cluster::{Faults, LocalCluster};
pub use exact::Exact;
pub use tls::TestCa;

use rand::Rng as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::future::Future;
use std::time::{Duration, Instant};

/// The checkout the tests run from, found at run time: above the package folder cargo names
/// in `CARGO_MANIFEST_DIR` when it runs a test, else above the working directory. Not
/// `env!("CARGO_MANIFEST_DIR")`: the shared target directory reuses builds across checkouts,
/// so a path compiled in can name another clone. Not the working directory first: tests that
/// use `figment::Jail` move the process into a temporary folder while others run.
pub fn repo_root() -> std::path::PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("working directory"));
    start
        .ancestors()
        .find(|d| d.join("deploy/kafka/kafka.sh").is_file())
        .unwrap_or_else(|| panic!("no Tributary checkout above {}", start.display()))
        .to_path_buf()
}

/// Runs `<bin> --config <config> topics apply` and requires it to succeed: the topics of a
/// test's catalog, created the way users create them.
pub fn apply_topics(bin: &str, config: &std::path::Path) {
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["topics", "apply"])
        .output()
        .expect("running tributary topics apply");
    assert!(out.status.success(), "topics apply: {}", String::from_utf8_lossy(&out.stderr));
}

/// Hands `record` to `producer`, waiting while librdkafka's queue is full; its delivery.
/// Records enqueued one after another keep that order on their partition.
pub async fn enqueue<'a>(
    producer: &rdkafka::producer::FutureProducer,
    mut record: rdkafka::producer::FutureRecord<'a, str, [u8]>,
) -> rdkafka::producer::DeliveryFuture {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((e, back)) => {
                let full = rdkafka::types::RDKafkaErrorCode::QueueFull;
                assert_eq!(e.rdkafka_error_code(), Some(full), "enqueueing: {e}");
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// `<bin> --config <config> warehouse sql --json <query>`, as a user runs it, required to
/// succeed; the rows, every value as text (`None` for NULL).
pub fn warehouse_sql(bin: &str, config: &std::path::Path, query: &str) -> Vec<Vec<Option<String>>> {
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["warehouse", "sql", "--json", query])
        .output()
        .expect("running tributary warehouse sql");
    assert!(out.status.success(), "{query}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    serde_json::from_value(v["rows"].clone()).expect("rows of text or null")
}

/// Bootstrap servers of the broker the tests share.
pub fn bootstrap() -> String {
    std::env::var("TRIBUTARY_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A random lowercase suffix, unique enough to keep tests apart on a shared broker.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..10).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect()
}

/// A topic name of the form `test-<prefix>-<random>`.
pub fn random_topic(prefix: &str) -> String {
    format!("test-{prefix}-{}", random_suffix())
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; bind promptly).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on 127.0.0.1")
}

/// A base port drawn from `range`, which should lie below Linux's ephemeral range
/// (32768-60999), with `base + offset` free on 127.0.0.1 for every offset: for servers a test
/// stops and starts again on the same ports. A port in the ephemeral range can meanwhile become
/// the local end of an outgoing connection, and the restart then fails with "Address already
/// in use".
pub fn free_fixed_ports(range: std::ops::Range<u16>, offsets: &[u16]) -> u16 {
    use rand::Rng as _;
    let mut rng = rand::rng();
    loop {
        let base = rng.random_range(range.clone());
        let free = |o: &u16| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok();
        if offsets.iter().all(free) {
            return base;
        }
    }
}

/// One port of [`free_fixed_ports`], from 10000-20000.
pub fn free_fixed_port() -> u16 {
    free_fixed_ports(10_000..20_000, &[0])
}

/// A child process that is killed (SIGKILL) if the test ends before it does.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers 2xx (asked with curl), or panics after `timeout`.
pub fn wait_http(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = std::process::Command::new("curl")
            .args(["-fsS", "-m", "2", "-o", "/dev/null", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not answer within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum over its labels of a Prometheus metric served at `http://127.0.0.1:<port>/metrics`
/// (0 when it is not there yet).
pub fn metric(port: u16, name: &str) -> f64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = std::process::Command::new("curl").args(["-fsS", "-m", "2", &url]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts `<bin> --config <config> <args>` in the background, its stderr going to `log`; the
/// process is killed if the test ends first.
pub fn spawn_logged(
    bin: &str,
    config: &std::path::Path,
    args: &[&str],
    log: std::fs::File,
) -> KillOnDrop {
    spawn_logged_env(bin.as_ref(), config, args, &std::collections::BTreeMap::new(), log)
}

/// [`spawn_logged`] with `env` added to the child's environment.
pub fn spawn_logged_env(
    bin: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
    env: &std::collections::BTreeMap<String, String>,
    log: std::fs::File,
) -> KillOnDrop {
    let child = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting tributary {args:?}: {e}"));
    KillOnDrop(child)
}

/// A `read_committed` consumer outside any group, reading partitions `0..n` of each
/// `(topic, n)` from the beginning: what a downstream reader of those topics sees.
pub fn read_committed(bootstrap: &str, topics: &[(&str, i32)]) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}
