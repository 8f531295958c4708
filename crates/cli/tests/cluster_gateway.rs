//! The gateway through broker faults on the production-shaped cluster (three KRaft nodes,
//! SASL_SSL/SCRAM, RF 3, `min.insync.replicas=2`, ACLs), with the processor and the sink
//! running as their own users. Each scenario ends with the exact check
//! (`Platform::check_exact`): every event acknowledged is in the source topic once, every
//! window result is exact and once, every warehouse row is there once.
//!
//! Issue 10, scenarios 1 (the leader SIGKILLed again and again mid-load) and 2 (two brokers
//! down: `503` with `Retry-After`, health names the partition below `min.insync.replicas`, and
//! a returning broker brings writes back without a restart).

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tributary_test_support::load::{Answer, Load};
use tributary_test_support::platform::{exclusive, Platform, PARTITIONS};
use tributary_test_support::Faults;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// Leader kills in scenario 1 (`TRIBUTARY_TEST_LEADER_KILLS`), within [`KILL_BUDGET`].
const DEFAULT_KILLS: u32 = 10;
const KILL_BUDGET: Duration = Duration::from_secs(200);

/// Waits (120 s at most) until every partition has all its replicas in sync, so that the
/// next kill takes one replica of three, not the last in-sync one.
fn in_sync(p: &Platform) {
    tokio::task::block_in_place(|| p.wait_fully_replicated(Duration::from_secs(120)));
}

/// Issue 10, scenario 1: the leader of a partition being written SIGKILLed mid-load and
/// started again, over and over; no event answered 201 is ever stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_again_and_again_stores_every_acknowledged_event_once() {
    let _one = exclusive().await;
    let started = Instant::now();
    let kills: u32 = std::env::var("TRIBUTARY_TEST_LEADER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILLS);
    let p = Platform::new(BIN);
    let (_processor, _) = p.processor(0);
    let _sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    in_sync(&p);
    let load = Load::start(std::slice::from_ref(&base), &p.topic, 3, Duration::from_millis(20));
    let mut faults = Faults::new(&p.cluster);
    let mut done = 0;
    for i in 0..kills {
        if started.elapsed() > KILL_BUDGET {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let partition = i32::try_from(i).expect("few kills") % PARTITIONS;
        let leader = tokio::task::block_in_place(|| p.leader(&p.topic, partition));
        let kill_started = Instant::now();
        tokio::task::block_in_place(|| faults.kill(leader));
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| faults.start(leader));
        in_sync(&p);
        done += 1;
        eprintln!(
            "kill {done}: node {leader} (leader of partition {partition}) back in sync after {:?}",
            kill_started.elapsed()
        );
    }
    // Every node running again (start-node blocks until its port answers).
    tokio::task::block_in_place(|| drop(faults));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let exact = p.finish(load, &base).await;
    eprintln!("{done} leader kills: {exact:?}, took {:?}", started.elapsed());
    assert!(done >= kills.min(3), "only {done} kills of {kills} fit in {KILL_BUDGET:?}");
}

/// One event of this file's own, written like the load's (same time, same users) so that
/// the exact check counts it in the windows.
fn own_event(id: &str, user: &str, t0: i64) -> Value {
    json!({"event_id": id, "timestamp": t0, "event_type": "view", "user_id": user,
        "payload": {"n": 0}})
}

/// Issue 10, scenario 2: two brokers of three down (the ISR below `min.insync.replicas`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_down_answer_503_health_says_why_and_a_returning_broker_brings_writes_back() {
    let _one = exclusive().await;
    let started = Instant::now();
    let p = Platform::new(BIN);
    let (_processor, _) = p.processor(0);
    let _sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    in_sync(&p);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http");
    let load = Load::start(std::slice::from_ref(&base), &p.topic, 2, Duration::from_millis(50));
    let t0 = load.t0;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut faults = Faults::new(&p.cluster);
    tokio::task::block_in_place(|| {
        faults.kill(2);
        faults.kill(3);
    });
    let down_at = Instant::now();

    // Health names the cause.
    let health_url = format!("{base}/api/v1/health");
    let mut seen = std::collections::BTreeSet::new();
    let (reason, took) = loop {
        let r = http.get(&health_url).send().await.expect("health answers");
        let (status, retry_after) = (r.status().as_u16(), r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let reason = body["reason"].as_str().unwrap_or_default().to_owned();
        if status == 503 && reason.contains("min.insync.replicas") {
            assert!(retry_after, "Retry-After on the health 503");
            break (reason, down_at.elapsed());
        }
        // The metadata first (librdkafka may ask a dead node and time out), then the ISR.
        seen.insert(reason);
        assert!(down_at.elapsed() < Duration::from_secs(120), "health never said why: {seen:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("health after {took:?}: {reason} (before: {seen:?})");
    // A partition of one of the scenario's topics (the source, its results, the dead letters).
    let suffix = p.topic.split('.').nth(1).expect("events.<suffix>.clicks");
    assert!(reason.contains(suffix) || reason.contains("events.dlq"), "{reason}");
    assert!(reason.contains("has 1 in-sync replica of 3"), "{reason}");
    assert!(reason.contains("fewer than its min.insync.replicas (2"), "{reason}");

    // Writes: 503 with Retry-After within the write deadline, never 201.
    let url = format!("{base}/api/v1/events/{}", p.topic);
    let mut own = Vec::new();
    for i in 0..3 {
        let id = format!("two-down-{i}");
        let user = tributary_test_support::load::user(i);
        let sent = Instant::now();
        let r = http.post(&url).json(&own_event(&id, &user, t0)).send().await.expect("answer");
        let took = sent.elapsed();
        assert_eq!(r.status().as_u16(), 503, "{id}: never 201 with two brokers down");
        assert!(r.headers().contains_key("retry-after"), "{id}: Retry-After");
        assert!(took < Duration::from_millis(6_500), "{id} answered in {took:?}");
        own.push((id, user));
    }

    // One broker back: writes go through again, without a restart of the gateway.
    tokio::task::block_in_place(|| faults.start(2));
    let back_at = Instant::now();
    let mut answers = Vec::new();
    for (id, user) in &own {
        let answer = retry_until_written(&http, &url, id, user, t0).await;
        answers.push(answer);
    }
    eprintln!("writes back {:?} after the broker's return", back_at.elapsed());
    // Every node running again (start-node blocks until its port answers).
    tokio::task::block_in_place(|| drop(faults));
    in_sync(&p);
    tokio::time::sleep(Duration::from_secs(2)).await;
    answers.extend(load.stop().await);
    let exact = p.check_exact(&answers, &base, t0).await;
    eprintln!("two brokers down: {exact:?}, took {:?}", started.elapsed());
    assert!(exact.unavailable > 0, "the load met the outage: {exact:?}");
}

/// Posts the event `id` until it is answered 201/200 (120 s at most), as a client retries a
/// 503; its final answer.
async fn retry_until_written(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    user: &str,
    t0: i64,
) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut unavailable = 0;
    loop {
        let r = http.post(url).json(&own_event(id, user, t0)).send().await.expect("answer");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 200 || status == 201 {
            let position = body["partition"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .zip(body["offset"].as_i64());
            return Answer {
                event_id: id.to_owned(),
                user: user.to_owned(),
                kind: "view".to_owned(),
                status,
                position,
                unavailable,
                unavailable_without_retry_after: 0,
                unexpected: Vec::new(),
            };
        }
        assert_eq!(status, 503, "{id}: {body}");
        unavailable += 1;
        assert!(Instant::now() < deadline, "{id} not written 120 s after a broker returned");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
