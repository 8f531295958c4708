//! `tributary gen`: synthetic traffic for the three sources, so a user sees windows, enrichment
//! and the dead-letter queue at work within a minute or two.
//!
//! Valid, late and clock-skewed events go through the gateway's batch endpoint, as a real
//! producer's would. Records the gateway would refuse (malformed bytes, events without their
//! key or measure) and the reference data go straight to Kafka, the way a misbehaving producer
//! or a reference-data job would write them.

use crate::config::Config;
use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tributary_kafka::{EventProducer, OutgoingRecord, ProducerTuning};

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Events per second, over all three sources.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to run, in seconds; 0 runs until interrupted.
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// The gateway to post events to.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Devices (IoT keys); a few are hot, most are quiet.
    #[arg(long, default_value_t = 200)]
    devices: u32,
    /// Users (clickstream and transaction keys).
    #[arg(long, default_value_t = 1000)]
    users: u32,
    /// Share of events that arrive minutes after their window closed.
    #[arg(long, default_value_t = 0.01)]
    late: f64,
    /// Share of events from a device whose clock is hours off.
    #[arg(long, default_value_t = 0.005)]
    skewed: f64,
    /// Share of records written straight to Kafka malformed.
    #[arg(long, default_value_t = 0.005)]
    malformed: f64,
    /// Random seed, for repeatable traffic.
    #[arg(long)]
    seed: Option<u64>,
}

const IOT: &str = "events.iot.sensors";
const CLICKS: &str = "events.clickstream";
const TXNS: &str = "events.transactions";

/// A key from `0..n`, skewed so that low indexes are hot (about a fifth of the keys carry
/// most of the traffic).
fn skewed_index(rng: &mut StdRng, n: u32) -> u32 {
    let u: f64 = rng.random();
    ((u * u * u) * f64::from(n)) as u32
}

fn device(i: u32) -> String {
    format!("device-{i:04}")
}

fn user(i: u32) -> String {
    format!("user-{i:05}")
}

struct Gen {
    args: GenArgs,
    rng: StdRng,
    seq: u64,
    run: String,
}

impl Gen {
    fn event_id(&mut self) -> String {
        self.seq += 1;
        format!("gen-{}-{}", self.run, self.seq)
    }

    /// Event time: now, a few seconds of jitter, sometimes minutes late or hours skewed.
    fn timestamp(&mut self, now_ms: i64) -> i64 {
        let r: f64 = self.rng.random();
        if r < self.args.late {
            now_ms - self.rng.random_range(150_000..600_000)
        } else if r < self.args.late + self.args.skewed {
            if self.rng.random_bool(0.5) {
                now_ms + 2 * 3_600_000
            } else {
                now_ms - 3 * 86_400_000
            }
        } else {
            now_ms - self.rng.random_range(0..3_000)
        }
    }

    fn iot(&mut self, now_ms: i64) -> Value {
        let d = skewed_index(&mut self.rng, self.args.devices);
        let base = 18.0 + f64::from(d % 10);
        let value = base + self.rng.random_range(-2.0..2.0);
        json!({
            "event_id": self.event_id(),
            "timestamp": self.timestamp(now_ms),
            "event_type": "temperature",
            "device_id": device(d),
            "payload": {"value": (value * 100.0).round() / 100.0, "unit": "C"},
        })
    }

    fn click(&mut self, now_ms: i64) -> Value {
        let u = skewed_index(&mut self.rng, self.args.users);
        let kinds =
            ["page_view", "page_view", "page_view", "click", "click", "add_to_cart", "purchase"];
        let kind = kinds[self.rng.random_range(0..kinds.len())];
        json!({
            "event_id": self.event_id(),
            "timestamp": self.timestamp(now_ms),
            "event_type": kind,
            "user_id": user(u),
            "payload": {"page": format!("/products/{}", self.rng.random_range(1..500))},
        })
    }

    fn transaction(&mut self, now_ms: i64) -> Value {
        let u = skewed_index(&mut self.rng, self.args.users);
        // Mostly small amounts, a long tail of large ones.
        let amount = (self.rng.random::<f64>().powi(4) * 2_000.0 + 1.0).round();
        json!({
            "event_id": self.event_id(),
            "timestamp": self.timestamp(now_ms),
            "event_type": "payment",
            "user_id": user(u),
            "payload": {"amount": amount, "currency": "EUR"},
        })
    }

    /// A record the gateway would refuse, with the key it would have had.
    fn malformed(&mut self, now_ms: i64) -> (&'static str, String, Vec<u8>) {
        let d = device(skewed_index(&mut self.rng, self.args.devices));
        match self.rng.random_range(0..3) {
            0 => (IOT, d, b"\x07not an event".to_vec()),
            1 => {
                let v = json!({"event_id": self.event_id(), "timestamp": now_ms, "event_type": "temperature", "device_id": d, "payload": {"unit": "C"}});
                (IOT, d, v.to_string().into_bytes())
            }
            _ => {
                let v = json!({"event_id": self.event_id(), "event_type": "payment", "payload": {"amount": 5}});
                (TXNS, user(1), v.to_string().into_bytes())
            }
        }
    }
}

/// Reference data for nine keys in ten; the rest stay without, as real reference data has gaps.
async fn write_reference_data(producer: &EventProducer, args: &GenArgs) -> anyhow::Result<()> {
    let sites = ["berlin-1", "berlin-2", "paris-1", "madrid-1", "dublin-1"];
    let countries = ["DE", "FR", "ES", "IE", "NL", "PL"];
    let mut pending = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for i in (0..args.devices).filter(|i| i % 10 != 9) {
        let v = json!({"site": sites[i as usize % sites.len()], "model": format!("TX-{}", 100 + i % 7), "firmware": "2.4.1"});
        let (key, value) = (device(i), v.to_string());
        let r = OutgoingRecord {
            topic: "reference.devices",
            key: Some(key.as_bytes()),
            value: value.as_bytes(),
            headers: &[],
            timestamp_ms: None,
        };
        pending.push(producer.enqueue(r, deadline.into_std()).await?);
    }
    for i in (0..args.users).filter(|i| i % 10 != 9) {
        let tier = if i % 17 == 0 { "gold" } else { "standard" };
        let v = json!({"country": countries[i as usize % countries.len()], "tier": tier});
        let (key, value) = (user(i), v.to_string());
        let r = OutgoingRecord {
            topic: "reference.users",
            key: Some(key.as_bytes()),
            value: value.as_bytes(),
            headers: &[],
            timestamp_ms: None,
        };
        pending.push(producer.enqueue(r, deadline.into_std()).await?);
    }
    let n = pending.len();
    for p in pending {
        p.wait().await.context("writing reference data")?;
    }
    println!("gen: wrote reference data for {n} keys (one key in ten has none, on purpose)");
    Ok(())
}

pub async fn run(args: GenArgs, cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    let producer = EventProducer::new(&cfg.kafka, ProducerTuning::default())?;
    write_reference_data(&producer, &args).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let run_id = format!("{:x}", seed & 0xffff_ffff);
    let mut g = Gen { rng: StdRng::seed_from_u64(seed), seq: 0, run: run_id, args };
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let mut next = tokio::time::Instant::now();
    let mut totals: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut malformed = 0u64;
    let mut last_report = Instant::now();
    let stop = crate::signal::shutdown_signal();
    tokio::pin!(stop);
    loop {
        if g.args.duration > 0 && started.elapsed() >= Duration::from_secs(g.args.duration) {
            break;
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(next) => {}
        }
        next += tick;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let batches = generate_tick(&mut g, &producer, now_ms, &mut malformed).await?;
        post_batches(&http, &g.args.gateway, batches, &mut totals).await?;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            report_progress(started, &totals, malformed);
        }
    }
    let sent: u64 = totals.values().map(|t| t.0).sum();
    let ok: u64 = totals.values().map(|t| t.1).sum();
    println!("gen: done: {ok} of {sent} events accepted by the gateway, {malformed} malformed records written to Kafka");
    Ok(std::process::ExitCode::SUCCESS)
}

/// One tick's events (a tenth of the rate per second), batched by topic; the malformed records
/// among them go straight to Kafka and are counted in `malformed`.
async fn generate_tick(
    g: &mut Gen,
    producer: &EventProducer,
    now_ms: i64,
    malformed: &mut u64,
) -> anyhow::Result<HashMap<&'static str, Vec<Value>>> {
    let n = (g.args.rate / 10).max(1);
    let mut batches: HashMap<&str, Vec<Value>> = HashMap::new();
    for _ in 0..n {
        let r: f64 = g.rng.random();
        if r < g.args.malformed {
            let (topic, key, bytes) = g.malformed(now_ms);
            let rec = OutgoingRecord {
                topic,
                key: Some(key.as_bytes()),
                value: &bytes,
                headers: &[],
                timestamp_ms: None,
            };
            producer.send(rec).await.context("writing a malformed record")?;
            *malformed += 1;
            continue;
        }
        let pick: f64 = g.rng.random();
        let (topic, event) = if pick < 0.5 {
            (IOT, g.iot(now_ms))
        } else if pick < 0.85 {
            (CLICKS, g.click(now_ms))
        } else {
            (TXNS, g.transaction(now_ms))
        };
        batches.entry(topic).or_default().push(event);
    }
    Ok(batches)
}

/// Posts each topic's batch to the gateway and adds the sent and accepted counts to `totals`.
async fn post_batches(
    http: &reqwest::Client,
    gateway: &str,
    batches: HashMap<&'static str, Vec<Value>>,
    totals: &mut HashMap<&str, (u64, u64)>,
) -> anyhow::Result<()> {
    for (topic, events) in batches {
        let url = format!("{}/api/v1/events/{topic}/batch", gateway.trim_end_matches('/'));
        let sent = events.len() as u64;
        let resp = http.post(&url).json(&events).send().await.with_context(|| {
            format!("posting to {url} (is the gateway running? `make up` starts it)")
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("the gateway answered {status} to a batch for {topic}: {body}");
        }
        let ok = body["results"]
            .as_array()
            .map_or(0, |rs| rs.iter().filter(|r| r["status"] == "accepted").count() as u64);
        let t = totals.entry(topic).or_default();
        t.0 += sent;
        t.1 += ok;
    }
    Ok(())
}

/// Prints the accepted/sent counts per topic so far.
fn report_progress(started: Instant, totals: &HashMap<&str, (u64, u64)>, malformed: u64) {
    let mut parts: Vec<String> =
        totals.iter().map(|(t, (s, ok))| format!("{t} {ok}/{s}")).collect();
    parts.sort();
    println!(
        "gen: {:>5.0}s accepted/sent {}; malformed to Kafka {malformed}",
        started.elapsed().as_secs_f64(),
        parts.join(", ")
    );
}
