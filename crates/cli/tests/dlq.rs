//! `tributary dlq` against a real broker: a dead-letter topic holding the processor's, the
//! sink's and Kafka Connect's kinds of dead letters is counted, listed and replayed; a replay
//! writes each matching record back exactly once, however often it runs.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const SOURCE_PARTITIONS: i32 = 3;

struct Setup {
    config: std::path::PathBuf,
    dlq: String,
    source: String,
}

fn tributary(s: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .args(["--topic", &s.dlq])
        .output()
        .expect("running tributary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn setup() -> Setup {
    let suffix = tributary_test_support::random_suffix();
    let dir = std::env::temp_dir().join(format!("tributary-dlq-{suffix}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (dlq, source) = (format!("test-dlq-{suffix}"), format!("test-src-{suffix}"));
    let config = dir.join("tributary.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n\
             [[topics]]\nname = \"{dlq}\"\npartitions = 2\nrequire_key = false\nrole = \"dead_letter\"\n\
             [[topics]]\nname = \"{source}\"\npartitions = {SOURCE_PARTITIONS}\nkey_field = \"user_id\"\nrole = \"source\"\n",
            tributary_test_support::bootstrap()
        ),
    )
    .expect("config");
    tributary_test_support::apply_topics(BIN, &config);
    Setup { config, dlq, source }
}

/// A dead letter as the processor writes it: the original record plus `dlq.*` headers.
struct Letter {
    reason: &'static str,
    key: String,
    value: Vec<u8>,
    timestamp: i64,
}

fn write(s: &Setup, letters: &[Letter], connect: usize, bare: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", tributary_test_support::bootstrap())
        .create()
        .expect("producer");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        for (i, l) in letters.iter().enumerate() {
            let offset = (1000 + i).to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "trace", value: Some("t-1") })
                .insert(Header { key: "dlq.reason", value: Some(l.reason) })
                .insert(Header { key: "dlq.error", value: Some("why it failed") })
                .insert(Header { key: "dlq.source.topic", value: Some(s.source.as_str()) })
                .insert(Header { key: "dlq.source.partition", value: Some("1") })
                .insert(Header { key: "dlq.source.offset", value: Some(offset.as_str()) })
                .insert(Header {
                    key: "dlq.processed.at",
                    value: Some(format!("2026-11-30T12:00:{:02}.000Z", i % 60).as_str()),
                });
            let record = FutureRecord::to(&s.dlq)
                .key(&l.key)
                .payload(&l.value)
                .timestamp(l.timestamp)
                .headers(headers);
            producer.send(record, Duration::from_secs(10)).await.expect("dead letter written");
        }
        for i in 0..connect {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "__connect.errors.topic", value: Some(s.source.as_str()) })
                .insert(Header { key: "__connect.errors.partition", value: Some("0") })
                .insert(Header { key: "__connect.errors.offset", value: Some("7") })
                .insert(Header {
                    key: "__connect.errors.exception.class.name",
                    value: Some("org.apache.kafka.connect.errors.DataException"),
                })
                .insert(Header { key: "__connect.errors.exception.message", value: Some("bad") });
            let key = format!("connect-{i}");
            let record = FutureRecord::to(&s.dlq).key(&key).payload("{\"x\":1}").headers(headers);
            producer.send(record, Duration::from_secs(10)).await.expect("connect dead letter");
        }
        for i in 0..bare {
            let key = format!("bare-{i}");
            producer
                .send(FutureRecord::to(&s.dlq).key(&key).payload("?"), Duration::from_secs(10))
                .await
                .expect("bare record");
        }
    });
}

/// An hour before the test started, in ms: the letters' record timestamps. They must be within
/// the topics' retention (7 days by record time), or the broker deletes them mid-test.
fn letters_epoch() -> i64 {
    static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.expect("clock after 1970").as_millis() as i64 - 3_600_000
    })
}

fn letters(reason: &'static str, n: usize, first: usize) -> Vec<Letter> {
    (first..first + n)
        .map(|i| Letter {
            reason,
            key: format!("user-{i}"),
            // Not UTF-8, like a record that failed to decode.
            value: vec![0, 0, 0, 0, 9, 0xff, i as u8],
            timestamp: letters_epoch() + i as i64,
        })
        .collect()
}

/// Everything committed on the source topic: (partition, key, value, timestamp, headers).
type Replayed = (i32, String, Vec<u8>, i64, BTreeMap<String, String>);

fn read_source(s: &Setup, expected: usize) -> Vec<Replayed> {
    let consumer = tributary_test_support::read_committed(
        &tributary_test_support::bootstrap(),
        &[(&s.source, SOURCE_PARTITIONS)],
    );
    let mut out = Vec::new();
    // Keep reading a while after the expected count so that duplicates would show.
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && (out.len() < expected || quiet_since.elapsed() < Duration::from_secs(2))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            quiet_since = Instant::now();
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.partition(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().unwrap_or_default().to_vec(),
                m.timestamp().to_millis().unwrap_or(-1),
                headers,
            ));
        }
    }
    out
}

#[test]
fn dead_letters_are_counted_listed_and_replayed_exactly_once() {
    let s = setup();
    let mut all = letters("undecodable", 10, 0);
    all.extend(letters("late", 15, 100));
    all.extend(letters("missing_key", 5, 200));
    write(&s, &all, 2, 1);

    // stats: every kind, by reason and source topic.
    let (code, out, err) = tributary(&s, &["dlq", "stats", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let stats: Value = serde_json::from_str(out.trim()).expect("stats JSON");
    assert_eq!(stats["total"], 33, "{stats}");
    let counts: BTreeMap<(String, String), u64> = stats["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| {
            (
                (
                    c["reason"].as_str().unwrap_or("").into(),
                    c["source_topic"].as_str().unwrap_or("").into(),
                ),
                c["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let src = s.source.clone();
    let want: BTreeMap<(String, String), u64> = [
        (("undecodable".into(), src.clone()), 10),
        (("late".into(), src.clone()), 15),
        (("missing_key".into(), src.clone()), 5),
        (("connect".into(), src.clone()), 2),
        (("unknown".into(), "-".into()), 1),
    ]
    .into();
    assert_eq!(counts, want);

    // list: the newest matching, oldest first, with where they came from.
    let (code, out, err) =
        tributary(&s, &["dlq", "list", "--reason", "late", "--limit", "4", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let listed: Vec<Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(listed.len(), 4, "{out}");
    let keys: Vec<&str> = listed.iter().filter_map(|d| d["key"].as_str()).collect();
    assert_eq!(keys, ["user-111", "user-112", "user-113", "user-114"]);
    assert_eq!(listed[0]["source_topic"], src.as_str());
    assert_eq!(listed[0]["source_offset"], 1021);
    assert_eq!(listed[0]["error"], "why it failed");
    assert!(listed[0]["value"]["base64"].is_string(), "{}", listed[0]);
    let (_, out, _) = tributary(&s, &["dlq", "list", "--reason", "connect"]);
    assert!(out.contains("DataException: bad"), "{out}");

    // replay needs to be told what.
    let (code, _, err) = tributary(&s, &["dlq", "replay"]);
    assert_ne!(code, 0);
    assert!(err.contains("--reason"), "{err}");

    // A dry run writes nothing.
    let (code, out, err) = tributary(&s, &["dlq", "replay", "--reason", "late", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("would write 15 to {src}")), "{out}");

    // The undecodable ones go back, once, where their keys belong.
    let (code, out, err) = tributary(&s, &["dlq", "replay", "--reason", "undecodable"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("wrote 10 to {src}")), "{out}");
    let (code, out, err) = tributary(&s, &["dlq", "replay", "--reason", "undecodable"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 matched"), "a second run replays nothing: {out}");

    // New dead letters of that reason: the next run takes only those.
    write(&s, &letters("undecodable", 3, 50), 0, 0);
    let (code, out, err) = tributary(&s, &["dlq", "replay", "--reason", "undecodable"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("wrote 3 to {src}")), "{out}");

    let replayed = read_source(&s, 13);
    assert_eq!(replayed.len(), 13, "exactly 13 records, none twice: {replayed:?}");
    let expected: Vec<Letter> =
        letters("undecodable", 10, 0).into_iter().chain(letters("undecodable", 3, 50)).collect();
    for l in &expected {
        let r =
            replayed.iter().find(|r| r.1 == l.key).unwrap_or_else(|| panic!("{} missing", l.key));
        let partition = tributary_core::murmur2_partition(l.key.as_bytes(), SOURCE_PARTITIONS);
        assert_eq!(Some(r.0), partition, "{}: the key's partition", l.key);
        assert_eq!(r.2, l.value, "{}: the original bytes", l.key);
        assert_eq!(r.3, l.timestamp, "{}: the original timestamp", l.key);
        assert_eq!(r.4.get("trace").map(String::as_str), Some("t-1"), "{:?}", r.4);
        assert!(
            r.4.keys().all(|k| !k.starts_with("dlq.") || k == "dlq.replayed.from"),
            "{:?}",
            r.4
        );
        assert!(r
            .4
            .get("dlq.replayed.from")
            .is_some_and(|f| f.starts_with(&format!("{}/", s.dlq))));
    }
}
