//! The producer's queue while Kafka is down: bounded in messages and bytes, so writers that
//! do not wait for their answers (they hang up and send again) cannot grow the gateway's
//! memory; once it is full a write is answered `503 queue_full` at once.
//!
//! The gateway runs in this test's process, so the resident memory measured (`VmRSS` of
//! `/proc/self/status`) is the gateway's plus the test's own (its HTTP clients, the in-process
//! schema registry): an upper bound of the gateway's. It is alone in this file so that no other
//! test shares the process.

mod common;

use common::TestGateway;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_test_support::LocalBroker;

/// The bound docs/operations.md states for the default settings, in MiB.
const RSS_BOUND_MIB: u64 = 320;
/// Writers at once, how long they write, and the shape of their batches.
const WRITERS: usize = 32;
const DRIVE: Duration = Duration::from_secs(20);
const EVENTS_PER_BATCH: usize = 64;
const EVENT_PAYLOAD_BYTES: usize = 4 * 1024;

/// Resident memory of this process, in MiB.
fn vm_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib / 1024
}

fn batch(writer: usize, round: u64) -> Value {
    let filler = "x".repeat(EVENT_PAYLOAD_BYTES);
    let events: Vec<Value> = (0..EVENTS_PER_BATCH)
        .map(|i| {
            json!({
                "event_id": format!("w{writer}-r{round}-{i}"),
                "timestamp": "2026-11-30T12:00:00Z",
                "event_type": "page_view",
                "user_id": format!("user-{}", i % 50),
                "payload": {"filler": filler},
            })
        })
        .collect();
    Value::Array(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_kafka_is_down_and_a_full_queue_answers_at_once() {
    let broker = LocalBroker::start();
    let gw = TestGateway::start_on(&broker.bootstrap(), |_| {}).await;
    let click = gw.topics.click.clone();
    let (status, body) = gw.post(&click, &common::event("before-outage", "user-1")).await;
    assert_eq!(status, 201, "{body}");
    broker.stop();
    let before = vm_rss_mib();

    // Writers that send a batch, give up on it after 250 ms, and send the next one.
    let url = gw.url(&format!("/api/v1/events/{click}/batch"));
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + DRIVE;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (url, sent) = (url.clone(), Arc::clone(&sent));
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(250))
                .build()
                .expect("client");
            let mut round = 0;
            while Instant::now() < deadline {
                let body = serde_json::to_vec(&batch(w, round)).expect("json");
                // The answer does not matter here (a 503, or a hang-up after 250 ms).
                let _ = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                sent.fetch_add(EVENTS_PER_BATCH as u64, Ordering::Relaxed);
                round += 1;
            }
        }));
    }
    // Meanwhile: resident memory every 200 ms, and a single write every 500 ms (each in a task
    // of its own, so a slow answer delays neither the next probe nor the sampling).
    let mut peak = before;
    let mut probes = Vec::new();
    let mut tick: u64 = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(vm_rss_mib());
        tick += 1;
        if tick % 3 == 0 && tick > 10 && Instant::now() + Duration::from_secs(6) < deadline {
            let (http, url) = (gw.http.clone(), gw.url(&format!("/api/v1/events/{click}")));
            probes.push(tokio::spawn(probe(http, url, tick)));
        }
    }
    for w in writers {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("writers stop")
            .expect("writer");
    }
    let mut answers = Vec::new();
    for p in probes {
        answers.push(p.await.expect("probe"));
    }
    let probes = answers;
    let events = sent.load(Ordering::Relaxed);
    let metrics = gw.http.get(gw.url("/metrics")).send().await.expect("GET").text().await;
    let full: f64 = metrics
        .expect("text")
        .lines()
        .filter(|l| l.starts_with("gateway_producer_queue_full_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!(
        "resident memory: {before} MiB before, peak {peak} MiB while {WRITERS} writers sent \
         {events} events of {EVENT_PAYLOAD_BYTES} bytes in {DRIVE:?} to a stopped broker; \
         {full} events refused with queue_full; single writes meanwhile: {probes:?}"
    );
    // Every single write was refused, within the write deadline; once the queue is full, at
    // once and saying so.
    for (code, took) in &probes {
        assert!(code == "queue_full" || code == "kafka_unavailable", "{probes:?}");
        assert!(*took < Duration::from_millis(5_500), "{probes:?}");
    }
    assert!(
        probes.iter().any(|(code, took)| code == "queue_full" && *took < Duration::from_secs(1)),
        "a write to a full queue is answered 503 queue_full at once: {probes:?}"
    );
    assert!(
        peak < RSS_BOUND_MIB,
        "resident memory peaked at {peak} MiB (bound {RSS_BOUND_MIB} MiB, {before} MiB before)"
    );
    // No shutdown: it would wait for the queue to expire and delete topics on a stopped broker;
    // the broker, and its topics with it, is removed when dropped.
    drop(gw);
    drop(broker);
}

/// One single-event write of 64 KiB (larger than the room the writers' 4 KiB events leave in
/// a full queue): its error code (503 with Retry-After asserted) and how long it took.
async fn probe(http: reqwest::Client, url: String, n: u64) -> (String, Duration) {
    let mut event = common::event(&format!("probe-{n}"), "user-2");
    event["payload"]["filler"] = json!("p".repeat(64 * 1024));
    let started = Instant::now();
    let r = http
        .post(url)
        .json(&event)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the gateway answers");
    let took = started.elapsed();
    assert_eq!(r.status().as_u16(), 503, "a write while Kafka is down");
    assert!(r.headers().get("retry-after").is_some(), "Retry-After on 503");
    let body: Value = r.json().await.expect("json");
    (body["error"].as_str().unwrap_or_default().to_owned(), took)
}
