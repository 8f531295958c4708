//! A poison window against a real broker: one user sends 100,000 distinct event types in one
//! window (produced straight to the input topic), a few ordinary users send a handful. The
//! processor never rewinds; the poison user's 1-minute and 5-minute results are written with
//! at most `max_categories` categories and the rest counted in `other_count` — or, when even
//! that result is too large for Kafka, written to the dead-letter topic as a summary with
//! reason `result_too_large` — and every other user's results are exact.
//!
//! Windows are 2 s wide (`window_ms = 2000`, five panes per sliding window) so that the test
//! takes seconds, not minutes.

use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tributary_core::{aggregate_topic, murmur2_partition};
use tributary_test_support::{metric, spawn_logged, wait_http, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const PANE: i64 = 2_000;
const PARTITIONS: i32 = 3;
const POISON: &str = "user-poison";
/// Distinct event types of the poison user.
const DISTINCT: usize = 100_000;
/// "click" events of the poison user, besides the distinct ones.
const POISON_CLICKS: u64 = 20;
const USERS: u64 = 6;

struct Scenario {
    bootstrap: String,
    dir: PathBuf,
    config: PathBuf,
    source: String,
    dlq: String,
    outputs: [String; 2],
    _registry: KillOnDrop,
}

impl Scenario {
    /// Topics, a registry and a config whose processor keeps at most `max_categories`
    /// (`None`: the default, which the config then does not mention).
    fn new(max_categories: Option<usize>) -> Self {
        let bootstrap = tributary_test_support::bootstrap();
        let s = tributary_test_support::random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-poison-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let source = format!("events.{s}.clicks");
        let dlq = format!("test-dlq-{s}");
        let outputs = ["1m", "5m"].map(|w| aggregate_topic(&source, w));
        let registry_port = tributary_test_support::free_port();
        let max_categories =
            max_categories.map(|n| format!("max_categories = {n}\n")).unwrap_or_default();
        let mut toml = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
[registry]
listen = "127.0.0.1:{registry_port}"
topic = "_schemas-{s}"
[processor]
group_id = "test-poison-{s}"
commit_interval_ms = 100
transaction_timeout_ms = 5000
window_ms = {PANE}
grace_ms = 0
out_of_orderness_ms = 0
idle_ms = 1000
{max_categories}dlq_topic = "{dlq}"
late_topic = "{dlq}"
[processor.registry]
url = "http://127.0.0.1:{registry_port}"
[[processor.sources]]
topic = "{source}"
count_by = "event_type"
"#
        );
        let topic = |name: &str, key: &str, role: &str, format: &str| {
            format!("[[topics]]\nname = \"{name}\"\npartitions = {PARTITIONS}\n{key}\nrole = \"{role}\"\nvalue_format = \"{format}\"\n")
        };
        toml += &topic(&source, "key_field = \"user_id\"", "source", "json");
        for o in &outputs {
            toml += &topic(o, "key_field = \"key\"", "output", "avro");
        }
        toml += &topic(&dlq, "require_key = false", "dead_letter", "json");
        let config = dir.join("tributary.toml");
        std::fs::write(&config, toml).expect("config file");
        tributary_test_support::apply_topics(BIN, &config);
        let log = std::fs::File::create(dir.join("registry.log")).expect("log file");
        let registry = spawn_logged(BIN, &config, &["registry"], log);
        wait_http(&format!("http://127.0.0.1:{registry_port}/subjects"), Duration::from_secs(30));
        Self { bootstrap, dir, config, source, dlq, outputs, _registry: registry }
    }

    /// Starts the processor; returns it and its metrics port.
    fn start(&self) -> (KillOnDrop, u16) {
        let port = tributary_test_support::free_port();
        let log = std::fs::File::create(self.dir.join("processor.log")).expect("log file");
        let listen = format!("127.0.0.1:{port}");
        let child = spawn_logged(BIN, &self.config, &["processor", "--listen", &listen], log);
        wait_http(&format!("http://127.0.0.1:{port}/metrics"), Duration::from_secs(30));
        (child, port)
    }

    /// The processor's warnings and errors, last 30.
    fn logs(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("processor.log")).unwrap_or_default();
        let lines: Vec<&str> =
            text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn event(id: u64, t: i64, kind: &str, user: &str) -> Vec<u8> {
    json!({"event_id": format!("e-{id}"), "timestamp": t, "event_type": kind, "user_id": user, "payload": {}})
        .to_string()
        .into_bytes()
}

/// The poison user's i-th distinct event type: 33 bytes, so 100,000 of them take several MB.
fn poison_type(i: usize) -> String {
    format!("poison-type-{i:06}-xxxxxxxxxxxxxxx")
}

fn user(i: u64) -> String {
    format!("user-{i}")
}

/// Writes `records` (key, value) in order and waits until every one is acknowledged.
fn write(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut sends = Vec::with_capacity(records.len());
        for (key, value) in records {
            let fr = FutureRecord::<str, [u8]>::to(topic).key(key).payload(value);
            sends.push(tributary_test_support::enqueue(producer, fr).await);
        }
        for f in sends {
            f.await.expect("delivery").expect("record written");
        }
    });
}

/// Writes the data set into one pane `[t0, t0 + PANE)`, then on each partition a record six
/// panes later, which closes that pane and every sliding window over it by event time.
/// Returns the ordinary users' expected (count, counts).
fn produce(s: &Scenario, t0: i64) -> BTreeMap<String, (u64, BTreeMap<String, u64>)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &s.bootstrap)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let mut id = 0u64;
    let mut records = Vec::new();
    let mut expected = BTreeMap::new();
    for u in 0..USERS {
        let (clicks, views) = (u + 1, 2);
        for kind in ["click"; 8].iter().take(clicks as usize).chain(&["view"; 2]) {
            id += 1;
            records.push((user(u), event(id, t0 + 100 + id as i64 % 500, kind, &user(u))));
        }
        let counts = BTreeMap::from([("click".to_owned(), clicks), ("view".to_owned(), views)]);
        expected.insert(user(u), (clicks + views, counts));
    }
    for i in 0..DISTINCT {
        id += 1;
        records.push((POISON.to_owned(), event(id, t0 + 500, &poison_type(i), POISON)));
        if (i as u64) < POISON_CLICKS {
            id += 1;
            records.push((POISON.to_owned(), event(id, t0 + 600, "click", POISON)));
        }
    }
    write(&producer, &s.source, &records);
    // One closer per partition, after everything else there.
    let mut closers = Vec::new();
    for n in 0.. {
        let key = format!("closer-{n}");
        let p = murmur2_partition(key.as_bytes(), PARTITIONS).expect("partitions > 0");
        if closers.iter().all(|(_, q, _)| *q != p) {
            id += 1;
            closers.push((key.clone(), p, event(id, t0 + 6 * PANE + 1, "click", &key)));
        }
        if closers.len() == PARTITIONS as usize {
            break;
        }
    }
    let closers: Vec<(String, Vec<u8>)> = closers.into_iter().map(|(k, _, v)| (k, v)).collect();
    write(&producer, &s.source, &closers);
    expected
}

/// One result as read back: its fields decoded from Avro.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    window: String,
    start: i64,
    count: u64,
    counts: BTreeMap<String, u64>,
    other_count: u64,
    other_categories: u64,
}

/// Results (topic, key) → rows and dead letters (reason, JSON value) a `read_committed` reader
/// sees, read until `expected` of them are there and 3 s longer (so that duplicates show).
type Seen = (BTreeMap<String, Vec<Row>>, Vec<(String, Value)>);

fn read(s: &Scenario, port: u16, expected: usize) -> Seen {
    let topics: Vec<(&str, i32)> =
        s.outputs.iter().chain([&s.dlq]).map(|t| (t.as_str(), PARTITIONS)).collect();
    let consumer = tributary_test_support::read_committed(&s.bootstrap, &topics);
    let schema = apache_avro::Schema::parse_str(include_str!("../../../schemas/aggregate.avsc"))
        .expect("aggregate schema");
    let (mut rows, mut dead): Seen = (BTreeMap::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut complete_at: Option<Instant> = None;
    while complete_at.is_none_or(|at| at.elapsed() < Duration::from_secs(3)) {
        let n = rows.values().map(Vec::len).sum::<usize>() + dead.len();
        assert!(
            Instant::now() < deadline,
            "only {n} of {expected} results and dead letters after 120 s; rewinds so far: {}\n{}",
            metric(port, "processor_rewinds_total"),
            s.logs()
        );
        if complete_at.is_none() && n >= expected {
            complete_at = Some(Instant::now());
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("reading results");
        let bytes = m.payload().unwrap_or_default();
        if m.topic() == s.dlq {
            let headers = m.headers().expect("dead letters have headers");
            let reason = headers
                .iter()
                .find(|h| h.key == "dlq.reason")
                .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                .expect("a dlq.reason header");
            dead.push((reason, serde_json::from_slice(bytes).expect("a JSON summary")));
            continue;
        }
        let v = tributary_schema::codec::decode_to_json(&schema, &bytes[5..]).expect("aggregate");
        let key = v["key"].as_str().expect("key").to_owned();
        if key.starts_with("closer-") {
            continue;
        }
        let ms = |f: &str| {
            chrono::DateTime::parse_from_rfc3339(v[f].as_str().expect("time"))
                .expect("RFC 3339")
                .timestamp_millis()
        };
        let counts = v["counts"]
            .as_object()
            .expect("counts")
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().expect("a count")))
            .collect();
        rows.entry(key).or_default().push(Row {
            window: v["window"].as_str().expect("window").to_owned(),
            start: ms("window_start"),
            count: v["count"].as_u64().expect("count"),
            counts,
            // Absent (0) in results of a processor without the cap.
            other_count: v["other_count"].as_u64().unwrap_or(0),
            other_categories: v["other_categories"].as_u64().unwrap_or(0),
        });
    }
    (rows, dead)
}

/// The tumbling window and the five sliding windows over pane `t0`, each holding `row`.
fn windows(t0: i64, count: u64, counts: &BTreeMap<String, u64>, other: (u64, u64)) -> Vec<Row> {
    let row = |window: &str, start: i64| Row {
        window: window.to_owned(),
        start,
        count,
        counts: counts.clone(),
        other_count: other.0,
        other_categories: other.1,
    };
    let mut rows = vec![row("1m", t0)];
    rows.extend((0..5).map(|i| row("5m", t0 - 4 * PANE + i * PANE)));
    rows
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| (r.window.clone(), r.start));
    rows
}

/// Runs the data set with `max_categories` and checks what every user relies on: every
/// ordinary user's results exact, no rewind. Returns the pane's start and what the poison
/// user got: results and dead letters.
fn poison_run(max_categories: Option<usize>) -> (i64, Vec<Row>, Vec<(String, Value)>) {
    let started = Instant::now();
    let s = Scenario::new(max_categories);
    // A pane that is complete in the past, well within the processor's max_past_ms.
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = (now - 60_000).div_euclid(PANE) * PANE;
    let expected = produce(&s, t0);
    let (_processor, port) = s.start();
    // Six windows per user: the tumbling one and five sliding ones over the pane.
    let (mut rows, dead) = read(&s, port, (expected.len() + 1) * 6);
    for (u, (count, counts)) in &expected {
        let got = sorted(rows.remove(u).unwrap_or_default());
        assert_eq!(got, windows(t0, *count, counts, (0, 0)), "results of {u}\n{}", s.logs());
    }
    let poison = sorted(rows.remove(POISON).unwrap_or_default());
    assert!(rows.is_empty(), "results of unknown keys: {:?}", rows.keys());
    let rewinds = metric(port, "processor_rewinds_total");
    assert_eq!(rewinds, 0.0, "the processor rewound\n{}", s.logs());
    eprintln!("poison run with max_categories {max_categories:?}: {:?}", started.elapsed());
    (t0, poison, dead)
}

#[test]
fn a_poison_window_is_capped_and_nothing_rewinds() {
    let (t0, poison, dead) = poison_run(None);
    assert!(dead.is_empty(), "no dead letters: {dead:?}");
    // The default cap is 1000 categories; ties are broken by name: "click" (20) first, then
    // the 999 smallest poison types; the rest is counted in other_count.
    let mut counts: BTreeMap<String, u64> = (0..999).map(|i| (poison_type(i), 1)).collect();
    counts.insert("click".to_owned(), POISON_CLICKS);
    let other = (DISTINCT as u64 - 999, DISTINCT as u64 + 1 - 1_000);
    let want = windows(t0, DISTINCT as u64 + POISON_CLICKS, &counts, other);
    assert!(poison == want, "the poison user's results: {} of 6 as expected", {
        poison.iter().filter(|r| want.contains(r)).count()
    });
    for r in &poison {
        assert_eq!(r.counts.values().sum::<u64>() + r.other_count, r.count, "nothing lost");
    }
}

#[test]
fn a_result_too_large_even_when_capped_goes_to_the_dead_letter_topic() {
    let (t0, poison, dead) = poison_run(Some(200_000));
    assert!(poison.is_empty(), "no oversized result written: {poison:?}");
    assert_eq!(dead.len(), 6, "one summary per window: {dead:?}");
    let mut windows: Vec<(String, String)> = Vec::new();
    for (reason, summary) in &dead {
        assert_eq!(reason, "result_too_large");
        assert_eq!(summary["key"], POISON);
        assert_eq!(summary["count"], DISTINCT as u64 + POISON_CLICKS);
        assert_eq!(summary["categories"], DISTINCT as u64 + 1);
        assert!(summary["encoded_bytes"].as_u64().expect("encoded_bytes") > 1_000_000);
        let w = summary["window"].as_str().expect("window").to_owned();
        windows.push((w, summary["window_start"].as_str().expect("start").to_owned()));
    }
    windows.sort();
    let start = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("a time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut want = vec![("1m".to_owned(), start(t0))];
    want.extend((0..5).map(|i| ("5m".to_owned(), start(t0 - 4 * PANE + i * PANE))));
    assert_eq!(windows, want, "the summaries name the six windows");
}
