//! The recorder keeps every histogram sample until something drains it. Without a Prometheus
//! scraping `/metrics`, a busy gateway records a duration for every request: the samples must
//! be folded into the histogram's buckets by the recorder's upkeep, or memory grows for ever.

use std::time::{Duration, Instant};

/// The allocator the services run with (crates/cli), which gives freed memory back.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This process's resident memory, in MiB.
fn resident_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("rss");
    pages * 4096 / (1 << 20)
}

#[test]
fn histogram_samples_do_not_pile_up_without_a_scrape() {
    const NAME: &str = "upkeep_test_seconds";
    let _ = tributary_ops::prometheus(&[(NAME, &[0.001, 0.01, 0.1])]);
    let histogram = metrics::histogram!(NAME);
    let before = resident_mib();
    // A million samples a second for 14 s, nobody scraping: kept, they take about 16 bytes
    // each, 200 MiB in all; drained every few seconds, the same memory is used again.
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(14) {
        for _ in 0..100_000 {
            histogram.record(f64::from(i % 100) / 1000.0);
            i = i.wrapping_add(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = resident_mib().saturating_sub(before);
    eprintln!("{i} samples in 14 s, no scrape: {grown} MiB more resident");
    assert!(
        grown < 140,
        "{grown} MiB more resident after {i} samples: they are not drained without a scrape"
    );
}
