//! `tributary dlq`: what is in the dead-letter topic, and replaying it
//! (`tributary_kafka::dlq` does the Kafka side).

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::process::ExitCode;
use tributary_kafka::dlq::{self, DeadLetter, Filter, ReplayOptions};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the dead letters by reason and source topic.
    Stats {
        #[command(flatten)]
        topic: TopicArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the newest dead letters (oldest first), with why and where they came from.
    List {
        #[command(flatten)]
        topic: TopicArg,
        #[command(flatten)]
        filter: FilterArgs,
        /// How many to show: the newest that match.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print one JSON object per line, values included (as text when they are UTF-8,
        /// else base64).
        #[arg(long)]
        json: bool,
    },
    /// Write dead letters back to the topic they came from, once the cause is fixed:
    /// original key, value, timestamp and headers, plus `dlq.replayed.from`. Exactly once per
    /// replay group: a second run goes on from where the first committed.
    Replay {
        #[command(flatten)]
        topic: TopicArg,
        #[command(flatten)]
        filter: FilterArgs,
        /// Replay every reason (otherwise --reason is required).
        #[arg(long, conflicts_with = "reason")]
        all: bool,
        /// Write to this topic instead of each record's source topic.
        #[arg(long)]
        to: Option<String>,
        /// The replay's consumer group and transactional id (default:
        /// tributary-dlq-replay-<reason>[-<source topic>]).
        #[arg(long)]
        group: Option<String>,
        /// Count what would be written; write and commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct TopicArg {
    /// The dead-letter topic (default: the processor's `dlq_topic`, events.dlq).
    #[arg(long)]
    topic: Option<String>,
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only dead letters with this reason (`undecodable`, `late`, `connect`, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters from this source topic.
    #[arg(long)]
    source_topic: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter { reason: self.reason.clone(), source_topic: self.source_topic.clone() }
    }
}

/// Runs the command on a blocking thread (the Kafka clients here block).
pub async fn run(cfg: &crate::config::Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let kafka = cfg.kafka.clone();
    let default_topic = cfg.processor.dlq_topic.clone();
    tokio::task::spawn_blocking(move || run_blocking(&kafka, &default_topic, command)).await?
}

fn run_blocking(
    kafka: &tributary_kafka::KafkaConfig,
    default_topic: &str,
    command: DlqCommand,
) -> anyhow::Result<ExitCode> {
    let topic_of = |t: &TopicArg| t.topic.clone().unwrap_or_else(|| default_topic.to_owned());
    match command {
        DlqCommand::Stats { topic, json } => stats(kafka, &topic_of(&topic), json),
        DlqCommand::List { topic, filter, limit, json } => {
            list(kafka, &topic_of(&topic), &filter, limit, json)
        }
        DlqCommand::Replay { topic, filter, all, to, group, dry_run } => {
            replay(kafka, &topic_of(&topic), &filter, all, to, group, dry_run)
        }
    }
}

/// `tributary dlq stats`: counts by reason and source topic, as a table or JSON.
fn stats(
    kafka: &tributary_kafka::KafkaConfig,
    topic: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut total = 0u64;
    dlq::scan(kafka, topic, |d| {
        total += 1;
        let source = d.source_topic.unwrap_or_else(|| "-".into());
        *counts.entry((d.reason, source)).or_default() += 1;
    })
    .with_context(|| format!("reading {topic}"))?;
    if json {
        let rows: Vec<Value> = counts
            .iter()
            .map(|((r, s), n)| json!({"reason": r, "source_topic": s, "count": n}))
            .collect();
        println!("{}", json!({"topic": topic, "total": total, "counts": rows}));
    } else {
        println!("{:<26} {:<32} {:>10}", "REASON", "SOURCE TOPIC", "COUNT");
        for ((reason, source), n) in &counts {
            println!("{reason:<26} {source:<32} {n:>10}");
        }
        println!("{total} dead letters in {topic}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `tributary dlq list`: the `limit` newest matching dead letters, oldest first.
fn list(
    kafka: &tributary_kafka::KafkaConfig,
    topic: &str,
    filter: &FilterArgs,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let f = filter.filter();
    // The partitions are read interleaved: keep the `limit` newest by when they were
    // dead-lettered (then by timestamp), in a min-heap.
    let mut newest: BinaryHeap<Reverse<Newest>> = BinaryHeap::new();
    dlq::scan(kafka, topic, |d| {
        if limit > 0 && f.matches(&d) {
            newest.push(Reverse(Newest(d)));
            if newest.len() > limit {
                newest.pop();
            }
        }
    })
    .with_context(|| format!("reading {topic}"))?;
    let newest: Vec<DeadLetter> =
        newest.into_sorted_vec().into_iter().rev().map(|Reverse(Newest(d))| d).collect();
    for d in &newest {
        if json {
            println!("{}", as_json(topic, d));
        } else {
            println!("{}", as_line(d));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tributary dlq replay`: writes the matching dead letters back and reports what it did.
fn replay(
    kafka: &tributary_kafka::KafkaConfig,
    topic: &str,
    filter: &FilterArgs,
    all: bool,
    to: Option<String>,
    group: Option<String>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    if filter.reason.is_none() && !all {
        anyhow::bail!("say which dead letters to replay: --reason REASON, or --all");
    }
    if to.as_deref() == Some(topic) {
        anyhow::bail!("--to {topic} would write the dead letters back where they are");
    }
    let group = group.unwrap_or_else(|| default_replay_group(filter));
    let opts = ReplayOptions { filter: filter.filter(), to, group: group.clone(), dry_run };
    let report = dlq::replay(kafka, topic, &opts)
        .with_context(|| format!("replaying {topic} (group {group})"))?;
    let verb = if dry_run { "would write" } else { "wrote" };
    for (target, n) in &report.written {
        println!("{verb} {n} to {target}");
    }
    println!(
        "{} read after what group {group} had done, {} matched, {} {verb}, {} without a source topic (passed over)",
        report.read,
        report.matched,
        report.written.values().sum::<u64>(),
        report.without_source
    );
    Ok(ExitCode::SUCCESS)
}

/// The replay group when none is given: tributary-dlq-replay-<reason>[-<source topic>].
fn default_replay_group(filter: &FilterArgs) -> String {
    let mut g = format!("tributary-dlq-replay-{}", filter.reason.as_deref().unwrap_or("all"));
    if let Some(t) = &filter.source_topic {
        g = format!("{g}-{t}");
    }
    g
}

/// A dead letter ordered by when it was dead-lettered, then its timestamp and position.
struct Newest(DeadLetter);

impl Newest {
    fn key(&self) -> (Option<&str>, Option<i64>, i32, i64) {
        let d = &self.0;
        (d.processed_at.as_deref(), d.timestamp, d.partition, d.offset)
    }
}

impl PartialEq for Newest {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Newest {}

impl PartialOrd for Newest {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Newest {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

fn text(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::from(s),
        Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(bytes)}),
    }
}

fn as_json(topic: &str, d: &DeadLetter) -> Value {
    json!({
        "topic": topic,
        "partition": d.partition,
        "offset": d.offset,
        "reason": d.reason,
        "error": d.error,
        "source_topic": d.source_topic,
        "source_partition": d.source_partition,
        "source_offset": d.source_offset,
        "processed_at": d.processed_at,
        "timestamp": d.timestamp,
        "key": d.key.as_deref().map(text),
        "value": d.value.as_deref().map(text),
        "headers": d.headers.iter().map(|(k, v)| json!([k, v.as_deref().map(text)])).collect::<Vec<_>>(),
    })
}

/// One line: when, why, from where, the key, the error and the start of the value.
fn as_line(d: &DeadLetter) -> String {
    let short = |b: &[u8], n: usize| {
        let s: String = String::from_utf8_lossy(b).chars().take(n).collect();
        s.replace(['\n', '\r', '\t'], " ")
    };
    let source = match (&d.source_topic, d.source_partition, d.source_offset) {
        (Some(t), Some(p), Some(o)) => format!("{t}/{p}/{o}"),
        (Some(t), _, _) => t.clone(),
        _ => "-".into(),
    };
    format!(
        "{} {} {} key={} error={:?} value={:?}",
        d.processed_at.as_deref().unwrap_or("-"),
        d.reason,
        source,
        d.key.as_deref().map_or_else(|| "-".into(), |k| short(k, 40)),
        d.error.as_deref().unwrap_or("-"),
        d.value.as_deref().map_or_else(String::new, |v| short(v, 80)),
    )
}
