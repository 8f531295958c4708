//! The stream processor across gaps — the real binary against the real broker, with small
//! windows (2 s panes, 2-pane sliding windows, 1 s out-of-orderness and grace, `idle_ms` 1 s),
//! JSON in and out (no registry needed):
//!
//! - a gap in the group's memory: its committed offsets (the checkpoints) deleted while the
//!   processor is stopped. It must refuse to start rather than write every result again, and
//!   with `--reset latest` it must start where the partitions end;
//! - gaps in the traffic of a producer whose clock is 30 s behind the processor's, each longer
//!   than `idle_ms`: the idle rule must not make its next records late.

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tributary_core::{aggregate_topic, murmur2_partition};
use tributary_test_support::{metric, spawn_logged, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const PANE_MS: i64 = 2_000;
const PARTITIONS: i32 = 2;
const KEYS: [&str; 3] = ["u-1", "u-2", "u-3"];

/// Results as compared: (window, window start, key) → count.
type Results = BTreeMap<(String, i64, String), u64>;

/// A source topic with its two output topics and a dead-letter topic, and the processor's
/// configuration for them.
struct Gaps {
    bootstrap: String,
    dir: PathBuf,
    config: PathBuf,
    group: String,
    source: String,
    outputs: [String; 2],
    dlq: String,
    producer: FutureProducer,
    runtime: tokio::runtime::Runtime,
}

impl Gaps {
    fn new() -> Self {
        let bootstrap = tributary_test_support::bootstrap();
        let s = tributary_test_support::random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-gaps-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let source = format!("events.{s}.clicks");
        let outputs = ["1m", "5m"].map(|w| aggregate_topic(&source, w));
        let (group, dlq) = (format!("test-gaps-{s}"), format!("test-dlq-{s}"));
        // Nothing listens there: JSON input and output need no registry.
        let registry_port = tributary_test_support::free_port();
        let mut toml = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
[kafka.extra]
"session.timeout.ms" = "6000"
[processor]
group_id = "{group}"
commit_interval_ms = 100
transaction_timeout_ms = 5000
window_ms = {PANE_MS}
sliding_panes = 2
out_of_orderness_ms = 1000
grace_ms = 1000
idle_ms = 1000
dlq_topic = "{dlq}"
late_topic = "{dlq}"
[processor.registry]
url = "http://127.0.0.1:{registry_port}"
[[processor.sources]]
topic = "{source}"
"#
        );
        let topic = |name: &str, partitions: i32, key: &str, role: &str| {
            format!("[[topics]]\nname = \"{name}\"\npartitions = {partitions}\nkey_field = \"{key}\"\nrole = \"{role}\"\nvalue_format = \"json\"\n")
        };
        toml += &topic(&source, PARTITIONS, "user_id", "source");
        for o in &outputs {
            toml += &topic(o, PARTITIONS, "key", "output");
        }
        toml += "[[topics]]\nname = \"";
        toml += &dlq;
        toml += "\"\npartitions = 1\nrequire_key = false\nrole = \"dead_letter\"\nvalue_format = \"json\"\n";
        let config = dir.join("tributary.toml");
        std::fs::write(&config, toml).expect("config file");
        tributary_test_support::apply_topics(BIN, &config);
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Self { bootstrap, dir, config, group, source, outputs, dlq, producer, runtime }
    }

    /// Starts the processor with `extra` arguments; returns it and its metrics port.
    fn start(&self, extra: &[&str]) -> (KillOnDrop, u16) {
        let port = tributary_test_support::free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("processor.log"))
            .expect("log file");
        let listen = format!("127.0.0.1:{port}");
        let args: Vec<&str> =
            ["processor", "--listen", &listen].into_iter().chain(extra.iter().copied()).collect();
        (spawn_logged(BIN, &self.config, &args, log), port)
    }

    /// Starts the processor and waits until it holds every partition of the source.
    fn start_working(&self, extra: &[&str]) -> KillOnDrop {
        let (child, port) = self.start(extra);
        let deadline = Instant::now() + Duration::from_secs(45);
        while metric(port, "processor_assigned_partitions") < f64::from(PARTITIONS) {
            assert!(
                Instant::now() < deadline,
                "the processor did not take its partitions\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// Stops the processor with SIGTERM and requires a clean exit.
    fn stop(&self, mut child: KillOnDrop) {
        Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("waiting for the processor") {
                break status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "the processor stopped with {status}\n{}", self.log());
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("processor.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Writes one event per entry of `events` (key, event time), each to its key's partition,
    /// and returns them.
    fn send(&self, events: &[(&str, i64)]) -> Vec<(String, i64)> {
        self.runtime.block_on(async {
            for (i, (key, t)) in events.iter().enumerate() {
                let value = json!({
                    "event_id": format!("e-{t}-{i}"),
                    "timestamp": t,
                    "event_type": "view",
                    "user_id": key,
                    "payload": {},
                })
                .to_string();
                let partition = murmur2_partition(key.as_bytes(), PARTITIONS).expect("partitions");
                let record =
                    FutureRecord::to(&self.source).key(*key).payload(&value).partition(partition);
                self.producer.send(record, Duration::from_secs(10)).await.expect("event written");
            }
        });
        events.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect()
    }

    /// Everything a `read_committed` reader sees: the results, and the dead letters' reasons.
    /// Reads until `done` holds for the results, then 3 s more so duplicates would show, or
    /// panics after `timeout`.
    fn read(&self, timeout: Duration, done: impl Fn(&Results) -> bool) -> (Results, Vec<String>) {
        let mut topics: Vec<(&str, i32)> =
            self.outputs.iter().map(|t| (t.as_str(), PARTITIONS)).collect();
        topics.push((&self.dlq, 1));
        let consumer = tributary_test_support::read_committed(&self.bootstrap, &topics);
        let (mut results, mut dead) = (Results::new(), Vec::new());
        let deadline = Instant::now() + timeout;
        let mut complete_at: Option<Instant> = None;
        while complete_at.is_none_or(|at| at.elapsed() < Duration::from_secs(3)) {
            assert!(
                Instant::now() < deadline,
                "results incomplete after {timeout:?}: {results:?}, dead letters {dead:?}\n{}",
                self.log()
            );
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("reading results");
                if m.topic() == self.dlq {
                    dead.push(dlq_reason(&m));
                } else {
                    let v: Value = serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("a JSON result");
                    let start = chrono::DateTime::parse_from_rfc3339(
                        v["window_start"].as_str().expect("window_start"),
                    )
                    .expect("RFC 3339")
                    .timestamp_millis();
                    let at = (
                        v["window"].as_str().expect("window").to_owned(),
                        start,
                        v["key"].as_str().expect("key").to_owned(),
                    );
                    let count = v["count"].as_u64().expect("count");
                    assert!(results.insert(at.clone(), count).is_none(), "{at:?} written twice");
                }
            }
            if complete_at.is_none() && done(&results) {
                complete_at = Some(Instant::now());
            }
        }
        (results, dead)
    }
}

fn dlq_reason(m: &rdkafka::message::BorrowedMessage<'_>) -> String {
    use rdkafka::message::Headers as _;
    m.headers()
        .and_then(|h| h.iter().find(|x| x.key == "dlq.reason"))
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// What `events` should give: each window (tumbling `1m` and 2-pane sliding `5m`) containing
/// an event, per key, with its count.
fn expected(events: &[(String, i64)]) -> Results {
    let mut out = Results::new();
    for (key, t) in events {
        let pane = t.div_euclid(PANE_MS) * PANE_MS;
        *out.entry(("1m".into(), pane, key.clone())).or_default() += 1;
        for start in [pane - PANE_MS, pane] {
            *out.entry(("5m".into(), start, key.clone())).or_default() += 1;
        }
    }
    out
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A burst of `per_key` events for every key, with event times `behind_ms` behind the wall
/// clock, 10 ms apart.
fn burst(per_key: usize, behind_ms: i64) -> Vec<(&'static str, i64)> {
    let t = now_ms() - behind_ms;
    (0..per_key).flat_map(|i| KEYS.iter().map(move |k| (*k, t + i as i64 * 10))).collect()
}

/// Deletes the group's committed offsets (the whole group) once the broker lets it: a stopped
/// static member stays in the group until its session times out.
fn delete_group(g: &Gaps) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &g.bootstrap).create().expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = g
            .runtime
            .block_on(admin.delete_groups(&[&g.group], &AdminOptions::new()))
            .expect("deleting the group");
        match answer.first() {
            Some(Ok(_)) => return,
            Some(Err((_, code))) => {
                assert!(Instant::now() < deadline, "the group could not be deleted: {code:?}");
            }
            None => panic!("no answer for the group"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn lost_checkpoints_refuse_to_start_until_reset_says_where() {
    let started = Instant::now();
    let g = Gaps::new();
    let first = g.send(&burst(4, 0));
    let processor = g.start_working(&[]);
    let before = expected(&first);
    let (results, dead) = g.read(Duration::from_secs(45), |r| *r == before);
    assert_eq!(results, before, "the first results");
    assert!(dead.is_empty(), "no dead letters: {dead:?}");
    g.stop(processor);

    // The checkpoints are lost while the processor is stopped; more input arrives meanwhile.
    delete_group(&g);
    let skipped = g.send(&burst(3, 0));

    let (mut refused, _) = g.start(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = refused.0.try_wait().expect("waiting for the processor") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the processor started without its checkpoints\n{}",
            g.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a refusal exits non-zero");
    let log = g.log();
    for part in [
        format!("consumer group {}", g.group),
        format!("{} partitions [0, 1]", g.source),
        "--reset earliest".to_owned(),
        "--reset latest".to_owned(),
    ] {
        assert!(log.contains(&part), "the refusal does not say {part:?}:\n{log}");
    }

    // `--reset latest`: what the partitions hold now is skipped, what comes next counts, and
    // the first results are not written again.
    let processor = g.start_working(&["--reset", "latest"]);
    let last = g.send(&burst(2, 0));
    let mut after = before.clone();
    for (at, n) in expected(&last) {
        *after.entry(at).or_default() += n;
    }
    let (results, dead) = g.read(Duration::from_secs(45), |r| *r == after);
    assert_eq!(results, after, "the first results once, then only the events after the reset");
    assert!(dead.is_empty(), "no dead letters: {dead:?}");
    assert!(skipped.iter().all(|(_, t)| *t < last[0].1), "the skipped events are older");
    g.stop(processor);

    // The choice was committed: the next start needs no --reset.
    let processor = g.start_working(&[]);
    g.stop(processor);
    eprintln!("lost checkpoints: {:?}", started.elapsed());
}

#[test]
fn a_producer_clock_30_s_behind_loses_nothing_across_idle_gaps() {
    let started = Instant::now();
    let g = Gaps::new();
    let processor = g.start_working(&[]);
    // Five bursts from a clock 30 s behind, 3 s apart: each gap is longer than idle_ms plus
    // the second it takes to see a partition caught up, so the idle rule runs in every gap.
    let mut events = Vec::new();
    for i in 0..5 {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        events.extend(g.send(&burst(5, 30_000)));
    }
    let want = expected(&events);
    let (results, dead) = g.read(Duration::from_secs(45), |r| *r == want);
    assert!(dead.is_empty(), "records went to the dead-letter topic: {dead:?}");
    assert_eq!(results, want, "every window counts all its events");
    g.stop(processor);
    eprintln!("clock behind: {:?}", started.elapsed());
}
