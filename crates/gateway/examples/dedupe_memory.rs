//! What the dedupe window costs per remembered id: fills a window with distinct ids the way
//! the gateway does (reserve, then settle with a position) and prints the heap the window holds
//! and the growth of this process's resident memory (VmRSS); then writes as many new ids again
//! into the full window, each looked up first as the batch endpoint does, and prints the time
//! per id (a lookup, a reservation, the oldest id forgotten and the new one remembered).
//!
//! ```sh
//! cargo run --release -p tributary-gateway --example dedupe_memory -- [ids (1000000)]
//! ```
//!
//! docs/performance.md has the numbers: the memory under "A leaner gateway", the time per id
//! under "Batch ingest".

use std::time::{Duration, Instant};
use tributary_gateway::dedupe::{Begin, Dedupe};
use tributary_kafka::Delivered;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let before = rss_kib();
    let window = Dedupe::new(Duration::from_secs(600), n);
    for i in 0..n {
        let id = format!("b-bench-1-{i}");
        if let Begin::New(guard) = window.begin(Dedupe::key("events.clickstream", &id), i as u64) {
            guard.complete(Ok(Delivered { partition: (i % 24) as i32, offset: i as i64 }));
        }
    }
    let grown = rss_kib().saturating_sub(before) * 1024;
    let ids = window.len();
    let heap = window.heap_bytes();
    let started = Instant::now();
    for i in n..2 * n {
        let key = Dedupe::key("events.clickstream", &format!("b-bench-1-{i}"));
        if window.written(key, i as u64).is_some() {
            continue;
        }
        if let Begin::New(guard) = window.begin(key, i as u64) {
            guard.complete(Ok(Delivered { partition: (i % 24) as i32, offset: i as i64 }));
        }
    }
    let full_ns = started.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!(
        "ids={ids} heap_bytes={heap} heap_bytes_per_id={:.1} rss_growth_bytes={grown} rss_bytes_per_id={:.1} full_window_ns_per_id={full_ns:.0}",
        heap as f64 / ids.max(1) as f64,
        grown as f64 / ids.max(1) as f64
    );
}
