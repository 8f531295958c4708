//! Topic administration: create the catalog's topics idempotently and describe them.

use crate::config::KafkaConfig;
use crate::error::KafkaError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use std::time::Duration;
use tributary_core::{Catalog, TopicSpec};

/// What applying one catalog topic found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The topic did not exist and was created.
    Created { topic: String, partitions: i32 },
    /// The topic already existed with the catalog's partition count.
    Unchanged { topic: String, partitions: i32 },
    /// The topic exists with a different partition count; nothing was changed.
    PartitionMismatch { topic: String, expected: i32, actual: i32 },
}

impl ApplyOutcome {
    /// Whether the topic now matches the catalog.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::PartitionMismatch { .. })
    }
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created { topic, partitions } => {
                write!(f, "created    {topic} ({partitions} partitions)")
            }
            Self::Unchanged { topic, partitions } => {
                write!(f, "exists     {topic} ({partitions} partitions)")
            }
            Self::PartitionMismatch { topic, expected, actual } => write!(
                f,
                "MISMATCH   {topic} has {actual} partitions but the catalog says {expected}; \
                 Kafka cannot shrink a topic and growing it moves keys to other partitions, \
                 so change the catalog or recreate the topic"
            ),
        }
    }
}

/// The state of one topic on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub topic: String,
    /// `None` when the topic does not exist.
    pub partitions: Option<Vec<PartitionOffsets>>,
}

/// Earliest and end offsets of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

fn metadata_consumer(config: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    config.consumer(None).create().map_err(|e| KafkaError::new("creating a metadata client", e))
}

/// Whether every partition of `name` has a leader (a just-created topic has none for a moment,
/// and reads and writes fail until it does).
fn has_leaders(consumer: &BaseConsumer, name: &str, timeout: Duration) -> Result<bool, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(name), Timeout::After(timeout))
        .map_err(|e| KafkaError::new(format!("fetching metadata of {name}"), e))?;
    Ok(md.topics().iter().any(|t| {
        t.name() == name
            && t.error().is_none()
            && !t.partitions().is_empty()
            && t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())
    }))
}

/// Partition counts of the named topics (`None` for a topic that does not exist).
fn partition_counts(
    consumer: &BaseConsumer,
    names: &[&str],
    timeout: Duration,
) -> Result<Vec<Option<i32>>, KafkaError> {
    let md = consumer
        .fetch_metadata(None, Timeout::After(timeout))
        .map_err(|e| KafkaError::new("fetching topic metadata", e))?;
    Ok(names
        .iter()
        .map(|name| {
            md.topics()
                .iter()
                .find(|t| t.name() == *name && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
        })
        .collect())
}

/// Creates every missing catalog topic and reports the ones whose partition count differs.
/// Safe to run any number of times, also by several processes at once.
pub async fn apply_topics(
    config: &KafkaConfig,
    catalog: &Catalog,
    timeout: Duration,
) -> Result<Vec<ApplyOutcome>, KafkaError> {
    let specs: Vec<&TopicSpec> = catalog.iter().collect();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    // A refused login or TLS handshake named, not a metadata timeout.
    crate::cause::reach(config, timeout).await?;
    let existing = current_partition_counts(config, &names, timeout).await?;
    let created = create_missing_topics(config, &specs, &existing, timeout).await?;
    // Look again, so a topic created concurrently with other settings is still reported.
    let after = partition_counts_after_create(config, &names, created.clone(), timeout).await?;
    Ok(apply_outcomes(&specs, &existing, after, &created))
}

/// Partition counts of the named topics, fetched off the async runtime.
async fn current_partition_counts(
    config: &KafkaConfig,
    names: &[&str],
    timeout: Duration,
) -> Result<Vec<Option<i32>>, KafkaError> {
    let consumer = metadata_consumer(config)?;
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        partition_counts(&consumer, &refs, timeout)
    })
    .await
    .map_err(|_| KafkaError::new("fetching topic metadata", RdError::Canceled))?
}

/// The topic-creation request for one catalog topic, with its configs.
fn new_topic<'a>(spec: &'a TopicSpec) -> NewTopic<'a> {
    spec.configs.iter().fold(
        NewTopic::new(
            &spec.name,
            spec.partitions,
            // -1: the cluster's default.replication.factor (CreateTopics v4+).
            TopicReplication::Fixed(spec.replication_factor.map_or(-1, i32::from)),
        ),
        |t, (k, v)| t.set(k, v),
    )
}

/// Creates the topics `existing` reports missing; returns the names this call created.
async fn create_missing_topics(
    config: &KafkaConfig,
    specs: &[&TopicSpec],
    existing: &[Option<i32>],
    timeout: Duration,
) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        config.base().create().map_err(|e| KafkaError::new("creating the admin client", e))?;
    let to_create: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(existing)
        .filter(|(_, count)| count.is_none())
        .map(|(s, _)| new_topic(s))
        .collect();
    let mut created = Vec::new();
    if !to_create.is_empty() {
        let opts =
            AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
        let results = admin
            .create_topics(to_create.iter(), &opts)
            .await
            .map_err(|e| KafkaError::new("creating topics", e))?;
        for result in results {
            match result {
                Ok(topic) => created.push(topic),
                // Another process created it between our look and our create: check it below.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(KafkaError::new(
                        format!("creating topic {topic}"),
                        RdError::AdminOp(code),
                    ))
                }
            }
        }
    }
    Ok(created)
}

/// Partition counts of the named topics after creation, waiting (bounded by `timeout`) until
/// the topics in `wait_for` have leaders for every partition.
async fn partition_counts_after_create(
    config: &KafkaConfig,
    names: &[&str],
    wait_for: Vec<String>,
    timeout: Duration,
) -> Result<Vec<Option<i32>>, KafkaError> {
    let consumer = metadata_consumer(config)?;
    let names_owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names_owned.iter().map(String::as_str).collect();
        // Metadata for just-created topics can lag briefly; wait for them, bounded.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let counts = partition_counts(&consumer, &refs, timeout)?;
            // Wait until the topics we created have leaders for every partition, so the
            // caller can write to them as soon as this returns.
            let mut ready = true;
            for name in &wait_for {
                ready = ready && has_leaders(&consumer, name, timeout)?;
            }
            if ready || std::time::Instant::now() >= deadline {
                return Ok(counts);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .map_err(|_| KafkaError::new("fetching topic metadata", RdError::Canceled))?
}

/// What applying each catalog topic found or did, from the counts before and after.
fn apply_outcomes(
    specs: &[&TopicSpec],
    existing: &[Option<i32>],
    after: Vec<Option<i32>>,
    created: &[String],
) -> Vec<ApplyOutcome> {
    specs
        .iter()
        .zip(existing.iter().zip(after))
        .map(|(spec, (before, now))| {
            let topic = spec.name.clone();
            let actual = now.or(*before).unwrap_or(spec.partitions);
            if actual != spec.partitions {
                ApplyOutcome::PartitionMismatch { topic, expected: spec.partitions, actual }
            } else if before.is_none() && created.contains(&spec.name) {
                ApplyOutcome::Created { topic, partitions: actual }
            } else {
                ApplyOutcome::Unchanged { topic, partitions: actual }
            }
        })
        .collect()
}

/// Partition counts and offsets of the named topics.
pub async fn describe_topics(
    config: &KafkaConfig,
    names: Vec<String>,
    timeout: Duration,
) -> Result<Vec<TopicState>, KafkaError> {
    let consumer = metadata_consumer(config)?;
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let counts = partition_counts(&consumer, &refs, timeout)?;
        names
            .iter()
            .zip(counts)
            .map(|(topic, count)| {
                let partitions = match count {
                    None => None,
                    Some(n) => Some(
                        (0..n)
                            .map(|p| {
                                let (low, high) = consumer
                                    .fetch_watermarks(topic, p, Timeout::After(timeout))
                                    .map_err(|e| {
                                        KafkaError::new(
                                            format!("fetching offsets of {topic}/{p}"),
                                            e,
                                        )
                                    })?;
                                Ok(PartitionOffsets { partition: p, low, high })
                            })
                            .collect::<Result<Vec<_>, KafkaError>>()?,
                    ),
                };
                Ok(TopicState { topic: topic.clone(), partitions })
            })
            .collect()
    })
    .await
    .map_err(|_| KafkaError::new("describing topics", RdError::Canceled))?
}
