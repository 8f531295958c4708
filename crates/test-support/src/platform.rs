//! The whole platform on the shared three-node cluster, for the broker-fault scenarios: a
//! catalog of one JSON source topic with its window results and the dead-letter topic; the
//! gateway, the processor, the sink and the registry as their own SCRAM users; a load writer
//! that retries every unanswered event with the same `event_id`, as the API tells clients to;
//! and the exact check of what a `read_committed` reader and the warehouse finally hold.
//!
//! A scenario kills, stops and freezes brokers of the shared cluster, so the scenarios of one
//! test binary take [`exclusive`] first, and [`Faults`] brings every node back when the
//! scenario ends, passing or failing. (Cargo runs test binaries one after another.)

pub use tributary_core::aggregate_topic;

use crate::{free_port, random_suffix, spawn_logged_env, KillOnDrop, LocalCluster};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Partitions of the source topic and of its window results.
pub const PARTITIONS: i32 = 3;
/// Users the load spreads its events over (the key of the window results).
pub const USERS: usize = 6;
/// Small panes, so that windows close in seconds: `1m` results are 2-second windows, `5m`
/// results 10-second ones.
pub const PANE_MS: i64 = 2_000;
pub const SLIDING_PANES: i64 = 5;
const GRACE_MS: i64 = 1_000;
const OUT_OF_ORDERNESS_MS: i64 = 1_000;

/// Serializes the cluster scenarios of one test binary: each kills or freezes brokers that
/// the others would be using. (An async lock: the scenarios await while they hold it.)
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The platform under test on the shared cluster: its catalog applied, its services started
/// on demand.
pub struct Platform {
    pub cluster: LocalCluster,
    /// Logs, the configuration file and the warehouse.
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The JSON source topic, `events.<random>.clicks`.
    pub topic: String,
    /// An Avro source topic, `events.<random>.orders`, whose schema the gateway registers
    /// and looks up in the registry; nothing reads it but the tests.
    pub avro_topic: String,
    /// The warehouse table of the source topic.
    pub table: String,
    /// The processor's consumer group (its transactional ids are `<group>-<instance>`).
    pub group: String,
    pub sink_port: u16,
    pub registry_port: u16,
    bin: PathBuf,
    envs: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl Platform {
    /// Writes the configuration and applies the catalog as the admin user. `bin` is the
    /// `tributary` binary (`env!("CARGO_BIN_EXE_tributary")` in the cli tests).
    pub fn new(bin: &str) -> Self {
        let cluster = LocalCluster::shared_or_start();
        let s = random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-platform-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let topic = format!("events.{s}.clicks");
        let avro_topic = format!("events.{s}.orders");
        let group = format!("tributary-processor-{s}");
        let (sink_port, registry_port) = (free_port(), free_port());
        let config = dir.join("tributary.toml");
        std::fs::write(
            &config,
            config_text(&dir, [&topic, &avro_topic], &group, [sink_port, registry_port]),
        )
        .expect("config file");
        let p = Self {
            cluster,
            dir,
            config,
            topic,
            avro_topic,
            table: "CLICKS_UNDER_FAULTS".to_owned(),
            group,
            sink_port,
            registry_port,
            bin: PathBuf::from(bin),
            envs: Mutex::default(),
        };
        let out = p.command("admin", &["topics", "apply"]).output().expect("topics apply");
        assert!(out.status.success(), "topics apply: {}", String::from_utf8_lossy(&out.stderr));
        // A scenario starts on a whole cluster, whatever the one before left.
        p.wait_fully_replicated(Duration::from_secs(120));
        p
    }

    /// The `TRIBUTARY_KAFKA__*` settings of SCRAM user `user`, asked of cluster.sh once.
    pub fn env(&self, user: &str) -> BTreeMap<String, String> {
        let mut envs = self.envs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        envs.entry(user.to_owned()).or_insert_with(|| self.cluster.client_env(user)).clone()
    }

    /// `tributary --config <config> <args>` as `user`, not started.
    pub fn command(&self, user: &str, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.bin);
        c.arg("--config").arg(&self.config).args(args).envs(self.env(user));
        c
    }

    /// Starts `tributary <args>` as `user` in the background, its log in `<dir>/<name>.log`.
    pub fn spawn(&self, name: &str, user: &str, args: &[&str]) -> KillOnDrop {
        let log = std::fs::File::create(self.log_path(name)).expect("log file");
        spawn_logged_env(&self.bin, &self.config, args, &self.env(user), log)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// A gateway on a free port once it is healthy; the child and its base URL.
    pub fn gateway(&self, name: &str) -> (KillOnDrop, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = self.spawn(name, "gateway", &["gateway", "--listen", &addr]);
        crate::wait_http(&format!("http://{addr}/api/v1/health"), Duration::from_secs(90));
        (child, format!("http://{addr}"))
    }

    /// Processor instance `instance` (its transactional id `<group>-<instance>`) on a free
    /// port, once its health answers; the child and the port.
    pub fn processor(&self, instance: u32) -> (KillOnDrop, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let slot = instance.to_string();
        let args = ["processor", "--listen", &listen, "--instance", &slot];
        let child = self.spawn(&format!("processor-{instance}"), "processor", &args);
        crate::wait_http(&format!("http://{listen}/health"), Duration::from_secs(90));
        (child, port)
    }

    /// The sink (its port is [`Platform::sink_port`]), once its health answers.
    pub fn sink(&self) -> KillOnDrop {
        let child = self.spawn("sink", "sink", &["sink"]);
        let url = format!("http://127.0.0.1:{}/health", self.sink_port);
        crate::wait_http(&url, Duration::from_secs(90));
        child
    }

    /// The registry on [`Platform::registry_port`], once it answers.
    pub fn registry(&self) -> KillOnDrop {
        let listen = format!("127.0.0.1:{}", self.registry_port);
        let child = self.spawn("registry", "registry", &["registry", "--listen", &listen]);
        crate::wait_http(&format!("http://{listen}/subjects"), Duration::from_secs(90));
        child
    }

    /// The last lines of every log of the scenario, for failure messages.
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "log"));
        names.sort();
        let mut all = String::new();
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            all += &format!("--- {} ---\n{tail}\n", path.display());
        }
        all
    }

    /// A client of the cluster as the admin user (who may read everything).
    pub fn admin_client(&self) -> ClientConfig {
        crate::cluster::client_config(&self.env("admin"))
    }

    /// The node (1-3) leading `partition` of `topic`, asked of the cluster.
    pub fn leader(&self, topic: &str, partition: i32) -> u8 {
        let consumer: BaseConsumer = self.admin_client().create().expect("admin client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .expect("metadata of the topic");
        let leader = md.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .expect("the partition");
        u8::try_from(leader).unwrap_or_else(|_| panic!("{topic}/{partition} has no leader"))
    }

    /// Waits (`timeout` at most) until every partition of every topic has all its replicas in
    /// sync, as an operator does between two steps of a rolling restart; how long it took.
    ///
    /// And as an operator would, it starts a node whose process has died, and restarts once a
    /// node that every lagging partition lacks when half the time has passed (a restarted node
    /// catches up in 10-15 s here): Kafka's own restart hiccups are not what the scenarios
    /// test, and a node left out would fail the scenarios after this one. Both are printed.
    pub fn wait_fully_replicated(&self, timeout: Duration) -> Duration {
        let consumer: BaseConsumer = self.admin_client().create().expect("admin client");
        let started = Instant::now();
        let mut restarted = false;
        loop {
            let lagging = match consumer.fetch_metadata(None, Duration::from_secs(10)) {
                Ok(md) => md
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p)))
                    .filter(|(_, p)| p.isr().len() < p.replicas().len())
                    .map(|(t, p)| {
                        let out = p.replicas().iter().filter(|r| !p.isr().contains(r));
                        (format!("{t}/{}", p.id()), out.copied().collect::<Vec<i32>>())
                    })
                    .collect::<Vec<_>>(),
                Err(e) => vec![(e.to_string(), Vec::new())],
            };
            if lagging.is_empty() {
                return started.elapsed();
            }
            let names = || lagging.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>();
            assert!(
                started.elapsed() < timeout,
                "not in sync after {timeout:?}: {}\n{}",
                names().join(", "),
                self.cluster.report()
            );
            for n in (1..=3u8).filter(|n| !self.cluster.alive(*n)) {
                eprintln!("node {n} is not running; starting it\n{}", self.cluster.report());
                self.cluster.start_node(n);
            }
            let missing_everywhere =
                (1..=3u8).find(|n| lagging.iter().all(|(_, out)| out.contains(&i32::from(*n))));
            if let (Some(n), false) = (missing_everywhere, restarted) {
                if started.elapsed() > timeout / 2 {
                    eprintln!(
                        "node {n} has not caught up with any partition in {:?}; restarting it\n{}",
                        started.elapsed(),
                        self.cluster.report()
                    );
                    self.cluster.kill(n);
                    self.cluster.start_node(n);
                    restarted = true;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What a `read_committed` reader (the admin user) finds on `topic` with `partitions`
    /// partitions: every record's (partition, offset, JSON value).
    pub fn read_all(&self, topic: &str, partitions: i32) -> Vec<(i32, i64, Value)> {
        let records = self.read_raw(topic, partitions).into_iter();
        records
            .map(|(p, o, bytes)| (p, o, serde_json::from_slice(&bytes).expect("a JSON value")))
            .collect()
    }

    /// [`Platform::read_all`] with the values as bytes.
    pub fn read_raw(&self, topic: &str, partitions: i32) -> Vec<(i32, i64, Vec<u8>)> {
        let mut c = self.admin_client();
        c.set("group.id", "tributary-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = c.create().expect("reader");
        let mut ends = BTreeMap::new();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) =
                consumer.fetch_watermarks(topic, p, Duration::from_secs(30)).expect("watermarks");
            if high > low {
                ends.insert(p, high);
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low))
                    .expect("partition");
            }
        }
        if ends.is_empty() {
            return Vec::new();
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        // read_committed stops at the last stable offset: below the high watermark by the
        // transaction markers, so the end is where the reader's position reaches the mark.
        while ends.iter().any(|(p, high)| positions.get(p).is_none_or(|pos| pos + 1 < *high)) {
            assert!(Instant::now() < deadline, "{topic}: not read to its end within 120 s");
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                let pos = consumer.position().expect("position");
                for e in pos.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset() {
                        if ends.get(&e.partition()).is_some_and(|h| o >= *h) {
                            positions.insert(e.partition(), o);
                        }
                    }
                }
                continue;
            };
            let m = m.expect("reading");
            positions.insert(m.partition(), m.offset());
            out.push((m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec()));
        }
        out
    }

    /// `tributary warehouse sql --json` as a user runs it; the single count it answers.
    pub fn sql_count(&self, query: &str) -> i64 {
        let rows =
            crate::warehouse_sql(self.bin.to_str().expect("utf-8 path"), &self.config, query);
        let value = rows.first().and_then(|r| r.first()).cloned().flatten();
        value.and_then(|n| n.parse().ok()).expect("a count")
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The configuration every service of the scenario reads; Kafka's settings come from each
/// service user's environment.
fn config_text(
    dir: &Path,
    [topic, avro_topic]: [&str; 2],
    group: &str,
    [sink_port, registry_port]: [u16; 2],
) -> String {
    let sink_group = group.replace("tributary-processor", "tributary-sink");
    let mut toml = format!(
        r#"[gateway.registry]
url = "http://127.0.0.1:{registry_port}"
[processor]
group_id = "{group}"
commit_interval_ms = 100
transaction_timeout_ms = 10000
window_ms = {PANE_MS}
sliding_panes = {SLIDING_PANES}
grace_ms = {GRACE_MS}
out_of_orderness_ms = {OUT_OF_ORDERNESS_MS}
idle_ms = 600000
dlq_topic = "events.dlq"
late_topic = "events.dlq"
[processor.registry]
url = "http://127.0.0.1:{registry_port}"
[[processor.sources]]
topic = "{topic}"
count_by = "event_type"
[sink]
listen = "127.0.0.1:{sink_port}"
database = "{db}"
group_id = "{sink_group}"
topics = ["{topic}"]
tables = {{ "{topic}" = "CLICKS_UNDER_FAULTS" }}
buffer_flush_time_secs = 0.5
dlq_topic = "events.dlq"
[sink.registry]
url = "http://127.0.0.1:{registry_port}"
"#,
        db = dir.join("warehouse.duckdb").display(),
    );
    let entry = |name: &str, partitions: i32, key: &str, role: &str| {
        format!("[[topics]]\nname = \"{name}\"\npartitions = {partitions}\n{key}\nrole = \"{role}\"\nvalue_format = \"json\"\n")
    };
    toml += &entry(topic, PARTITIONS, "key_field = \"user_id\"", "source");
    toml += &entry(avro_topic, PARTITIONS, "key_field = \"user_id\"", "source")
        .replace("\"json\"", "\"avro\"");
    for w in ["1m", "5m"] {
        let out = aggregate_topic(topic, w);
        toml += &entry(&out, PARTITIONS, "key_field = \"key\"", "output");
    }
    toml += &entry("events.dlq", 1, "require_key = false", "dead_letter");
    toml
}
