//! The gateway while its broker is stopped and after it comes back: bounded 503s with
//! Retry-After, honest readiness while liveness stays up, and recovery without a restart.

mod common;

use common::{event, TestGateway};
use std::time::{Duration, Instant};
use tributary_test_support::{wait_for, LocalBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gives_bounded_503s_and_the_gateway_recovers_by_itself() {
    let broker = LocalBroker::start();
    let gw = TestGateway::start_on(&broker.bootstrap(), |c| {
        c.produce_timeout_ms = 3_000;
        c.health_timeout_ms = 1_000;
    })
    .await;
    let topic = gw.topics.click.clone();
    let (status, body) = gw.post(&topic, &event("before-outage", "user-1")).await;
    assert_eq!(status, 201, "{body}");

    broker.stop();

    // Health says so, quickly, with a reason.
    let started = Instant::now();
    let r = gw.http.get(gw.url("/api/v1/health")).send().await.expect("GET");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "health answered in {:?}",
        started.elapsed()
    );
    assert_eq!(r.status().as_u16(), 503);
    let health: serde_json::Value = r.json().await.expect("json");
    assert_eq!(health["kafka"], "down");
    // The kind of failure, not librdkafka's text (which names brokers, hosts and ports): the
    // health answer is open to anyone.
    let reason = health["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("kafka unreachable: no answer within 1000 ms"), "{health}");
    assert!(!reason.contains("127.0.0.1") && !reason.contains("Local:"), "{health}");
    // Readiness says the same; liveness stays 200, so a load balancer or ECS that follows it
    // keeps this instance (and its dedupe window) and clients get the 503s with Retry-After.
    let ready = gw.http.get(gw.url("/api/v1/health/ready")).send().await.expect("GET ready");
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.headers().get("retry-after").is_some(), "Retry-After on a not-ready 503");
    let live = gw.http.get(gw.url("/api/v1/health/live")).send().await.expect("GET live");
    assert_eq!(live.status().as_u16(), 200, "alive while Kafka is down");
    let live: serde_json::Value = live.json().await.expect("json");
    assert_eq!(live["status"], "ok", "{live}");

    // Writes answer 503 with Retry-After within the configured bound, never 2xx, never hang.
    for i in 0..3 {
        let started = Instant::now();
        let r = gw
            .http
            .post(gw.url(&format!("/api/v1/events/{topic}")))
            .json(&event(&format!("during-{i}"), "user-2"))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("the gateway answers while Kafka is down");
        let took = started.elapsed();
        assert_eq!(r.status().as_u16(), 503, "write {i}");
        assert!(took < Duration::from_millis(3_000 + 500), "write {i} answered in {took:?}");
        assert!(r.headers().get("retry-after").is_some(), "Retry-After on 503");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"], "kafka_unavailable");
    }
    // Reads fail the same way.
    let r =
        gw.http.get(gw.url(&format!("/api/v1/events/{topic}/latest"))).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 503);

    broker.restart();

    wait_for("health to recover", Duration::from_secs(60), || async {
        let r = gw.http.get(gw.url("/api/v1/health")).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let ready = gw.http.get(gw.url("/api/v1/health/ready")).send().await.expect("GET ready");
    assert_eq!(ready.status().as_u16(), 200, "ready again once Kafka is back");
    let (status, body) = wait_for("writes to recover", Duration::from_secs(60), || async {
        let (s, b) = gw.post(&topic, &event("after-outage", "user-3")).await;
        (s == 201).then_some((s, b))
    })
    .await;
    assert_eq!(status, 201);
    let m = common::read_at(
        &gw.bootstrap,
        &topic,
        body["partition"].as_i64().expect("p") as i32,
        body["offset"].as_i64().expect("o"),
    );
    let v: serde_json::Value =
        serde_json::from_slice(rdkafka::Message::payload(&m).expect("value")).expect("json");
    assert_eq!(v["event_id"], "after-outage");
    gw.shutdown().await;
    drop(broker);
}
