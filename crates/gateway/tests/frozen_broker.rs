//! A write whose produce request is in flight when the HTTP deadline passes: the client gets
//! `503` with `Retry-After` in time, the record keeps its place in librdkafka, and a retry with
//! the same `event_id` gets the position of the one copy, never a second write.
//!
//! The broker is frozen with SIGSTOP (its connections stay open, the request sent to it stays
//! unanswered), as a leader stalls during a failover under `acks=all`.

mod common;

use common::{event, TestGateway};
use rdkafka::Message;
use std::time::{Duration, Instant};
use tributary_test_support::LocalBroker;

/// The HTTP write deadline of this test's gateway.
const PRODUCE_TIMEOUT_MS: u64 = 3_000;

/// Resumes the broker when dropped, so a failing assertion leaves no frozen process behind.
struct Frozen<'a>(&'a LocalBroker);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_at_the_deadline_answers_503_and_its_retry_gets_the_one_copy() {
    let broker = LocalBroker::start();
    let gw = TestGateway::start_on(&broker.bootstrap(), |c| {
        c.produce_timeout_ms = PRODUCE_TIMEOUT_MS;
    })
    .await;
    let topic = gw.topics.click.clone();
    // Connected, with the topic's metadata: the next record goes straight to the broker.
    let (status, body) = gw.post(&topic, &event("warm-up", "user-1")).await;
    assert_eq!(status, 201, "{body}");

    let frozen = Frozen(&broker);
    broker.pause();
    let started = Instant::now();
    let first = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{topic}")))
        .json(&event("stalled", "user-2"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the gateway answers while the broker is frozen");
    let took = started.elapsed();
    assert_eq!(first.status().as_u16(), 503, "no acknowledgement, no 201");
    assert!(took < Duration::from_millis(PRODUCE_TIMEOUT_MS + 700), "answered in {took:?}");
    assert!(first.headers().get("retry-after").is_some(), "Retry-After on the 503");
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["error"], "kafka_unavailable", "{body}");
    // Frozen a little past the deadline, as a failover outlasts it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(frozen);

    let (status, retry) = gw.post(&topic, &event("stalled", "user-2")).await;
    eprintln!("first answer after {took:?}: {body}; retry: {status} {retry}");
    let copies: Vec<_> = common::read_all(&gw.bootstrap, &topic)
        .into_iter()
        .filter(|m| {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
            v["event_id"] == "stalled"
        })
        .map(|m| (m.partition(), m.offset()))
        .collect();
    assert_eq!(copies.len(), 1, "the event is stored once: {copies:?}; retry answered {retry}");
    assert_eq!(status, 200, "the retry is answered with the first write's outcome: {retry}");
    assert_eq!(retry["status"], "duplicate", "{retry}");
    assert_eq!(
        (retry["partition"].as_i64(), retry["offset"].as_i64()),
        (Some(i64::from(copies[0].0)), Some(copies[0].1)),
        "the retry names the one copy"
    );
    gw.shutdown().await;
    drop(broker);
}
