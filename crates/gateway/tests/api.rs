//! The gateway's HTTP API against a real broker: writes read back byte for byte, Java-equal
//! partitioning, batches, dedupe, latest, bad input, metrics and OpenAPI.

mod common;

use common::{event, header, read_all, read_at, TestGateway};
use rdkafka::message::Message;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_event_is_read_back_byte_for_byte_at_the_returned_position() {
    let gw = TestGateway::start(|_| {}).await;
    let body = json!({
        "event_id": "evt-roundtrip",
        "timestamp": "2026-11-30T13:00:00.5+01:00",
        "event_type": "page_view",
        "user_id": "user-77",
        "payload": {"url": "/cart", "items": [1, 2], "price": 9.5},
        "metadata": {"source": "web"}
    });
    let before = chrono::Utc::now().timestamp_millis();
    let (status, resp) = gw.post(&gw.topics.click, &body).await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["status"], "accepted");
    assert_eq!(resp["event_id"], "evt-roundtrip");
    // "user-77" lands on partition 15 of 24 with the Java client's partitioner.
    assert_eq!(resp["partition"], 15);
    let offset = resp["offset"].as_i64().expect("offset");

    let m = read_at(&gw.bootstrap, &gw.topics.click, 15, offset);
    let expected = r#"{"event_id":"evt-roundtrip","timestamp":"2026-11-30T12:00:00.500Z","event_type":"page_view","user_id":"user-77","payload":{"items":[1,2],"price":9.5,"url":"/cart"},"metadata":{"source":"web"}}"#;
    assert_eq!(std::str::from_utf8(m.payload().expect("value")).expect("utf-8"), expected);
    assert_eq!(m.key(), Some(&b"user-77"[..]));
    assert_eq!(header(&m, "event_type").as_deref(), Some("page_view"));
    assert_eq!(header(&m, "content_type").as_deref(), Some("application/json"));
    let ingest = header(&m, "ingest_time").expect("ingest_time header");
    let ingest_ms =
        chrono::DateTime::parse_from_rfc3339(&ingest).expect("RFC 3339").timestamp_millis();
    let after = chrono::Utc::now().timestamp_millis();
    assert!((before..=after).contains(&ingest_ms), "ingest time {ingest} is when we posted");
    assert_eq!(m.timestamp().to_millis(), Some(ingest_ms), "record timestamp is the ingest time");
    gw.shutdown().await;
}

/// key, partition of 12, partition of 24 — computed with the Java client's
/// `Utils.toPositive(Utils.murmur2(key)) % n` (kafka-clients 4.3.1).
const JAVA_PARTITIONS: &[(&str, i32, i32)] = &[
    ("device-0001", 3, 15),
    ("device-0042", 10, 10),
    ("user-1", 8, 20),
    ("user-77", 3, 15),
    ("user-123456", 9, 21),
    ("abcd", 8, 20),
    ("21", 0, 12),
    ("ünïcødé-κλειδί", 6, 6),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_where_the_java_client_puts_them() {
    let gw = TestGateway::start(|_| {}).await;
    for (i, &(key, p12, p24)) in JAVA_PARTITIONS.iter().enumerate() {
        let (status, resp) = gw.post(&gw.topics.click, &event(&format!("c{i}"), key)).await;
        assert_eq!(status, 201, "{resp}");
        assert_eq!(resp["partition"], p24, "clickstream key {key:?}");
        assert_eq!(tributary_core::murmur2_partition(key.as_bytes(), 24), Some(p24));

        // IoT events are keyed by device_id, here taken from the payload.
        let iot = json!({
            "event_id": format!("d{i}"), "timestamp": 1_764_504_000_000i64,
            "event_type": "temperature", "payload": {"device_id": key, "value": 21.5}
        });
        let (status, resp) = gw.post(&gw.topics.iot, &iot).await;
        assert_eq!(status, 201, "{resp}");
        assert_eq!(resp["partition"], p12, "iot key {key:?}");
    }

    // The real Java producer, fed the same keys on a topic of the same shape, agrees.
    let java_topic = format!("{}-java", gw.topics.click);
    let kafka = tributary_kafka::KafkaConfig {
        bootstrap_servers: gw.bootstrap.clone(),
        ..Default::default()
    };
    let catalog = tributary_core::Catalog::new(vec![tributary_core::TopicSpec {
        name: java_topic.clone(),
        partitions: 24,
        replication_factor: None,
        key_field: None,
        require_key: false,
        role: tributary_core::TopicRole::Source,
        value_format: tributary_core::ValueFormat::Json,
        configs: Default::default(),
    }])
    .expect("catalog");
    tributary_kafka::apply_topics(&kafka, &catalog, Duration::from_secs(30)).await.expect("topic");
    let input: String = JAVA_PARTITIONS.iter().map(|(k, _, _)| format!("{k}|v\n")).collect();
    let script = tributary_test_support::repo_root().join("deploy/kafka/kafka.sh");
    let mut child = std::process::Command::new("bash")
        .args([
            script.as_os_str().to_str().expect("utf-8 path"),
            "tool",
            "kafka-console-producer",
            "--bootstrap-server",
            &gw.bootstrap,
            "--topic",
            &java_topic,
        ])
        .args(["--property", "parse.key=true", "--property", "key.separator=|"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("starting kafka-console-producer");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
        .expect("feed keys");
    assert!(child.wait().expect("producer exits").success(), "kafka-console-producer failed");
    let records = read_all(&gw.bootstrap, &java_topic);
    assert_eq!(records.len(), JAVA_PARTITIONS.len());
    for m in records {
        let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8");
        let (_, _, p24) = JAVA_PARTITIONS.iter().find(|(k, _, _)| *k == key).expect("known key");
        assert_eq!(m.partition(), *p24, "Java put {key:?} on {}", m.partition());
    }
    common::delete_topics(&gw.bootstrap, &[&java_topic]).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_rejects_bad_events_one_by_one_and_writes_the_good_ones() {
    let gw = TestGateway::start(|_| {}).await;
    let mut no_ts = event("b-2", "u2");
    no_ts.as_object_mut().expect("object").remove("timestamp");
    let mut bad_payload = event("b-4", "u4");
    bad_payload["payload"] = json!("not an object");
    let mut no_key = event("b-5", "u5");
    no_key.as_object_mut().expect("object").remove("user_id");
    let mut conflicting = event("b-3", "u3");
    conflicting["payload"] = json!({"different": true});
    let batch = json!([
        event("b-1", "u1"),
        no_ts,
        event("b-3", "u3"),
        bad_payload,
        no_key,
        event("b-1", "u1"),
        conflicting,
        42
    ]);
    let r = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{}/batch", gw.topics.tx)))
        .json(&batch)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let resp: Value = r.json().await.expect("json");
    let results = resp["results"].as_array().expect("results");
    let statuses: Vec<&str> =
        results.iter().map(|r| r["status"].as_str().expect("status")).collect();
    assert_eq!(
        statuses,
        [
            "accepted",
            "rejected",
            "accepted",
            "rejected",
            "rejected",
            "duplicate",
            "rejected",
            "rejected"
        ]
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    assert_eq!(results[1]["error"], "validation_failed");
    assert_eq!(results[1]["field"], "timestamp");
    assert_eq!(results[3]["field"], "payload");
    assert_eq!(results[4]["error"], "missing_key");
    assert_eq!(results[4]["field"], "user_id");
    assert_eq!(results[6]["error"], "event_id_conflict");
    assert_eq!(results[7]["field"], "$");
    assert_eq!(results[5]["partition"], results[0]["partition"]);
    assert_eq!(results[5]["offset"], results[0]["offset"]);
    assert_eq!(
        (resp["accepted"].as_u64(), resp["duplicates"].as_u64(), resp["rejected"].as_u64()),
        (Some(2), Some(1), Some(5))
    );

    let records = read_all(&gw.bootstrap, &gw.topics.tx);
    let ids: HashSet<String> = records
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(m.payload().expect("value")).expect("json")["event_id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(records.len(), 2, "only the two good, distinct events were written");
    assert_eq!(ids, HashSet::from(["b-1".to_owned(), "b-3".to_owned()]));
    for r in &results[..3] {
        if r["status"] == "accepted" {
            let m = read_at(
                &gw.bootstrap,
                &gw.topics.tx,
                r["partition"].as_i64().expect("p") as i32,
                r["offset"].as_i64().expect("o"),
            );
            let v: Value = serde_json::from_slice(m.payload().expect("value")).expect("json");
            assert_eq!(v["event_id"], r["event_id"]);
        }
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_the_order_of_same_key_events() {
    let gw = TestGateway::start(|_| {}).await;
    let batch: Vec<Value> = (0..300).map(|i| event(&format!("o{i}"), "one-user")).collect();
    let r = gw
        .http
        .post(gw.url(&format!("/api/v1/events/{}/batch", gw.topics.click)))
        .json(&batch)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    let resp: Value = r.json().await.expect("json");
    let results = resp["results"].as_array().expect("results");
    assert_eq!(resp["accepted"], 300);
    let partition = &results[0]["partition"];
    for (i, r) in results.iter().enumerate() {
        assert_eq!(&r["partition"], partition, "one key, one partition");
        assert_eq!(r["offset"].as_i64(), Some(i as i64), "array order is log order");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_within_the_dedupe_window_write_nothing_new() {
    let gw = TestGateway::start(|c| c.dedupe_window_secs = 2).await;
    let topic = gw.topics.click.clone();
    let e = event("dup-1", "user-1");
    let (s1, r1) = gw.post(&topic, &e).await;
    assert_eq!(s1, 201, "{r1}");
    let (s2, r2) = gw.post(&topic, &e).await;
    assert_eq!(s2, 200, "{r2}");
    assert_eq!(r2["status"], "duplicate");
    assert_eq!((&r2["partition"], &r2["offset"]), (&r1["partition"], &r1["offset"]));
    // Same id, different content: refused, not silently treated as the same event.
    let mut changed = e.clone();
    changed["payload"] = json!({"url": "/other"});
    let (s3, r3) = gw.post(&topic, &changed).await;
    assert_eq!((s3, r3["error"].as_str()), (409, Some("event_id_conflict")));
    // The same id on another topic is another event.
    let (s4, _) = gw.post(&gw.topics.tx, &e).await;
    assert_eq!(s4, 201);
    assert_eq!(gw.end_offsets(&topic), 1, "one record for three posts");

    // Concurrent retries of one new event: one write, everyone gets its position.
    let e2 = event("dup-2", "user-2");
    let posts = (0..8).map(|_| gw.post(&topic, &e2));
    let answers = futures::future::join_all(posts).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    let positions: HashSet<(i64, i64)> = answers
        .iter()
        .map(|(_, r)| (r["partition"].as_i64().expect("p"), r["offset"].as_i64().expect("o")))
        .collect();
    assert_eq!(positions.len(), 1, "all answers name the same record");
    assert_eq!(gw.end_offsets(&topic), 2);

    // After the window, the id is forgotten and a post writes again.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let (s5, r5) = gw.post(&topic, &e).await;
    assert_eq!(s5, 201, "{r5}");
    assert_ne!(r5["offset"], r1["offset"]);
    assert_eq!(gw.end_offsets(&topic), 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_returns_the_newest_committed_events_newest_first() {
    let gw = TestGateway::start(|_| {}).await;
    let topic = gw.topics.tx.clone();
    let (status, resp) = gw.get(&format!("/api/v1/events/{topic}/latest")).await;
    assert_eq!(status, 200);
    assert_eq!(resp["events"], json!([]), "empty topic, no events");
    for i in 0..6 {
        let (s, _) = gw.post(&topic, &event(&format!("l{i}"), &format!("user-{i}"))).await;
        assert_eq!(s, 201);
        // Record timestamps have millisecond resolution; keep the six apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, resp) = gw.get(&format!("/api/v1/events/{topic}/latest?limit=4")).await;
    assert_eq!(status, 200, "{resp}");
    let ids: Vec<&str> = resp["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"]["event_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["l5", "l4", "l3", "l2"]);
    let first = &resp["events"][0];
    assert!(first["partition"].is_i64() && first["offset"].is_i64(), "{first}");
    assert_eq!(first["key"], "user-5");
    assert_eq!(first["headers"]["event_type"], "page_view");

    for bad in ["limit=0", "limit=100000", "limit=abc"] {
        let (status, resp) = gw.get(&format!("/api/v1/events/{topic}/latest?{bad}")).await;
        assert_eq!((status, resp["error"].as_str()), (400, Some("invalid_parameter")), "{bad}");
    }
    // Read-only topics can be read.
    let (status, _) = gw.get(&format!("/api/v1/events/{}/latest", gw.topics.dlq)).await;
    assert_eq!(status, 200);
    let (status, resp) = gw.get("/api/v1/events/no.such.topic/latest").await;
    assert_eq!((status, resp["error"].as_str()), (404, Some("unknown_topic")));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_input_gets_its_error_and_writes_nothing() {
    let gw = TestGateway::start(|_| {}).await;
    let topic = gw.topics.click.clone();
    let url = gw.url(&format!("/api/v1/events/{topic}"));
    let send = |body: Vec<u8>, ct: &'static str| {
        let req = gw.http.post(&url).header("content-type", ct).body(body);
        async move {
            let r = req.send().await.expect("POST");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("JSON error body"))
        }
    };
    let mut no_type = event("x1", "u");
    no_type.as_object_mut().expect("object").remove("event_type");
    let mut bad_ts = event("x2", "u");
    bad_ts["timestamp"] = json!("last tuesday");
    let big = {
        let mut e = event("x3", "u");
        e["payload"] = json!({"blob": "x".repeat(1024 * 1024)});
        serde_json::to_vec(&e).expect("json")
    };
    // name, (status, body) answered, expected status, expected code, expected field
    type Case<'a> = (&'a str, (u16, Value), u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "malformed",
            send(br#"{"event_id": "#.to_vec(), "application/json").await,
            400,
            "malformed_json",
            None,
        ),
        (
            "missing",
            send(serde_json::to_vec(&no_type).expect("json"), "application/json").await,
            422,
            "validation_failed",
            Some("event_type"),
        ),
        (
            "ill-typed",
            send(serde_json::to_vec(&bad_ts).expect("json"), "application/json").await,
            422,
            "validation_failed",
            Some("timestamp"),
        ),
        ("too large", send(big, "application/json").await, 413, "payload_too_large", None),
        (
            "content type",
            send(serde_json::to_vec(&event("x4", "u")).expect("json"), "text/plain").await,
            415,
            "unsupported_media_type",
            None,
        ),
    ];
    for (name, (status, body), want_status, want_code, want_field) in cases {
        assert_eq!(status, want_status, "{name}: {body}");
        assert_eq!(body["error"], want_code, "{name}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}: message");
        assert_eq!(body["field"].as_str(), want_field, "{name}");
    }
    let (status, body) = gw.post("no.such.topic", &event("x5", "u")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("unknown_topic")));
    let (status, body) = gw.post(&gw.topics.dlq, &event("x6", "u")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("topic_not_writable")));

    let batch_url = gw.url(&format!("/api/v1/events/{topic}/batch"));
    let r = gw.http.post(&batch_url).json(&json!({"events": []})).send().await.expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "not_an_array");
    let r = gw
        .http
        .post(&batch_url)
        .header("content-type", "application/json")
        .body(r#"[{"event_id": "x7"}, {"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "malformed_json");
    // An item JSON refuses (a lone surrogate) makes the whole batch malformed: nothing of it is
    // written (the count at the end covers it).
    let good = serde_json::to_string(&event("x8", "u")).expect("json");
    let bad = r#"{"event_id":"x9","timestamp":1,"event_type":"t","payload":{"s":"\ud800"}}"#;
    let r = gw
        .http
        .post(&batch_url)
        .header("content-type", "application/json")
        .body(format!("[{good},{bad}]"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "malformed_json");
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    let r = gw.http.post(&batch_url).json(&too_many).send().await.expect("POST");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "batch_too_large");

    let (status, body) = gw.get("/api/v1/nothing/here").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let r = gw.http.delete(gw.url("/api/v1/health")).send().await.expect("DELETE");
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "method_not_allowed");

    assert_eq!(gw.end_offsets(&topic), 0, "nothing was written for rejected input");
    assert_eq!(gw.end_offsets(&gw.topics.dlq), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_openapi_describe_the_service() {
    let gw = TestGateway::start(|_| {}).await;
    let topic = gw.topics.iot.clone();
    for i in 0..3 {
        let e = json!({"event_id": format!("m{i}"), "timestamp": 1_764_504_000_000i64, "event_type": "t", "device_id": "d-1", "payload": {"value": i}});
        assert_eq!(gw.post(&topic, &e).await.0, 201);
    }
    let (status, health) = gw.get("/api/v1/health").await;
    assert_eq!((status, health["kafka"].as_str()), (200, Some("up")), "{health}");

    let text =
        gw.http.get(gw.url("/metrics")).send().await.expect("GET").text().await.expect("text");
    assert!(
        text.contains(&format!("kafka_producer_records_total{{topic=\"{topic}\"}} 3")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("api_request_duration_seconds_bucket")
            && l.contains("route=\"/api/v1/events/{topic}\"")
            && l.contains("method=\"POST\"")
            && l.contains("status=\"201\"")),
        "{text}"
    );
    assert!(text.contains("kafka_producer_errors_total{"), "{text}");

    let (status, summary) = gw.get("/api/v1/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(summary["topics"][&topic]["produced"], 3, "{summary}");

    let (status, doc) = gw.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/events/{topic}",
        "/api/v1/events/{topic}/batch",
        "/api/v1/events/{topic}/latest",
        "/api/v1/stream/{topic}",
        "/api/v1/health",
        "/api/v1/health/live",
        "/api/v1/health/ready",
        "/api/v1/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    assert!(doc["components"]["schemas"]["EventResponse"].is_object());

    // A catalog topic missing on the cluster makes the gateway unhealthy, and says which.
    common::delete_topics(&gw.bootstrap, &[&gw.topics.tx]).await;
    let reason = tributary_test_support::wait_for(
        "health to notice the missing topic",
        Duration::from_secs(15),
        || async {
            let (status, h) = gw.get("/api/v1/health").await;
            (status == 503).then(|| h["reason"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert!(reason.contains(&gw.topics.tx) && reason.contains("topics apply"), "{reason}");
    gw.shutdown().await;
}
