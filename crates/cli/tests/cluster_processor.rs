//! The processor through broker faults on the production-shaped cluster (three KRaft nodes,
//! SASL_SSL/SCRAM, RF 3, `min.insync.replicas=2`, ACLs), with the gateway taking writes and
//! the processor and the sink running as their own users. Each scenario ends with the exact
//! check (`Platform::check_exact`): every acknowledged event stored once, every window result
//! exact and once, every warehouse row once.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tributary_test_support::cluster::signal;
use tributary_test_support::load::{Answer, Load};
use tributary_test_support::platform::{exclusive, Platform, USERS};
use tributary_test_support::Faults;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// Load while it lasts: three writers, each an event every 20 ms at most.
fn load(base: &str, topic: &str) -> Load {
    Load::start(&[base.to_owned()], topic, 3, Duration::from_millis(20))
}

/// The processor's `/health` on `port` (status, body); `(0, Null)` when it does not answer.
async fn health(port: u16) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{port}/health");
    let http = reqwest::Client::new();
    match http.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Waits until the processor on `port` answers a health body for which `done` holds, within
/// `secs`; panics with the last answer and the logs otherwise.
async fn health_until(
    p: &Platform,
    port: u16,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        last = health(port).await;
        if done(&last.1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not within {secs} s; last health {last:?}\n{}", p.logs());
}

fn last_commit_ms(body: &Value) -> i64 {
    body["last_commit_ms"].as_i64().unwrap_or(0)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Java's `String.hashCode`, which Kafka uses to place a transactional id on a partition of
/// `__transaction_state`.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The node (1-3) that is the transaction coordinator of `transactional_id`: the leader of
/// its partition of `__transaction_state` (what FindCoordinator answers).
fn coordinator(p: &Platform, transactional_id: &str) -> u8 {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = p.admin_client().create().expect("admin client");
    let md = consumer
        .fetch_metadata(Some("__transaction_state"), Duration::from_secs(30))
        .expect("metadata of __transaction_state");
    let partitions = md.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "__transaction_state has no partitions");
    let hash = java_hash(transactional_id);
    // Kafka's Utils.abs: the absolute value, 0 for i32::MIN.
    let partition = if hash == i32::MIN { 0 } else { hash.abs() } % partitions;
    p.leader("__transaction_state", partition)
}

/// Issue 10, scenario 3: the broker that is the processor's transaction coordinator SIGKILLed
/// while the processor commits (it commits every 100 ms under load, so a commit is in flight:
/// the ambiguous-commit case), and started again. The processor commits again within a
/// minute of the broker's return (it once stalled 150 s there, logging nothing), and nothing
/// is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_transaction_coordinator_mid_commit_loses_and_doubles_nothing() {
    let _one = exclusive().await;
    let started = Instant::now();
    let p = Platform::new(BIN);
    let (_processor, port) = p.processor(0);
    let _sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    let load = load(&base, &p.topic);
    let t = now_ms();
    health_until(&p, port, 60, "the processor commits under load", |b| last_commit_ms(b) > t).await;
    let node = tokio::task::block_in_place(|| coordinator(&p, &format!("{}-0", p.group)));
    let mut faults = Faults::new(&p.cluster);
    tokio::task::block_in_place(|| faults.kill(node));
    tokio::time::sleep(Duration::from_secs(8)).await;
    tokio::task::block_in_place(|| faults.start(node));
    let back = now_ms();
    health_until(&p, port, 60, "the processor commits again after the coordinator is back", |b| {
        last_commit_ms(b) > back
    })
    .await;
    drop(faults);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exact = p.finish(load, &base).await;
    eprintln!("coordinator {node} killed mid-commit: {exact:?}, took {:?}", started.elapsed());
}

/// Issue 10, scenario 4: processor instance 0 frozen with SIGSTOP past its session timeout
/// (10 s) and its transaction timeout (10 s) while instance 1 takes its partitions, then
/// resumed with SIGCONT: a zombie with an open transaction. Its late writes are fenced (the
/// coordinator aborted its transaction and bumped its epoch; its group generation is gone),
/// and nothing doubles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_processor_resumed_after_its_partitions_moved_is_fenced() {
    let _one = exclusive().await;
    let started = Instant::now();
    let p = Platform::new(BIN);
    let (zombie, zombie_port) = p.processor(0);
    let _sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    let load = load(&base, &p.topic);
    let t = now_ms();
    health_until(&p, zombie_port, 60, "instance 0 commits under load", |b| last_commit_ms(b) > t)
        .await;
    let (_second, port) = tokio::task::block_in_place(|| p.processor(1));
    health_until(&p, port, 60, "instance 1 takes partitions", |b| {
        b["assigned_partitions"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    let frozen = Instant::now();
    signal(zombie.0.id(), "STOP");
    // Past the session timeout, the group moves every partition to instance 1, which
    // commits them.
    health_until(&p, port, 60, "instance 1 holds every partition", |b| {
        b["assigned_partitions"].as_u64() == Some(3) && last_commit_ms(b) > now_ms() - 1_000
    })
    .await;
    // Past the zombie's transaction timeout as well.
    let waited = frozen.elapsed();
    if waited < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_secs(15) - waited).await;
    }
    signal(zombie.0.id(), "CONT");
    // The zombie wakes up with an open transaction and results to write: they are fenced.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let exact = p.finish(load, &base).await;
    eprintln!("zombie processor fenced: {exact:?}, took {:?}", started.elapsed());
    drop(zombie);
}

/// Events written straight to the source topic by a transactional producer as the admin user,
/// `rounds` times a committed transaction of one event per user, then an aborted one of as
/// many, all with event time `t0`: the committed ones as the load's answers (with where they
/// were written), and the ids of the aborted ones.
async fn write_transactions(p: &Platform, t0: i64, rounds: usize) -> (Vec<Answer>, Vec<String>) {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
    let mut c = p.admin_client();
    c.set("transactional.id", format!("tributary-test-aborts-{}", p.group))
        .set("partitioner", "murmur2_random");
    let producer: FutureProducer = c.create().expect("transactional producer");
    let txn = Duration::from_secs(30);
    tokio::task::block_in_place(|| producer.init_transactions(txn)).expect("init_transactions");
    let (mut kept, mut aborted) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for commit in [true, false] {
            tokio::task::block_in_place(|| producer.begin_transaction()).expect("begin");
            for n in 0..USERS {
                let user = tributary_test_support::load::user(n);
                let id = format!("{}-{round}-{n}", if commit { "kept" } else { "aborted" });
                let value = json!({"event_id": id, "timestamp": t0, "event_type": "txn",
                    "user_id": user, "payload": {}})
                .to_string();
                let record = FutureRecord::to(&p.topic).key(&user).payload(&value);
                // Delivered before the commit or the abort: the aborted records are in the log.
                let d = producer.send(record, txn).await.expect("a transactional write");
                let (partition, offset) = (d.partition, d.offset);
                if commit {
                    kept.push(Answer {
                        event_id: id,
                        user,
                        kind: "txn".into(),
                        status: 201,
                        position: Some((partition, offset)),
                        unavailable: 0,
                        unavailable_without_retry_after: 0,
                        unexpected: Vec::new(),
                    });
                } else {
                    aborted.push(id);
                }
            }
            tokio::task::block_in_place(|| {
                if commit {
                    producer.commit_transaction(txn)
                } else {
                    producer.abort_transaction(txn)
                }
            })
            .expect("commit or abort");
        }
    }
    (kept, aborted)
}

/// The event ids a WebSocket stream sends until it has sent every one of `want`, within 60 s.
async fn stream_until(url: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    use futures::StreamExt as _;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("a stream");
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&seen) {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await;
        let Ok(Some(Ok(frame))) = frame else {
            let missing: Vec<_> = want.difference(&seen).take(5).collect();
            panic!(
                "the stream ended or stopped before every event: {frame:?}, missing {missing:?}"
            );
        };
        if let Ok(text) = frame.to_text() {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if let Some(id) = v["event"]["event_id"].as_str() {
                seen.insert(id.to_owned());
            }
        }
    }
    seen
}

/// Issue 10, scenario 5: a source topic holding aborted transactions (a transactional
/// producer that aborts every other transaction, interleaved with the gateway's writes): the
/// processor's results, the warehouse, `GET .../latest` and the WebSocket stream never show
/// an aborted record, and the exact check holds for the committed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_on_a_source_topic_are_never_shown() {
    let _one = exclusive().await;
    let started = Instant::now();
    let p = Platform::new(BIN);
    let (_processor, _) = p.processor(0);
    let _sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    let load = load(&base, &p.topic);
    let t0 = load.t0;
    let (kept, aborted) = write_transactions(&p, t0, 10).await;
    let aborted: BTreeSet<String> = aborted.into_iter().collect();
    let answers = {
        let mut answers = load.stop().await;
        answers.extend(kept.iter().cloned());
        answers
    };

    // The stream, from the oldest record: every committed transactional event, no aborted one.
    let ws = format!("{}/api/v1/stream/{}?from=earliest", base.replacen("http", "ws", 1), p.topic);
    let want: BTreeSet<String> = kept.iter().map(|a| a.event_id.clone()).collect();
    let seen = stream_until(&ws, &want).await;
    let shown: Vec<_> = seen.intersection(&aborted).collect();
    assert!(shown.is_empty(), "the stream showed aborted records: {shown:?}");

    // The newest events: the last transactions are among them, the aborted ones not.
    let latest: Value = reqwest::get(format!("{base}/api/v1/events/{}/latest?limit=1000", p.topic))
        .await
        .expect("GET latest")
        .json()
        .await
        .expect("JSON");
    let ids: BTreeSet<String> = latest["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"]["event_id"].as_str().or(e["event_id"].as_str()))
        .map(str::to_owned)
        .collect();
    assert!(ids.contains(&kept[kept.len() - 1].event_id), "latest shows the last commit: {latest}");
    let shown: Vec<_> = ids.intersection(&aborted).collect();
    assert!(shown.is_empty(), "latest showed aborted records: {shown:?}");

    // Source topic, window results and warehouse: exactly the committed events.
    let exact = p.check_exact(&answers, &base, t0).await;
    let in_warehouse = p.sql_count(&format!(
        "SELECT count(*) FROM raw.{} WHERE RECORD_CONTENT->>'event_id' LIKE 'aborted-%'",
        p.table
    ));
    assert_eq!(in_warehouse, 0, "the warehouse holds aborted records");
    eprintln!("aborted transactions never shown: {exact:?}, took {:?}", started.elapsed());
    assert_eq!(exact.acknowledged, answers.len(), "{exact:?}");
}
