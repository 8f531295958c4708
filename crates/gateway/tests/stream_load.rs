//! Load harness for live streams (`bench/streams.sh`, docs/performance.md "Live streams"):
//! opens `LOAD_STREAMS` WebSocket streams in one burst against a gateway in a child process,
//! writes events meanwhile, and prints what the gateway did. Both tests are `#[ignore]`d: they
//! measure, they do not gate CI.
//!
//! `stream_burst` re-runs this test binary as `load_gateway_child`, so the gateway's resident
//! memory and thread count (`/proc/<pid>/status`) are its own, without the clients'.
//!
//! Settings (environment): `LOAD_STREAMS` (default 400), `LOAD_EVENTS` written while the streams
//! are open (default 100), `LOAD_WRITE_INTERVAL_MS` between writes (default 50), `LOAD_FROM`
//! (`latest`, the default, or `earliest`: every stream catches up through the reader pool).

mod common;

use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

const CHILD_ENV: &str = "TRIBUTARY_LOAD_CHILD";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The gateway under load: started by `stream_burst`, stopped when its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by stream_burst"]
async fn load_gateway_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    // Every client of the harness comes from 127.0.0.1, and without auth the per-principal
    // cap counts per address: lift it to the total cap, which is what is measured here.
    let gw =
        common::TestGateway::start(|c| c.ws_max_streams_per_principal = c.ws_max_streams).await;
    println!("LOAD_GATEWAY {} {} {}", gw.addr, gw.topics.click, std::process::id());
    let _ = tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await;
    gw.shutdown().await;
}

/// `VmRSS` in KiB and `Threads` of process `pid`.
fn proc_status(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one stream client saw.
#[derive(Default)]
struct Seen {
    /// Delivery latency of each event frame, in microseconds (write start to frame received).
    latencies_us: Vec<u64>,
    /// The stream ended with an error frame before the gateway shut down.
    closed_early: bool,
}

/// Opens one stream; `Err` holds the refusal (HTTP status, or the error text).
async fn open_stream(
    url: String,
    epoch: Instant,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let connect = tokio_tungstenite::connect_async(url);
    let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(60), connect).await {
        Err(_) => return Err("timeout".into()),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            return Err(r.status().as_u16().to_string())
        }
        Ok(Err(e)) => return Err(format!("{e}").chars().take(40).collect()),
        Ok(Ok(ws)) => ws,
    };
    // The first text frame is `subscribed` (a catching-up stream may be pinged before it).
    loop {
        match tokio::time::timeout(Duration::from_secs(120), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("subscribed") => break,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => {
                return Err(format!("no subscribed frame: {other:?}").chars().take(60).collect())
            }
        }
    }
    Ok(tokio::spawn(async move {
        let mut mine = Seen::default();
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let now = epoch.elapsed().as_micros() as u64;
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    if let Some(sent) = v["event"]["payload"]["sent_us"].as_u64() {
                        mine.latencies_us.push(now.saturating_sub(sent));
                    } else if v["type"] == "error" && v["error"] != "shutting_down" {
                        mine.closed_early = true;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        seen.lock().await.push(mine);
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/streams.sh runs it"]
async fn stream_burst() {
    let n = env_or("LOAD_STREAMS", 400) as usize;
    let events = env_or("LOAD_EVENTS", 100);
    let interval = Duration::from_millis(env_or("LOAD_WRITE_INTERVAL_MS", 50));
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args(["--ignored", "--exact", "load_gateway_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway child starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.expect("child output") {
            if let Some((_, rest)) = l.split_once("LOAD_GATEWAY ") {
                return rest.to_owned();
            }
        }
        panic!("the gateway child ended before it was ready");
    })
    .await
    .expect("gateway child ready within 60 s");
    let parts: Vec<&str> = ready.split_whitespace().collect();
    let (addr, topic, pid) =
        (parts[0].to_owned(), parts[1].to_owned(), parts[2].parse().expect("pid"));
    let (rss_idle, threads_idle) = proc_status(pid);

    let epoch = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let from = std::env::var("LOAD_FROM").unwrap_or_else(|_| "latest".to_owned());
    let url = format!("ws://{addr}/api/v1/stream/{topic}?from={from}");
    let opens: Vec<_> =
        (0..n).map(|_| tokio::spawn(open_stream(url.clone(), epoch, seen.clone()))).collect();
    let mut peak = (0u64, 0u64);
    let sample = |peak: &mut (u64, u64)| {
        let (r, t) = proc_status(pid);
        *peak = (peak.0.max(r), peak.1.max(t));
    };
    let mut readers = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for open in opens {
        match open.await.expect("open task") {
            Ok(reader) => readers.push(reader),
            Err(why) => *refused.entry(why).or_default() += 1,
        }
        sample(&mut peak);
    }
    let burst = epoch.elapsed();
    let (rss_open, threads_open) = proc_status(pid);

    let http = reqwest::Client::new();
    let mut write_ms = Vec::new();
    let mut write_errors = 0;
    for i in 0..events {
        let sent_us = epoch.elapsed().as_micros() as u64;
        let body = json!({"event_id": format!("load-{i}"), "timestamp": "2026-11-30T12:00:00Z",
            "event_type": "page_view", "user_id": format!("user-{i}"),
            "payload": {"sent_us": sent_us}});
        let t = Instant::now();
        let r = http.post(format!("http://{addr}/api/v1/events/{topic}")).json(&body).send().await;
        write_ms.push(t.elapsed().as_millis() as u64);
        if !r.is_ok_and(|r| r.status().as_u16() == 201) {
            write_errors += 1;
        }
        sample(&mut peak);
        tokio::time::sleep(interval).await;
    }
    // Let the last events arrive, then close every stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sample(&mut peak);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
    }
    let seen = seen.lock().await;
    let mut lat: Vec<u64> = seen.iter().flat_map(|s| s.latencies_us.iter().copied()).collect();
    lat.sort_unstable();
    write_ms.sort_unstable();
    let expected = seen.len() as u64 * (events - write_errors);
    let ended_early = seen.iter().filter(|s| s.closed_early).count();
    println!(
        "| streams asked | opened | refused | burst s | RSS idle MiB | RSS open MiB | RSS peak MiB \
         | threads idle/open/peak | writes p50/p99/max ms | write errors | delivered/expected \
         | delivery p50/p99/max ms | ended early |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {} | {refused:?} | {:.1} | {} | {} | {} | {threads_idle}/{threads_open}/{} \
         | {}/{}/{} | {write_errors} | {}/{expected} | {:.0}/{:.0}/{:.0} | {ended_early} |",
        seen.len(),
        burst.as_secs_f64(),
        rss_idle / 1024,
        rss_open / 1024,
        peak.0 / 1024,
        peak.1,
        percentile(&write_ms, 0.5),
        percentile(&write_ms, 0.99),
        write_ms.last().copied().unwrap_or(0),
        lat.len(),
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}
