//! The stream processor as users run it — the real binary against the real broker, with the
//! real registry — on a fixed data set: out-of-order, late, clock-skewed and malformed records
//! over many keys. What a `read_committed` consumer sees on the result topics and the
//! dead-letter topic must equal the expected results exactly: once without faults, once with
//! the processor killed with SIGKILL at random moments and restarted, once with other instances
//! joining mid-run, one leaving cleanly and one being killed, and once with the broker killed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tributary_core::{aggregate_topic, murmur2_partition};
use tributary_test_support::{metric, spawn_logged, wait_http, KillOnDrop, LocalBroker};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const MIN: i64 = 60_000;
/// 2026-01-01T00:00:00Z: event times are fixed, so the expected results are too.
const T0: i64 = 1_767_225_600_000;
/// Records in the data set (valid and bad).
const STEPS: i64 = 120_000;
const IOT_PARTITIONS: i32 = 4;
const CLICK_PARTITIONS: i32 = 3;
const DEVICES: usize = 40;
const USERS: usize = 30;

fn device(i: usize) -> String {
    format!("d-{i:03}")
}

fn user(i: usize) -> String {
    format!("u-{i:03}")
}

fn home(key: &str, partitions: i32) -> i32 {
    murmur2_partition(key.as_bytes(), partitions).expect("partitions > 0")
}

/// One window result, as compared: window, start, key, count, sum, min, max, per-category
/// counts, attributes.
type Row = (
    String,
    i64,
    String,
    u64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    BTreeMap<String, u64>,
    BTreeMap<String, String>,
);

/// A dead letter: (source topic, partition, offset) and (reason, original value).
type Dead = ((String, i32, i64), (String, Vec<u8>));

struct Scenario {
    bootstrap: String,
    dir: PathBuf,
    config: PathBuf,
    iot: String,
    clicks: String,
    dlq: String,
    outputs: Vec<String>,
    _registry: KillOnDrop,
}

fn run(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("running tributary");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

impl Scenario {
    fn new() -> Self {
        Self::on(tributary_test_support::bootstrap())
    }

    /// A scenario on the broker at `bootstrap`.
    fn on(bootstrap: String) -> Self {
        let s = tributary_test_support::random_suffix();
        let dir = std::env::temp_dir().join(format!("tributary-processor-{s}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let iot = format!("events.{s}.iot");
        let clicks = format!("events.{s}.clicks");
        let dlq = format!("test-dlq-{s}");
        let (devices, users) = (format!("test-ref-devices-{s}"), format!("test-ref-users-{s}"));
        let outputs: Vec<String> = [&iot, &clicks]
            .iter()
            .flat_map(|t| ["1m", "5m"].map(|w| aggregate_topic(t, w)))
            .collect();
        let registry_port = tributary_test_support::free_port();
        let mut toml = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
[kafka.extra]
"session.timeout.ms" = "6000"
[registry]
listen = "127.0.0.1:{registry_port}"
topic = "_schemas-{s}"
[processor]
group_id = "test-processor-{s}"
commit_interval_ms = 100
transaction_timeout_ms = 5000
idle_ms = 1500
dlq_topic = "{dlq}"
late_topic = "{dlq}"
[processor.registry]
url = "http://127.0.0.1:{registry_port}"
[[processor.sources]]
topic = "{iot}"
measure = "payload.value"
reference = "{devices}"
[[processor.sources]]
topic = "{clicks}"
count_by = "event_type"
reference = "{users}"
"#
        );
        let topic = |name: &str,
                     partitions: i32,
                     key: Option<&str>,
                     role: &str,
                     format: &str,
                     compact: bool| {
            let key = key
                .map(|k| format!("key_field = \"{k}\"\n"))
                .unwrap_or_else(|| "require_key = false\n".into());
            // The data set's timestamps are in January 2026: with the broker's default
            // retention (7 days by record time) its segments would be deleted mid-test.
            let configs = if compact {
                "configs = { \"cleanup.policy\" = \"compact\" }\n"
            } else {
                "configs = { \"retention.ms\" = \"-1\" }\n"
            };
            format!("[[topics]]\nname = \"{name}\"\npartitions = {partitions}\n{key}role = \"{role}\"\nvalue_format = \"{format}\"\n{configs}")
        };
        toml += &topic(&iot, IOT_PARTITIONS, Some("device_id"), "source", "json", false);
        toml += &topic(&clicks, CLICK_PARTITIONS, Some("user_id"), "source", "json", false);
        for (o, p) in
            outputs.iter().zip([IOT_PARTITIONS, IOT_PARTITIONS, CLICK_PARTITIONS, CLICK_PARTITIONS])
        {
            toml += &topic(o, p, Some("key"), "output", "avro", false);
        }
        toml += &topic(&dlq, 2, None, "dead_letter", "json", false);
        toml += &topic(&devices, 2, Some("device_id"), "reference", "json", true);
        toml += &topic(&users, 2, Some("user_id"), "reference", "json", true);
        let config = dir.join("tributary.toml");
        std::fs::write(&config, toml).expect("config file");
        let (code, out) = run(&config, &["topics", "apply"]);
        assert_eq!(code, 0, "topics apply: {out}");
        let log = std::fs::File::create(dir.join("registry.log")).expect("log file");
        let registry = spawn_logged(BIN, &config, &["registry"], log);
        wait_http(&format!("http://127.0.0.1:{registry_port}/subjects"), Duration::from_secs(30));
        let scenario =
            Self { bootstrap, dir, config, iot, clicks, dlq, outputs, _registry: registry };
        scenario.write_reference_data(&devices, &users);
        scenario
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .create()
            .expect("producer")
    }

    fn write_reference_data(&self, devices: &str, users: &str) {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let producer = self.producer();
        // Most keys have reference data; a few do not, and their results carry none.
        let mut rows: Vec<(&str, String, String)> = Vec::new();
        for i in 0..DEVICES - 5 {
            rows.push((
                devices,
                device(i),
                json!({"site": format!("site-{}", i % 3), "floor": i % 4}).to_string(),
            ));
        }
        for i in 0..USERS - 4 {
            rows.push((
                users,
                user(i),
                json!({"tier": if i % 2 == 0 { "gold" } else { "basic" }}).to_string(),
            ));
        }
        rt.block_on(async {
            for (t, k, v) in &rows {
                producer
                    .send(FutureRecord::to(t).key(k).payload(v), Duration::from_secs(10))
                    .await
                    .expect("reference data written");
            }
        });
    }

    /// Starts instance `instance`; returns it and its metrics port.
    fn start(&self, instance: u32) -> (KillOnDrop, u16) {
        let port = tributary_test_support::free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("processor-{instance}.log")))
            .expect("log file");
        let (instance, listen) = (instance.to_string(), format!("127.0.0.1:{port}"));
        let args = ["processor", "--instance", &instance, "--listen", &listen];
        (spawn_logged(BIN, &self.config, &args, log), port)
    }

    /// The informational lines of instance `i` (assignments, rewinds), last 40.
    fn info(&self, i: u32) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("processor-{i}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(" INFO ")).collect();
        format!("--- processor-{i} ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for i in 0..3 {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(format!("processor-{i}.log"))) {
                let lines: Vec<&str> =
                    text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
                all += &format!(
                    "--- processor-{i} warnings ---\n{}\n",
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
        all
    }
}

/// What the data set should produce.
struct Expected {
    rows: Vec<(String, Row)>,
    /// (source topic, partition, offset) → (reason, original value).
    dead: BTreeMap<(String, i32, i64), (String, Vec<u8>)>,
}

struct Record {
    topic: String,
    partition: i32,
    key: Option<String>,
    value: Vec<u8>,
    ts: i64,
    /// `None` when it counts in windows, else the dead-letter reason.
    reason: Option<&'static str>,
    /// (key, event time, measure, category) of a record that counts.
    counts: Option<(String, i64, Option<f64>, Option<String>)>,
}

fn event(id: u64, t: i64, kind: &str, key_field: &str, key: Option<&str>, payload: Value) -> Value {
    let mut e = json!({"event_id": format!("e-{id}"), "timestamp": t, "event_type": kind, "payload": payload});
    if let Some(k) = key {
        e[key_field] = json!(k);
    }
    e
}

/// The fixed data set. Valid records move forward in event time with up to 2 s of disorder
/// (the processor allows 5 s), so none of them is late; late records are 200 s behind, so every
/// one is. That is what makes the expected windows computable by plain grouping.
fn data_set(s: &Scenario) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    let kinds = ["view", "view", "click", "buy"];
    for i in 0..STEPS {
        let base = T0 + i * 6;
        let t = base - rng.random_range(0..2_000);
        let ts = base + 300;
        let iot = rng.random_bool(0.6);
        let (topic, parts, key_field) = if iot {
            (&s.iot, IOT_PARTITIONS, "device_id")
        } else {
            (&s.clicks, CLICK_PARTITIONS, "user_id")
        };
        let key = if iot {
            device(rng.random_range(0..DEVICES))
        } else {
            user(rng.random_range(0..USERS))
        };
        let value = f64::from(rng.random_range(0..80u32)) * 0.5;
        let kind = if iot { "temperature" } else { kinds[rng.random_range(0..kinds.len())] };
        let payload = if iot { json!({"value": value}) } else { json!({"page": "/p"}) };
        let good = |t: i64| event(i as u64, t, kind, key_field, Some(&key), payload.clone());
        let valid = |t: i64, reason: Option<&'static str>| Record {
            topic: topic.clone(),
            partition: home(&key, parts),
            key: Some(key.clone()),
            value: good(t).to_string().into_bytes(),
            ts,
            reason,
            counts: reason
                .is_none()
                .then(|| (key.clone(), t, iot.then_some(value), (!iot).then(|| kind.to_owned()))),
        };
        let bad = i > STEPS / 10 && rng.random_bool(0.01);
        if !bad {
            out.push(valid(t, None));
            continue;
        }
        let with = |partition: i32, key: Option<&str>, value: Vec<u8>, reason| Record {
            topic: topic.clone(),
            partition,
            key: key.map(str::to_owned),
            value,
            ts,
            reason: Some(reason),
            counts: None,
        };
        let rec = match rng.random_range(0..9) {
            0 => valid(base - 200_000, Some("late")),
            1 => valid(base - 2 * 3_600_000, Some("timestamp_out_of_bounds")),
            2 => valid(base + 3_600_000, Some("timestamp_out_of_bounds")),
            3 => with(home(&key, parts), Some(&key), b"\x01not an event".to_vec(), "undecodable"),
            // Registry framing with a schema id the registry does not have.
            4 => with(
                home(&key, parts),
                Some(&key),
                vec![0, 0x7f, 0xff, 0xff, 0xf0, 2, 4],
                "undecodable",
            ),
            5 => with(
                home(&key, parts),
                Some(&key),
                br#"{"event_id":"x"}"#.to_vec(),
                "invalid_event",
            ),
            6 => {
                let v = event(i as u64, t, kind, key_field, None, payload.clone());
                with(0, None, v.to_string().into_bytes(), "missing_key")
            }
            7 if iot => {
                let v = event(i as u64, t, kind, key_field, Some(&key), json!({"unit": "C"}));
                with(home(&key, parts), Some(&key), v.to_string().into_bytes(), "missing_measure")
            }
            _ => {
                let v = good(t).to_string().into_bytes();
                with((home(&key, parts) + 1) % parts, Some(&key), v, "wrong_partition")
            }
        };
        out.push(rec);
    }
    out
}

/// Writes the data set and computes what the processor must produce from it.
fn produce(s: &Scenario) -> Expected {
    let records = data_set(s);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let producer = s.producer();
    let offsets: Vec<(i32, i64)> = rt.block_on(async {
        // Enqueued in order at once (send_result), so each partition keeps the data set's order.
        let mut sends = Vec::new();
        for r in &records {
            let mut fr = FutureRecord::<str, [u8]>::to(&r.topic)
                .partition(r.partition)
                .payload(&r.value)
                .timestamp(r.ts);
            if let Some(k) = &r.key {
                fr = fr.key(k.as_str());
            }
            sends.push(tributary_test_support::enqueue(&producer, fr).await);
        }
        let mut got = Vec::new();
        for f in sends {
            let d = f.await.expect("delivery").expect("record written");
            got.push((d.partition, d.offset));
        }
        got
    });

    let mut dead = BTreeMap::new();
    // (source, window, start, key) → (count, sum, min, max, categories)
    type Acc = (u64, f64, Option<f64>, Option<f64>, BTreeMap<String, u64>);
    let mut windows: BTreeMap<(String, String, i64, String), Acc> = BTreeMap::new();
    for (r, (partition, offset)) in records.iter().zip(offsets) {
        if let Some(reason) = r.reason {
            dead.insert((r.topic.clone(), partition, offset), (reason.to_owned(), r.value.clone()));
        }
        let Some((key, t, measure, category)) = &r.counts else { continue };
        let pane = t.div_euclid(MIN) * MIN;
        let mut spans = vec![("1m".to_owned(), pane)];
        spans.extend((0..5).map(|k| ("5m".to_owned(), pane + (k + 1) * MIN - 5 * MIN)));
        for (w, start) in spans {
            let a = windows.entry((r.topic.clone(), w, start, key.clone())).or_default();
            a.0 += 1;
            if let Some(v) = measure {
                a.1 += v;
                a.2 = Some(a.2.map_or(*v, |m: f64| m.min(*v)));
                a.3 = Some(a.3.map_or(*v, |m: f64| m.max(*v)));
            }
            if let Some(c) = category {
                *a.4.entry(c.clone()).or_default() += 1;
            }
        }
    }
    let rows = windows
        .into_iter()
        .map(|((topic, w, start, key), (count, sum, min, max, cats))| {
            let iot = topic == s.iot;
            let attrs: BTreeMap<String, String> = if iot {
                let i: usize = key[2..].parse().expect("device number");
                if i < DEVICES - 5 {
                    BTreeMap::from([
                        ("site".into(), format!("site-{}", i % 3)),
                        ("floor".into(), (i % 4).to_string()),
                    ])
                } else {
                    BTreeMap::new()
                }
            } else {
                let i: usize = key[2..].parse().expect("user number");
                if i < USERS - 4 {
                    BTreeMap::from([(
                        "tier".into(),
                        if i % 2 == 0 { "gold" } else { "basic" }.to_owned(),
                    )])
                } else {
                    BTreeMap::new()
                }
            };
            let output = aggregate_topic(&topic, &w);
            let measured = |x: Option<f64>| x.filter(|_| iot);
            (
                output,
                (
                    w,
                    start,
                    key,
                    count,
                    measured(Some(sum)),
                    measured(min),
                    measured(max),
                    cats,
                    attrs,
                ),
            )
        })
        .collect();
    Expected { rows, dead }
}

fn rfc3339_ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).expect("RFC 3339").timestamp_millis()
}

/// Everything a `read_committed` consumer sees on the result and dead-letter topics, read
/// until `expected` records are there and then a little longer (so duplicates would show).
fn read_all(s: &Scenario, expected: usize) -> (Vec<(String, Row)>, Vec<Dead>) {
    let topics: Vec<(&str, i32)> = s
        .outputs
        .iter()
        .map(String::as_str)
        .zip([IOT_PARTITIONS, IOT_PARTITIONS, CLICK_PARTITIONS, CLICK_PARTITIONS])
        .chain([(s.dlq.as_str(), 2)])
        .collect();
    let consumer = tributary_test_support::read_committed(&s.bootstrap, &topics);
    let schema = apache_avro::Schema::parse_str(include_str!("../../../schemas/aggregate.avsc"))
        .expect("aggregate schema");
    let (mut rows, mut dead) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut complete_at: Option<Instant> = None;
    while complete_at.is_none_or(|at| at.elapsed() < Duration::from_secs(4)) {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} records after 240 s\n{}",
            rows.len() + dead.len(),
            s.logs()
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else { continue };
        let m = m.expect("reading results");
        let bytes = m.payload().unwrap_or_default().to_vec();
        if m.topic() == s.dlq {
            let mut h = HashMap::new();
            for x in m.headers().expect("dead letters have headers").iter() {
                h.insert(
                    x.key.to_owned(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                );
            }
            for name in ["dlq.error", "dlq.processed.at"] {
                assert!(h.get(name).is_some_and(|v| !v.is_empty()), "header {name} missing: {h:?}");
            }
            let at = (
                h["dlq.source.topic"].clone(),
                h["dlq.source.partition"].parse().expect("partition"),
                h["dlq.source.offset"].parse().expect("offset"),
            );
            dead.push((at, (h["dlq.reason"].clone(), bytes)));
        } else {
            assert_eq!(bytes.first(), Some(&0), "results are registry-framed");
            let v = tributary_schema::codec::decode_to_json(&schema, &bytes[5..])
                .expect("an aggregate");
            let key = v["key"].as_str().expect("key").to_owned();
            assert_eq!(m.key(), Some(key.as_bytes()), "results are keyed by the group key");
            assert_eq!(
                m.partition(),
                home(
                    &key,
                    if m.topic().contains(".iot.") { IOT_PARTITIONS } else { CLICK_PARTITIONS }
                )
            );
            let (start, end) = (
                rfc3339_ms(v["window_start"].as_str().expect("start")),
                rfc3339_ms(v["window_end"].as_str().expect("end")),
            );
            let w = v["window"].as_str().expect("window").to_owned();
            assert_eq!(end - start, if w == "1m" { MIN } else { 5 * MIN });
            let count = v["count"].as_u64().expect("count");
            if let Some(avg) = v["avg"].as_f64() {
                let sum = v["sum"].as_f64().expect("sum with avg");
                assert!((avg - sum / count as f64).abs() < 1e-9, "avg is sum / count");
            }
            let map = |x: &Value| {
                x.as_object()
                    .map(|o| {
                        o.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>()
                    })
                    .unwrap_or_default()
            };
            let cats =
                map(&v["counts"]).into_iter().map(|(k, v)| (k, v.as_u64().unwrap_or(0))).collect();
            let attrs = map(&v["attributes"])
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let row = (
                w,
                start,
                key,
                count,
                v["sum"].as_f64(),
                v["min"].as_f64(),
                v["max"].as_f64(),
                cats,
                attrs,
            );
            rows.push((m.topic().to_owned(), row));
        }
        if complete_at.is_none() && rows.len() + dead.len() >= expected {
            complete_at = Some(Instant::now());
        }
    }
    (rows, dead)
}

/// Compares exactly, naming the first differences when there are any.
fn check(s: &Scenario, expected: &Expected, rows: Vec<(String, Row)>, dead: Vec<Dead>) {
    let mut seen = BTreeMap::new();
    for (at, v) in &dead {
        assert!(
            seen.insert(at.clone(), v.clone()).is_none(),
            "dead letter for {at:?} written twice"
        );
    }
    let wrong: Vec<_> = expected
        .dead
        .iter()
        .filter(|(k, v)| seen.get(*k) != Some(v))
        .take(5)
        .map(|(k, v)| (k, &v.0, seen.get(k).map(|x| &x.0)))
        .collect();
    let extra: Vec<_> = seen.keys().filter(|k| !expected.dead.contains_key(*k)).take(5).collect();
    assert!(
        wrong.is_empty() && extra.is_empty(),
        "dead letters differ: missing or wrong {wrong:?}, unexpected {extra:?}\n{}",
        s.logs()
    );
    assert_eq!(seen.len(), expected.dead.len());

    let mut got = rows;
    got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    let mut want = expected.rows.clone();
    want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
        let unexpected: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
        panic!(
            "results differ: {} got, {} expected\nmissing: {missing:#?}\nunexpected: {unexpected:#?}\n{}",
            got.len(),
            want.len(),
            s.logs()
        );
    }
}

fn kinds(expected: &Expected) -> BTreeMap<&str, usize> {
    let mut k = BTreeMap::new();
    for (reason, _) in expected.dead.values() {
        *k.entry(reason.as_str()).or_default() += 1;
    }
    k
}

#[test]
fn results_and_dead_letters_are_exact() {
    let s = Scenario::new();
    let expected = produce(&s);
    let reasons = kinds(&expected);
    assert_eq!(reasons.len(), 7, "the data set has every kind of bad record: {reasons:?}");
    let _p = s.start(0).0;
    let (rows, dead) = read_all(&s, expected.rows.len() + expected.dead.len());
    check(&s, &expected, rows, dead);
}

#[test]
fn sigkill_at_random_moments_changes_nothing() {
    let s = Scenario::new();
    let expected = produce(&s);
    let mut rng = rand::rng();
    for _ in 0..4 {
        let (mut p, port) = s.start(0);
        // Let it process a random number of new records, then SIGKILL: no commit, no goodbye
        // to the group, an open transaction left behind.
        wait_for_records(&s, port, f64::from(rng.random_range(2_000..15_000u32)));
        p.0.kill().expect("SIGKILL");
        let _ = p.0.wait();
    }
    let _p = s.start(0).0;
    let (rows, dead) = read_all(&s, expected.rows.len() + expected.dead.len());
    check(&s, &expected, rows, dead);
    let log = std::fs::read_to_string(s.dir.join("processor-0.log")).unwrap_or_default();
    assert_eq!(log.matches("processor running").count(), 5, "four kills, five runs");
    // Later runs resumed from checkpoints rather than from the beginning.
    assert!(
        log.lines().any(|l| l.contains("partition assigned") && !l.contains("position=0")),
        "{log}"
    );
}

/// Waits (up to a minute) until the instance on `port` has processed `n` new records.
fn wait_for_records(s: &Scenario, port: u16, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(port, "processor_records_in_total") < n {
        assert!(Instant::now() < deadline, "no progress to {n} records\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the instances on `ports` together hold every partition, all of them holding
/// some; a member that gives partitions up and then rejoins mid-rebalance can leave them
/// assigned to nobody.
fn wait_for_full_assignment(s: &Scenario, ports: &[u16], within: Duration) {
    let deadline = Instant::now() + within;
    let all = f64::from(IOT_PARTITIONS + CLICK_PARTITIONS);
    loop {
        let held: Vec<f64> =
            ports.iter().map(|&p| metric(p, "processor_assigned_partitions")).collect();
        if held.iter().all(|&n| n > 0.0) && held.iter().sum::<f64>() == all {
            return;
        }
        assert!(Instant::now() < deadline, "assigned: {held:?} of {all} partitions\n{}", s.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn instances_join_leave_and_die_without_loss_or_duplicates() {
    let s = Scenario::new();
    let expected = produce(&s);
    let (_first, port) = s.start(0);
    wait_for_records(&s, port, 5_000.0);
    // A second instance joins, works a moment and stops cleanly (SIGTERM): it commits and exits;
    // a static member sends no LeaveGroup, so its partitions go back after the session timeout.
    let (mut second, second_port) = s.start(1);
    wait_for_full_assignment(&s, &[port, second_port], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1_000));
    Command::new("kill").args(["-TERM", &second.0.id().to_string()]).status().expect("kill");
    let left = Instant::now();
    let status = loop {
        if let Some(status) = second.0.try_wait().expect("waiting for the second instance") {
            break status;
        }
        assert!(left.elapsed() < Duration::from_secs(30), "no exit after SIGTERM\n{}", s.info(1));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the second instance exited with {status}\n{}", s.info(1));
    let log = std::fs::read_to_string(s.dir.join("processor-1.log")).unwrap_or_default();
    assert!(
        log.contains("stopping: committing the open transaction")
            && log.contains("processor stopped"),
        "{log}"
    );
    wait_for_full_assignment(&s, &[port], Duration::from_secs(30));
    // A third joins and is killed (SIGKILL): its partitions go back after the session timeout.
    let (mut third, third_port) = s.start(2);
    wait_for_full_assignment(&s, &[port, third_port], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1_000));
    third.0.kill().expect("SIGKILL");
    let (rows, dead) = read_all(&s, expected.rows.len() + expected.dead.len());
    check(&s, &expected, rows, dead);
    // A transaction lost to a rebalance is rewound in place; the first instance never had to
    // leave the group and join again.
    let first = std::fs::read_to_string(s.dir.join("processor-0.log")).unwrap_or_default();
    assert!(!first.contains("rebuilding the consumer"), "{first}");
}

#[test]
fn a_broker_crash_mid_run_changes_nothing() {
    // A broker of its own, to SIGKILL while a transaction is open: the processor stays in
    // the group, replaces its producer and goes back to its last commit.
    let broker = LocalBroker::start();
    let s = Scenario::on(broker.bootstrap());
    let expected = produce(&s);
    let (_p, port) = s.start(0);
    wait_for_records(&s, port, 20_000.0);
    broker.kill();
    // Longer than the transaction timeout (5 s here): the broker aborts the open
    // transaction when it is back, and the processor's producer learns it was fenced.
    std::thread::sleep(Duration::from_secs(6));
    broker.restart();
    let (rows, dead) = read_all(&s, expected.rows.len() + expected.dead.len());
    check(&s, &expected, rows, dead);
    let log = std::fs::read_to_string(s.dir.join("processor-0.log")).unwrap_or_default();
    // It stays in the group and rewinds. The one exception: a consumer whose own session timed
    // out while the broker was away is fenced by its own group.instance.id when it joins again
    // (fatal in librdkafka), and is rebuilt once.
    let runs = log.matches("processor running").count();
    let fenced = log.contains("Static consumer fenced");
    assert!(runs == 1 || (runs == 2 && fenced), "{runs} starts, fenced: {fenced}\n{log}");
}
