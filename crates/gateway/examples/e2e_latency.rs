//! End-to-end latency through a running gateway: events are POSTed one by one at a fixed rate
//! (an open loop: a slow answer does not delay the next send) and timed until
//!
//! - the gateway answers `201` (Kafka acknowledged the write with `acks=all`),
//! - a Kafka consumer (`read_committed`, no group, assigned at the end of every partition) reads
//!   the record, and
//! - a WebSocket client of the gateway's own `/api/v1/stream/{topic}` receives its frame.
//!
//! All three clocks are this process's monotonic clock, so no clock skew enters. Each event has
//! its own `user_id` (the key of `events.clickstream`), so the events spread over all partitions.
//!
//! ```sh
//! cargo run --release -p tributary-gateway --example e2e_latency -- \
//!   [--gateway http://127.0.0.1:8080] [--bootstrap 127.0.0.1:9092] \
//!   [--topic events.clickstream] [--rate 1000] [--seconds 30]
//! ```
//!
//! `bench/e2e.sh` runs it next to Kafka's own `EndToEndLatency` tool; docs/performance.md has the
//! method and the numbers.

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as Frame;

/// When each event was sent, acknowledged, read from Kafka and received on the stream.
#[derive(Default, Clone, Copy)]
struct Times {
    sent: Option<Instant>,
    acked: Option<Instant>,
    kafka: Option<Instant>,
    stream: Option<Instant>,
}

struct Args {
    gateway: String,
    bootstrap: String,
    topic: String,
    rate: u64,
    seconds: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        gateway: "http://127.0.0.1:8080".into(),
        bootstrap: "127.0.0.1:9092".into(),
        topic: "events.clickstream".into(),
        rate: 1_000,
        seconds: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--gateway" => a.gateway = value.trim_end_matches('/').to_owned(),
            "--bootstrap" => a.bootstrap = value,
            "--topic" => a.topic = value,
            "--rate" => a.rate = number()?.max(1),
            "--seconds" => a.seconds = number()?.max(1),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

/// The key of event `n` of run `run`, and back.
fn key(run: &str, n: usize) -> String {
    format!("e2e-{run}-{n}")
}

fn index(run: &str, key: &[u8]) -> Option<usize> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix("e2e-")?
        .strip_prefix(run)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// A consumer positioned at the current end of every partition of `topic`.
fn consumer_at_end(bootstrap: &str, topic: &str) -> Result<BaseConsumer, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tributary-e2e-latency")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(format!("topic {topic} has no partitions (is the platform up?)"));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("offsets of {topic} [{p}]: {e}"))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    Ok(consumer)
}

/// `q`-quantile (nearest rank) of sorted `v`, in ms.
fn quantile(v: &[Duration], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1_000.0
}

fn report(what: &str, mut v: Vec<Duration>, of: usize) {
    if v.is_empty() {
        println!("{what:<34} 0 of {of}");
        return;
    }
    v.sort();
    println!(
        "{what:<34} {:>6} of {of}  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        v.len(),
        quantile(&v, 0.50),
        quantile(&v, 0.95),
        quantile(&v, 0.99),
        quantile(&v, 1.0),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let a = args()?;
    let total = usize::try_from(a.rate * a.seconds).map_err(|e| e.to_string())?;
    // Tells this run's events from any other's on the topic.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let run = format!("{:x}{nanos:x}", std::process::id());
    let times = Arc::new(Mutex::new(vec![Times::default(); total]));
    let done = Arc::new(AtomicBool::new(false));

    // The WebSocket stream, on a thread and runtime of its own (so the sender's tasks do not
    // delay its reads), open — its `subscribed` frame received — before the first send.
    let ws_url =
        format!("{}/api/v1/stream/{}?from=latest", a.gateway.replacen("http", "ws", 1), a.topic);
    let (opened_tx, opened) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let stream_times = Arc::clone(&times);
    let stream_done = Arc::clone(&done);
    let stream_run = run.clone();
    let stream = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let Ok(rt) = rt else { return };
        rt.block_on(async move {
            let mut ws = match tokio_tungstenite::connect_async(&ws_url).await {
                Ok((ws, _)) => ws,
                Err(e) => {
                    let _ = opened_tx.send(Err(format!("{ws_url}: {e}")));
                    return;
                }
            };
            match ws.next().await {
                Some(Ok(Frame::Text(t))) if t.contains("\"subscribed\"") => {
                    let _ = opened_tx.send(Ok(()));
                }
                other => {
                    let _ = opened_tx
                        .send(Err(format!("expected the subscribed frame, got {other:?}")));
                    return;
                }
            }
            while !stream_done.load(Ordering::Relaxed) {
                let next = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
                let Ok(Some(Ok(frame))) = next else {
                    if matches!(next, Ok(None | Some(Err(_)))) {
                        return;
                    }
                    continue;
                };
                let at = Instant::now();
                let Frame::Text(text) = frame else { continue };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                let Some(k) = v["key"].as_str() else { continue };
                if let Some(i) = index(&stream_run, k.as_bytes()) {
                    if let Some(t) = stream_times.lock().expect("times").get_mut(i) {
                        t.stream.get_or_insert(at);
                    }
                }
            }
        });
    });
    opened.await.map_err(|_| "the stream thread ended".to_owned())??;

    // The Kafka consumer, on a thread of its own, positioned before the first send.
    let consumer = consumer_at_end(&a.bootstrap, &a.topic)?;
    let kafka_times = Arc::clone(&times);
    let kafka_done = Arc::clone(&done);
    let kafka_run = run.clone();
    let kafka = std::thread::spawn(move || {
        while !kafka_done.load(Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else { continue };
            let at = Instant::now();
            if let Some(i) = m.key().and_then(|k| index(&kafka_run, k)) {
                if let Some(t) = kafka_times.lock().expect("times").get_mut(i) {
                    t.kafka.get_or_insert(at);
                }
            }
        }
    });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{}/api/v1/events/{}", a.gateway, a.topic);
    let start = Instant::now();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut sends = Vec::with_capacity(total);
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / a.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, times, failures) =
            (client.clone(), url.clone(), Arc::clone(&times), Arc::clone(&failures));
        let k = key(&run, n);
        sends.push(tokio::spawn(async move {
            let body = serde_json::json!({
                "event_id": k,
                "event_type": "page_view",
                "timestamp": chrono::Utc::now().to_rfc3339(),
                "user_id": k,
                "payload": {"page": "/e2e"},
            });
            times.lock().expect("times")[n].sent = Some(Instant::now());
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    times.lock().expect("times")[n].acked = Some(Instant::now());
                }
                Ok(r) => failures.lock().expect("failures").push(format!("{}", r.status())),
                Err(e) => failures.lock().expect("failures").push(e.to_string()),
            }
        }));
    }
    let sending = start.elapsed();
    for s in sends {
        let _ = s.await;
    }
    // Whatever was acknowledged arrives within a few seconds, or is reported missing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let all = times
            .lock()
            .expect("times")
            .iter()
            .all(|t| t.acked.is_none() || (t.kafka.is_some() && t.stream.is_some()));
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    let _ = kafka.join();
    let _ = stream.join();

    let t = times.lock().expect("times").clone();
    let since = |f: fn(&Times) -> Option<Instant>| -> Vec<Duration> {
        t.iter().filter_map(|x| Some(f(x)?.saturating_duration_since(x.sent?))).collect()
    };
    let failed = failures.lock().expect("failures").clone();
    println!(
        "sent {total} events to {} in {:.1} s ({:.0}/s asked, {:.0}/s sent); {} failed{}",
        a.topic,
        sending.as_secs_f64(),
        a.rate,
        total as f64 / sending.as_secs_f64(),
        failed.len(),
        failed.first().map(|f| format!(" (first: {f})")).unwrap_or_default()
    );
    let acked = t.iter().filter(|x| x.acked.is_some()).count();
    report("POST answered 201", since(|x| x.acked), total);
    report("read by a Kafka consumer", since(|x| x.kafka), acked);
    report("received on the WebSocket stream", since(|x| x.stream), acked);
    if acked < total
        || t.iter().any(|x| x.acked.is_some() && (x.kafka.is_none() || x.stream.is_none()))
    {
        return Err("some events failed or never arrived".into());
    }
    Ok(())
}
