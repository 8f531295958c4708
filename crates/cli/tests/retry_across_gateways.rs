//! A client retry that reaches another gateway, as it does behind a load balancer with no
//! stickiness: the real binaries (two gateways, the processor, the sink) against the real
//! broker. Every event is written through gateway A and retried, with the same `event_id`,
//! through gateway B, which has not seen it and writes it again. The raw topic and the
//! warehouse's raw table hold both copies; the processor's window results and the warehouse's
//! deduplicated view count each event once.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tributary_core::{aggregate_topic, murmur2_partition};
use tributary_test_support::{free_port, metric, spawn_logged, wait_http, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
/// Events written (and each retried once).
const N: usize = 40;
const USERS: usize = 8;
const PARTITIONS: i32 = 3;
/// Small panes, so that the test takes seconds: `1m` results are 2-second windows, `5m`
/// results 10-second ones.
const PANE_MS: i64 = 2_000;
const SLIDING_PANES: i64 = 5;
const GRACE_MS: i64 = 1_000;
const OUT_OF_ORDERNESS_MS: i64 = 1_000;

struct Scenario {
    dir: PathBuf,
    config: PathBuf,
    topic: String,
    table: String,
    sink_port: u16,
    processor_port: u16,
}

impl Scenario {
    fn new() -> Self {
        let s = tributary_test_support::random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-retry-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let topic = format!("events.{s}.clicks");
        let dlq = format!("test-dlq-{s}");
        let (sink_port, processor_port) = (free_port(), free_port());
        let table = "CLICKS_UNDER_TEST".to_owned();
        // The idle rule is kept out of the way (idle_ms of a minute): the windows close
        // because later events move the watermark, whatever the wall clock does.
        let mut toml = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
[processor]
group_id = "test-retry-{s}"
commit_interval_ms = 100
transaction_timeout_ms = 5000
window_ms = {PANE_MS}
sliding_panes = {SLIDING_PANES}
grace_ms = {GRACE_MS}
out_of_orderness_ms = {OUT_OF_ORDERNESS_MS}
idle_ms = 60000
dlq_topic = "{dlq}"
late_topic = "{dlq}"
[[processor.sources]]
topic = "{topic}"
count_by = "event_type"
[sink]
listen = "127.0.0.1:{sink_port}"
database = "{db}"
group_id = "test-retry-sink-{s}"
topics = ["{topic}"]
tables = {{ "{topic}" = "{table}" }}
buffer_flush_time_secs = 0.5
dlq_topic = "{dlq}"
"#,
            bootstrap = tributary_test_support::bootstrap(),
            db = dir.join("warehouse.duckdb").display(),
        );
        let entry = |name: &str, partitions: i32, key: &str, role: &str| {
            format!("[[topics]]\nname = \"{name}\"\npartitions = {partitions}\n{key}\nrole = \"{role}\"\nvalue_format = \"json\"\n")
        };
        toml += &entry(&topic, PARTITIONS, "key_field = \"user_id\"", "source");
        for w in ["1m", "5m"] {
            toml +=
                &entry(&aggregate_topic(&topic, w), PARTITIONS, "key_field = \"key\"", "output");
        }
        toml += &entry(&dlq, 1, "require_key = false", "dead_letter");
        let config = dir.join("tributary.toml");
        std::fs::write(&config, toml).expect("config file");
        tributary_test_support::apply_topics(BIN, &config);
        Self { dir, config, topic, table, sink_port, processor_port }
    }

    /// Runs `tributary <args>` in the background, its log in the scenario's folder.
    fn spawn(&self, name: &str, args: &[&str]) -> KillOnDrop {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        spawn_logged(BIN, &self.config, args, log)
    }

    /// A gateway on a free port; its base URL.
    fn gateway(&self, name: &str) -> (KillOnDrop, String) {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = self.spawn(name, &["gateway", "--listen", &addr]);
        wait_http(&format!("http://{addr}/api/v1/health"), Duration::from_secs(30));
        (child, format!("http://{addr}"))
    }

    /// `tributary warehouse sql --json` as a user runs it; the single value of the answer.
    fn sql_count(&self, query: &str) -> i64 {
        let rows = tributary_test_support::warehouse_sql(BIN, &self.config, query);
        let value = rows.first().and_then(|r| r.first()).cloned().flatten();
        value.and_then(|n| n.parse().ok()).expect("a count")
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["processor", "sink", "gateway-a", "gateway-b"] {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            all += &format!(
                "--- {name} ---\n{}\n",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        all
    }
}

fn user(i: usize) -> String {
    format!("user-{}", i % USERS)
}

/// One POST of `event` to `base`; the status code.
async fn post(client: &reqwest::Client, base: &str, topic: &str, event: &Value) -> u16 {
    let url = format!("{base}/api/v1/events/{topic}");
    let resp = client.post(url).json(event).send().await.expect("the gateway answers");
    resp.status().as_u16()
}

/// For each partition of the topic, a key outside the test's users that lands there.
fn closer_keys() -> Vec<String> {
    let mut keys = BTreeMap::new();
    for i in 0.. {
        let k = format!("closer-{i}");
        let p = murmur2_partition(k.as_bytes(), PARTITIONS).expect("partitions > 0");
        keys.entry(p).or_insert(k);
        if keys.len() == PARTITIONS as usize {
            break;
        }
    }
    keys.into_values().collect()
}

/// Window results of the test's users a `read_committed` reader sees on `topic`:
/// (window start, key) → (count, counts per category), once `want` are there.
fn results(topic: &str, want: usize, s: &Scenario) -> BTreeMap<(String, String), (u64, Value)> {
    let consumer = tributary_test_support::read_committed(
        &tributary_test_support::bootstrap(),
        &[(topic, PARTITIONS)],
    );
    let mut out = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want {
        assert!(
            Instant::now() < deadline,
            "{topic}: {} of {want} results after 60 s: {out:?}\n{}",
            out.len(),
            s.logs()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("reading results");
        let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON");
        let key = v["key"].as_str().expect("a key").to_owned();
        if !key.starts_with("user-") {
            continue;
        }
        let start = v["window_start"].as_str().expect("a start").to_owned();
        let count = v["count"].as_u64().expect("a count");
        let again = out.insert((start, key), (count, v["counts"].clone()));
        assert!(again.is_none(), "{topic}: a window emitted twice: {v}");
    }
    out
}

#[test]
fn a_retry_through_another_gateway_is_counted_once() {
    let started = Instant::now();
    let s = Scenario::new();
    let processor_listen = format!("127.0.0.1:{}", s.processor_port);
    let _processor = s.spawn("processor", &["processor", "--listen", &processor_listen]);
    let _sink = s.spawn("sink", &["sink"]);
    let (_a, gateway_a) = s.gateway("gateway-a");
    let (_b, gateway_b) = s.gateway("gateway-b");
    wait_http(&format!("http://{processor_listen}/health"), Duration::from_secs(30));

    // Every event has the same event time: one pane, so the retries are on time for it
    // whatever the order of arrival, and the expected windows are exact.
    let t0 = chrono::Utc::now().timestamp_millis();
    let events: Vec<Value> = (0..N)
        .map(|i| {
            let kind = if i % 3 == 0 { "click" } else { "view" };
            json!({"event_id": format!("retry-{i}"), "timestamp": t0, "event_type": kind, "user_id": user(i), "payload": {"i": i}})
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = reqwest::Client::new();
    rt.block_on(async {
        for e in &events {
            assert_eq!(post(&client, &gateway_a, &s.topic, e).await, 201, "written through A");
        }
        // The client's answers were lost: it retries everything through B, which has not
        // seen these events, so it writes them again and answers 201.
        for e in &events {
            assert_eq!(post(&client, &gateway_b, &s.topic, e).await, 201, "written through B");
        }
        // Later events on every partition move the watermarks past the last sliding window
        // of the pane (its end plus grace plus out-of-orderness), which closes all of them.
        let pane = t0.div_euclid(PANE_MS) * PANE_MS;
        let later = pane + (SLIDING_PANES + 1) * PANE_MS + GRACE_MS + OUT_OF_ORDERNESS_MS;
        for (i, key) in closer_keys().into_iter().enumerate() {
            let e = json!({"event_id": format!("closer-{i}"), "timestamp": later, "event_type": "view", "user_id": key, "payload": {}});
            assert_eq!(post(&client, &gateway_a, &s.topic, &e).await, 201, "closer written");
        }
    });

    // The raw topic holds both copies of each event (and the closers).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tributary_test_support::bootstrap())
        .create()
        .expect("consumer");
    let raw: i64 = (0..PARTITIONS)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&s.topic, p, Duration::from_secs(10))
                .expect("watermarks");
            high - low
        })
        .sum();
    assert_eq!(raw, 2 * N as i64 + i64::from(PARTITIONS), "raw topic: every write is kept");

    // Each user's window results count each of its events once.
    let mut expected: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for e in &events {
        let (n, kinds) =
            expected.entry(e["user_id"].as_str().expect("user").to_owned()).or_default();
        *n += 1;
        *kinds.entry(e["event_type"].as_str().expect("type").to_owned()).or_default() += 1;
    }
    for (window, windows_per_key) in [("1m", 1), ("5m", SLIDING_PANES as usize)] {
        let topic = aggregate_topic(&s.topic, window);
        let got = results(&topic, USERS * windows_per_key, &s);
        for ((start, key), (count, counts)) in &got {
            let (n, kinds) = &expected[key];
            assert_eq!(count, n, "{window} window at {start} of {key}: each event counted once");
            assert_eq!(counts, &json!(kinds), "{window} window at {start} of {key}: per type");
        }
        assert_eq!(got.len(), USERS * windows_per_key, "{window}: one result per window and key");
    }
    let dropped = metric(s.processor_port, "processor_duplicates_total");
    assert_eq!(dropped, N as f64, "every retry is counted as a dropped duplicate");
    assert_eq!(metric(s.processor_port, "processor_late_records_total"), 0.0, "no retry was late");

    // The warehouse: the raw table keeps every record; the deduplicated view one per event.
    let rows = 2 * N as i64 + i64::from(PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (metric(s.sink_port, "sink_rows_written_total") as i64) < rows {
        assert!(Instant::now() < deadline, "the sink did not load {rows} rows\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = &s.table;
    assert_eq!(s.sql_count(&format!("SELECT count(*) FROM raw.{table}")), rows);
    assert_eq!(
        s.sql_count(&format!("SELECT count(*) FROM dedup.{table}")),
        N as i64 + i64::from(PARTITIONS),
        "one row per event_id"
    );
    assert_eq!(
        s.sql_count(&format!(
            "SELECT count(*) FROM dedup.{table} d WHERE CAST(d.RECORD_METADATA->>'offset' AS BIGINT) \
             > (SELECT min(CAST(r.RECORD_METADATA->>'offset' AS BIGINT)) FROM raw.{table} r \
                WHERE r.RECORD_CONTENT->>'event_id' = d.RECORD_CONTENT->>'event_id')"
        )),
        0,
        "the view keeps each event's first copy"
    );
    eprintln!("took {:?}", started.elapsed());
}
