//! The warehouse sink as users run it — the real binary, the real broker, a real DuckDB file:
//! every record lands exactly once as a row with its metadata, also when the sink is killed
//! with SIGKILL mid-load; undecodable records go to the dead-letter topic; and the warehouse
//! answers queries through the running sink.

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tributary_test_support::{metric, spawn_logged, wait_http, KillOnDrop};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

struct Scenario {
    dir: PathBuf,
    config: PathBuf,
    topic: String,
    dlq: String,
    table: String,
    sink_port: u16,
}

impl Scenario {
    fn new(buffer_count: usize) -> Self {
        Self::with_sink_settings(buffer_count, "")
    }

    /// A scenario whose `[sink]` also has the `extra` lines.
    fn with_sink_settings(buffer_count: usize, extra: &str) -> Self {
        let s = tributary_test_support::random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-sink-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let topic = format!("test-sink-{s}");
        let dlq = format!("test-sink-dlq-{s}");
        let sink_port = tributary_test_support::free_port();
        let gateway_port = tributary_test_support::free_port();
        let toml = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
[gateway]
listen = "127.0.0.1:{gateway_port}"
[sink]
listen = "127.0.0.1:{sink_port}"
database = "{db}"
group_id = "test-sink-{s}"
topics = ["{topic}"]
tables = {{ "{topic}" = "EVENTS_UNDER_TEST" }}
buffer_count_records = {buffer_count}
buffer_flush_time_secs = 0.5
dlq_topic = "{dlq}"
{extra}
[[topics]]
name = "{topic}"
partitions = 3
key_field = "user_id"
role = "source"
value_format = "json"
[[topics]]
name = "{dlq}"
partitions = 1
require_key = false
role = "dead_letter"
value_format = "json"
"#,
            bootstrap = tributary_test_support::bootstrap(),
            db = dir.join("warehouse.duckdb").display(),
        );
        let config = dir.join("tributary.toml");
        std::fs::write(&config, toml).expect("config");
        tributary_test_support::apply_topics(BIN, &config);
        Self { dir, config, topic, dlq, table: "EVENTS_UNDER_TEST".into(), sink_port }
    }

    fn spawn(&self, what: &str) -> KillOnDrop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{what}.log")))
            .expect("log");
        spawn_logged(BIN, &self.config, &[what], log)
    }

    /// `tributary warehouse sql` as a user runs it; the JSON rows.
    fn sql(&self, query: &str) -> Vec<Vec<Option<String>>> {
        tributary_test_support::warehouse_sql(BIN, &self.config, query)
    }

    fn count(&self, extra: &str) -> i64 {
        let rows = self.sql(&format!("SELECT count(*) FROM raw.{} {extra}", self.table));
        rows[0][0].as_deref().unwrap_or("0").parse().expect("a count")
    }

    /// Writes `n` valid events and `bad` undecodable records straight to Kafka.
    fn produce(&self, n: usize, bad: usize) {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", tributary_test_support::bootstrap())
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        rt.block_on(async {
            let mut sends = Vec::new();
            for i in 0..n + bad {
                let key = format!("user-{}", i % 97);
                let value = if i >= n {
                    b"\x02not json, not framed".to_vec()
                } else {
                    json!({"event_id": format!("direct-{i}"), "timestamp": 1_764_500_000_000i64 + i as i64, "event_type": "page_view", "user_id": key, "payload": {"n": i}}).to_string().into_bytes()
                };
                let mut rec = FutureRecord::<str, [u8]>::to(&self.topic).key(&key).payload(&value);
                loop {
                    match producer.send_result(rec) {
                        Ok(f) => break sends.push(f),
                        Err((_, back)) => {
                            rec = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
            for f in sends {
                f.await.expect("delivery").expect("written");
            }
        });
    }

    fn dead_letters(&self, expected: usize) -> Vec<(String, String)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", tributary_test_support::bootstrap())
            .set("group.id", "unused")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.dlq, 0, Offset::Beginning).expect("partition");
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let h = m.headers().expect("headers");
                let get = |k: &str| {
                    h.iter()
                        .find(|x| x.key == k)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                out.push((get("dlq.reason"), get("dlq.source.offset")));
            }
        }
        out
    }

    fn wait_rows(&self, want: i64) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if metric(self.sink_port, "sink_rows_written_total") as i64 >= want
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn events_from_the_gateway_and_from_kafka_become_exactly_one_row_each() {
    let s = Scenario::new(5_000);
    // Through the gateway ...
    let gateway = s.spawn("gateway");
    let gw = {
        let text = std::fs::read_to_string(&s.config).expect("config");
        let line =
            text.lines().find(|l| l.starts_with("listen = ")).expect("gateway listen").to_owned();
        line.trim_start_matches("listen = ").trim_matches('"').to_owned()
    };
    wait_http(&format!("http://{gw}/api/v1/health"), Duration::from_secs(30));
    let batch: Vec<Value> = (0..500)
        .map(|i| json!({"event_id": format!("gw-{i}"), "timestamp": "2026-11-30T12:00:00Z", "event_type": "click", "user_id": format!("user-{i}"), "payload": {"i": i}}))
        .collect();
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &serde_json::to_string(&batch).expect("json"),
        ])
        .arg(format!("http://{gw}/api/v1/events/{}/batch", s.topic))
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(gateway);
    // ... and straight to Kafka, with undecodable records among them.
    s.produce(20_000, 25);
    let _sink = s.spawn("sink");
    wait_http(&format!("http://127.0.0.1:{}/health", s.sink_port), Duration::from_secs(60));
    s.wait_rows(20_500);
    std::thread::sleep(Duration::from_secs(2));

    // Queries go through the running sink (which holds the file open for writing).
    assert_eq!(s.count(""), 20_500, "every event once");
    let distinct = s.sql(&format!(
        "SELECT count(DISTINCT (RECORD_METADATA->>'partition', RECORD_METADATA->>'offset')) FROM raw.{}",
        s.table
    ));
    assert_eq!(distinct[0][0].as_deref(), Some("20500"), "no (partition, offset) twice");
    let row = s.sql(&format!(
        "SELECT RECORD_CONTENT->>'user_id', RECORD_CONTENT->'payload'->>'i', RECORD_METADATA->>'topic', RECORD_METADATA->>'key', RECORD_METADATA->>'CreateTime' IS NOT NULL FROM raw.{} WHERE RECORD_CONTENT->>'event_id' = 'gw-42'",
        s.table
    ));
    assert_eq!(
        row,
        vec![vec![
            Some("user-42".into()),
            Some("42".into()),
            Some(s.topic.clone()),
            Some("user-42".into()),
            Some("true".into())
        ]],
        "content and metadata of a gateway event"
    );
    // The undecodable records: dead letters with a reason, counted, and not rows.
    let dead = s.dead_letters(25);
    assert_eq!(dead.len(), 25);
    assert!(dead.iter().all(|(reason, _)| reason == "undecodable"), "{dead:?}");
    assert_eq!(metric(s.sink_port, "sink_dead_letters_total") as usize, 25);
    // A statement that is not a query is refused.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(["warehouse", "sql", "DROP TABLE raw._offsets"])
        .output()
        .expect("sql");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigkill_mid_load_neither_loses_nor_repeats_rows() {
    let s = Scenario::new(2_000);
    let n = 150_000;
    s.produce(n, 0);
    let mut rng = rand::rng();
    for round in 0..3 {
        let mut sink = s.spawn("sink");
        // Each run commits a random number of new rows (three runs stay well below n), then dies.
        let target = f64::from(rng.random_range(5_000..40_000u32));
        let deadline = Instant::now() + Duration::from_secs(120);
        while metric(s.sink_port, "sink_rows_written_total") < target {
            assert!(Instant::now() < deadline, "no progress in round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
        sink.0.kill().expect("SIGKILL");
        let _ = sink.0.wait();
    }
    let _sink = s.spawn("sink");
    wait_http(&format!("http://127.0.0.1:{}/health", s.sink_port), Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(180);
    while s.count("") < n as i64 {
        assert!(Instant::now() < deadline, "only {} of {n} rows", s.count(""));
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.count(""), n as i64, "exactly one row per record");
    let distinct = s.sql(&format!(
        "SELECT count(DISTINCT (RECORD_METADATA->>'partition', RECORD_METADATA->>'offset')) FROM raw.{}",
        s.table
    ));
    assert_eq!(distinct[0][0].as_deref(), Some(n.to_string().as_str()));
    let log = std::fs::read_to_string(s.dir.join("sink.log")).unwrap_or_default();
    assert_eq!(log.matches("sink running").count(), 4, "three kills, four runs");
}

/// `sink_lag_records` by partition of `topic`, as the sink reports it now.
fn lag_by_partition(port: u16, topic: &str) -> std::collections::BTreeMap<String, f64> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = Command::new("curl").args(["-fsS", "-m", "2", &url]).output().expect("curl");
    let prefix = format!("sink_lag_records{{topic=\"{topic}\",partition=\"");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (partition, value) = rest.split_once("\"}")?;
            Some((partition.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn lag_reaches_zero_on_a_transactional_topic() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let s = Scenario::new(5_000);
    // Written in one Kafka transaction, as the processor writes its results: a commit marker
    // follows the last record of every partition, one offset the sink never sees as a record.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", tributary_test_support::bootstrap())
        .set(
            "transactional.id",
            format!("test-sink-txn-{}", tributary_test_support::random_suffix()),
        )
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    producer.begin_transaction().expect("begin");
    for i in 0..300 {
        let key = format!("user-{}", i % 97);
        let value = json!({"event_id": format!("txn-{i}"), "timestamp": 1_764_500_000_000i64 + i, "event_type": "page_view", "user_id": key, "payload": {}}).to_string();
        producer.send(BaseRecord::to(&s.topic).key(&key).payload(&value)).expect("queued");
    }
    producer.commit_transaction(Duration::from_secs(30)).expect("commit");
    let _sink = s.spawn("sink");
    s.wait_rows(300);
    assert_eq!(s.count(""), 300);
    // Every row is in the warehouse: the lag of each partition must come to 0, not stay at 1.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = lag_by_partition(s.sink_port, &s.topic);
        if lag.len() == 3 && lag.values().all(|v| *v == 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "sink_lag_records by partition: {lag:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `POST /api/v1/sql` on the running sink, as any HTTP client (or a browser) sends it: the
/// status and the JSON answer (`null` when the answer is not JSON).
fn post_sql(port: u16, content_type: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut headers = vec![format!("content-type: {content_type}")];
    headers.extend(token.map(|t| format!("authorization: Bearer {t}")));
    post_sql_with(port, &headers, body)
}

/// `POST /api/v1/sql` with exactly these `headers`.
fn post_sql_with(port: u16, headers: &[String], body: &str) -> (u16, Value) {
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-m", "30", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"]);
    for h in headers {
        curl.args(["-H", h]);
    }
    curl.args(["--data-binary", body]);
    let out = curl.arg(format!("http://127.0.0.1:{port}/api/v1/sql")).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').expect("a status line");
    (status.trim().parse().expect("a status"), serde_json::from_str(answer).unwrap_or(Value::Null))
}

/// The JSON body of a query.
fn sql_body(query: &str) -> String {
    json!({ "sql": query }).to_string()
}

#[test]
fn the_sql_endpoint_refuses_injections_files_writes_and_cross_site_posts() {
    let s = Scenario::new(100);
    s.produce(50, 0);
    let sink = s.spawn("sink");
    wait_http(&format!("http://127.0.0.1:{}/health", s.sink_port), Duration::from_secs(60));
    s.wait_rows(50);
    let offsets = "SELECT * FROM raw._offsets ORDER BY ALL";
    let before = s.sql(offsets);
    assert!(!before.is_empty(), "the sink recorded its offsets");

    // A web page can POST text/plain to a loopback port with no preflight: refused before any
    // SQL is looked at.
    let injection = "select 1); DELETE FROM raw._offsets; select (1";
    let (status, answer) = post_sql(s.sink_port, "text/plain", injection, None);
    assert_eq!(status, 415, "a text/plain POST: {answer}");
    assert_eq!(answer["error"], "unsupported_media_type", "{answer}");
    assert_eq!(s.sql(offsets), before, "raw._offsets intact after a cross-site POST");
    // The same text as JSON: not exactly one query, so nothing of it runs.
    let (status, answer) = post_sql(s.sink_port, "application/json", &sql_body(injection), None);
    assert_eq!(status, 400, "the injection: {answer}");
    assert_eq!(answer["error"], "invalid_query", "{answer}");
    assert_eq!(s.sql(offsets), before, "raw._offsets intact after the injection");
    // A page that points a name of its own at this machine (DNS rebinding) sends that name.
    let rebound =
        ["host: attacker.example:8084".to_owned(), "content-type: application/json".to_owned()];
    let (status, answer) = post_sql_with(s.sink_port, &rebound, &sql_body("SELECT 1"));
    assert_eq!(status, 403, "a request to a name, without a token: {answer}");
    assert_eq!(answer["error"], "host_not_allowed", "{answer}");

    let copy_target = s.dir.join("copied.csv");
    let attach_target = s.dir.join("attached.duckdb");
    let refused = [
        "SELECT * FROM read_text('/proc/self/environ')".to_owned(),
        "SELECT * FROM read_csv('/etc/passwd')".to_owned(),
        "SELECT * FROM read_text('http://127.0.0.1:9/')".to_owned(),
        format!("COPY raw._offsets TO '{}'", copy_target.display()),
        format!("ATTACH '{}' AS other", attach_target.display()),
        "INSTALL httpfs".to_owned(),
        "LOAD httpfs".to_owned(),
        "SET enable_external_access = true".to_owned(),
        "SET lock_configuration = false".to_owned(),
        "INSERT INTO raw._offsets VALUES ('x', 0, 0)".to_owned(),
        "CREATE TABLE raw.stolen AS SELECT 1".to_owned(),
        "SELECT 1; DELETE FROM raw._offsets".to_owned(),
        "SELECT * FROM query('DELETE FROM raw._offsets')".to_owned(),
    ];
    for query in &refused {
        let (status, answer) = post_sql(s.sink_port, "application/json", &sql_body(query), None);
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"], "invalid_query", "{query}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {answer}");
    }
    assert!(!copy_target.exists() && !attach_target.exists(), "no file written");
    assert_eq!(s.sql(offsets), before, "raw._offsets intact after every refusal");

    // Queries still answer, also through `tributary warehouse sql`, and the sink still loads.
    let (status, answer) = post_sql(
        s.sink_port,
        "application/json",
        &sql_body(&format!("SELECT count(*) AS n FROM raw.{}", s.table)),
        None,
    );
    assert_eq!((status, &answer["rows"]), (200, &json!([["50"]])), "{answer}");
    assert!(!s.sql("DESCRIBE raw._offsets").is_empty(), "DESCRIBE still works");
    s.produce(25, 0);
    s.wait_rows(75);
    assert_eq!(s.count(""), 75, "the sink's writer still writes");

    // With no sink running, `tributary warehouse sql` opens the file itself, as locked down.
    drop(sink);
    assert_eq!(s.count(""), 75, "a query on the file");
    for query in ["SELECT * FROM read_text('/proc/self/environ')", "DELETE FROM raw._offsets"] {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&s.config)
            .args(["warehouse", "sql", query])
            .output()
            .expect("warehouse sql");
        assert_eq!(out.status.code(), Some(2), "{query} on the file");
    }
}

#[test]
fn the_sql_endpoint_caps_rows_interrupts_slow_queries_and_checks_its_token() {
    let token = "0042-token-of-the-test";
    let s = Scenario::with_sink_settings(
        100,
        &format!("sql_max_rows = 20\nsql_timeout_ms = 1000\nsql_token = \"{token}\""),
    );
    let _sink = s.spawn("sink");
    wait_http(&format!("http://127.0.0.1:{}/health", s.sink_port), Duration::from_secs(60));
    let one = sql_body("SELECT 1");
    for wrong in [None, Some("not-the-token")] {
        let (status, answer) = post_sql(s.sink_port, "application/json", &one, wrong);
        assert_eq!(status, 401, "token {wrong:?}: {answer}");
        assert_eq!(answer["error"], "unauthorized", "{answer}");
    }
    let (status, answer) = post_sql(s.sink_port, "application/json", &one, Some(token));
    assert_eq!((status, &answer["rows"]), (200, &json!([["1"]])), "{answer}");
    // With the token, a name is fine (a proxy, a DNS name in production).
    let named = [
        "host: sink.internal:8084".to_owned(),
        "content-type: application/json".to_owned(),
        format!("authorization: Bearer {token}"),
    ];
    let (status, answer) = post_sql_with(s.sink_port, &named, &one);
    assert_eq!((status, &answer["rows"]), (200, &json!([["1"]])), "{answer}");

    // Over the row cap: the first 20 rows, flagged as truncated.
    let many = sql_body("SELECT * FROM range(1000) ORDER BY ALL");
    let (status, answer) = post_sql(s.sink_port, "application/json", &many, Some(token));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"].as_array().map(Vec::len), Some(20), "{answer}");
    assert_eq!(answer["rows"][19], json!(["19"]));
    assert_eq!(answer["truncated"], true, "{answer}");
    let exact = sql_body("SELECT * FROM range(20)");
    let (_, answer) = post_sql(s.sink_port, "application/json", &exact, Some(token));
    assert_eq!(answer["truncated"], false, "{answer}");

    // Past the timeout: interrupted, and a clear error soon after.
    let slow = sql_body("SELECT sum(hash(i)) FROM range(1000000000000) t(i)");
    let started = Instant::now();
    let (status, answer) = post_sql(s.sink_port, "application/json", &slow, Some(token));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"], "query_timeout", "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered in {:?}", started.elapsed());

    // `tributary warehouse sql` sends the configured token, and the sink still answers.
    assert_eq!(s.sql("SELECT 42"), vec![vec![Some("42".to_owned())]]);
}
