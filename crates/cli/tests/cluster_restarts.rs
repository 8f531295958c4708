//! Restarts on the production-shaped cluster (three KRaft nodes, SASL_SSL/SCRAM, RF 3,
//! `min.insync.replicas=2`, ACLs), with the gateway taking writes and the processor and the
//! sink running as their own users: every event acknowledged is stored once, every window
//! result is exact and once, every warehouse row is there once (`Platform::check_exact`).

use std::time::{Duration, Instant};
use tributary_test_support::load::Load;
use tributary_test_support::platform::{exclusive, Platform};
use tributary_test_support::Faults;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// Load while it lasts: three writers, each an event every 20 ms at most.
fn load(base: &str, topic: &str) -> Load {
    Load::start(&[base.to_owned()], topic, 3, Duration::from_millis(20))
}

/// Issue 10, scenario 6: every broker stopped and started again, one at a time, each back in
/// sync before the next goes (a rolling restart, as an upgrade does it), while everything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_broker_loses_and_doubles_nothing() {
    let _one = exclusive().await;
    let started = Instant::now();
    let p = Platform::new(BIN);
    let (_processor, _) = p.processor(0);
    let _sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    let load = load(&base, &p.topic);
    let mut faults = Faults::new(&p.cluster);
    for node in 1..=3u8 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let node_started = Instant::now();
        let synced = tokio::task::block_in_place(|| {
            faults.stop(node);
            faults.start(node);
            p.wait_fully_replicated(Duration::from_secs(120))
        });
        eprintln!(
            "node {node} restarted and in sync in {:?} ({synced:?} to catch up)",
            node_started.elapsed()
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(faults);
    let exact = p.finish(load, &base).await;
    eprintln!("rolling restart: {exact:?}, took {:?}", started.elapsed());
}

/// Issue 10, scenario 7: the sink stopped with SIGTERM and started again mid-load, and the
/// registry restarted while the gateway writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_and_the_registry_restart_mid_load_without_loss_or_doubles() {
    let _one = exclusive().await;
    let started = Instant::now();
    let p = Platform::new(BIN);
    let mut registry = p.registry();
    let (_processor, _) = p.processor(0);
    let mut sink = p.sink();
    let (_gateway, base) = p.gateway("gateway");
    let load = load(&base, &p.topic);
    // Writes to an Avro topic need its schema: the gateway registers it on the first write
    // and keeps what it learned while the registry is away.
    let avro =
        Load::start(std::slice::from_ref(&base), &p.avro_topic, 1, Duration::from_millis(20));

    tokio::time::sleep(Duration::from_secs(4)).await;
    sigterm(&mut sink.0, "sink");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _sink = tokio::task::block_in_place(|| p.sink());

    tokio::time::sleep(Duration::from_secs(3)).await;
    sigterm(&mut registry.0, "registry");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _registry = tokio::task::block_in_place(|| p.registry());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let avro = avro.stop().await;
    p.check_stored_once(&p.avro_topic, &avro);
    let exact = p.finish(load, &base).await;
    eprintln!(
        "sink and registry restarts: {exact:?}, {} Avro events, took {:?}",
        avro.len(),
        started.elapsed()
    );
    assert!(avro.len() > 50, "the Avro load kept writing");
    let waited: u32 = avro.iter().map(|a| a.unavailable).sum();
    assert_eq!(waited + exact.unavailable, 0, "no write waited for the registry");
}

/// Stops `child` with SIGTERM and waits (30 s at most) for it to exit cleanly.
fn sigterm(child: &mut std::process::Child, what: &str) {
    tributary_test_support::cluster::signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            assert!(status.success(), "{what} exited with {status} after SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "{what} still running 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}
