//! Where partitions without a committed offset start, and the check that refuses to start
//! them from nothing when results were written before.
//!
//! The checkpoint of a partition travels as the metadata of the group's committed offset. If
//! those offsets are lost — expired after the group was empty for longer than the broker's
//! `offsets.retention.minutes`, or deleted by someone — a partition has nothing to resume
//! from, and starting it at its oldest record would write every window result again. So at
//! start, before joining the group, [`check_committed`] looks for source partitions without a
//! committed offset; when the output topics of that source already hold records, the processor
//! refuses to start unless the user chose, with `--reset earliest|latest`, where such
//! partitions begin.

use crate::ProcessorError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tributary_kafka::{Causes, KafkaConfig, KafkaError};

/// Where a partition without a committed offset starts (`tributary processor --reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// At its oldest retained record: everything is read again, and results already written
    /// are written again.
    Earliest,
    /// At its end when it is taken: what it holds then is skipped, and counts in no result.
    Latest,
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        })
    }
}

/// A source and the output topics its results go to.
pub(crate) struct SourceTopics<'a> {
    pub topic: &'a str,
    pub outputs: [&'a str; 2],
}

/// How long each question to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The partitions of `topic` as the cluster has them.
fn partitions_of(md: &Metadata, topic: &str) -> Vec<i32> {
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default()
}

/// Refuses to start when a source partition has no committed offset for `group` while the
/// source's output topics hold records, unless `reset` says where such partitions start.
pub(crate) fn check_committed(
    kafka: &KafkaConfig,
    group: &str,
    md: &Metadata,
    sources: &[SourceTopics<'_>],
    reset: Option<Reset>,
) -> Result<(), ProcessorError> {
    let client: BaseConsumer = kafka
        .consumer(Some(group))
        .create()
        .map_err(|e| KafkaError::new("creating a client to read committed offsets", e))?;
    let mut refused: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for source in sources {
        let mut tpl = TopicPartitionList::new();
        for p in partitions_of(md, source.topic) {
            tpl.add_partition(source.topic, p);
        }
        if tpl.count() == 0 {
            continue;
        }
        let committed = client
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| Causes::default().explain("reading the group's committed offsets", e))?;
        let missing: Vec<i32> = committed
            .elements()
            .iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
            .map(|e| e.partition())
            .collect();
        if missing.is_empty() || !holds_records(&client, md, &source.outputs)? {
            continue;
        }
        match reset {
            Some(reset) => tracing::warn!(
                group,
                topic = source.topic,
                partitions = ?missing,
                %reset,
                "partitions without a committed offset start as --reset says"
            ),
            None => {
                refused.insert(source.topic, missing);
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(ProcessorError::NoCheckpoint(refusal(group, &refused)))
}

/// Whether any partition of `topics` holds a record (committed or not).
fn holds_records(
    client: &BaseConsumer,
    md: &Metadata,
    topics: &[&str],
) -> Result<bool, ProcessorError> {
    for topic in topics {
        for p in partitions_of(md, topic) {
            let (low, high) = client
                .fetch_watermarks(topic, p, TIMEOUT)
                .map_err(|e| KafkaError::new("reading the offsets of an output topic", e))?;
            if high > low {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The message of a refusal: the group, the partitions, and the choice.
fn refusal(group: &str, refused: &BTreeMap<&str, Vec<i32>>) -> String {
    let partitions: Vec<String> =
        refused.iter().map(|(topic, parts)| format!("{topic} partitions {parts:?}")).collect();
    format!(
        "consumer group {group} has no committed offset (and so no checkpoint) for {}, while \
         the output topics of those sources already hold results: the group's offsets expired \
         or were deleted, and starting from nothing would write results again; restart with \
         `tributary processor --reset earliest` to read those partitions from their oldest \
         record (the results already written are written again) or `--reset latest` to start \
         them at their end (what they hold now is skipped); either applies only to partitions \
         without a committed offset",
        partitions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_group_the_partitions_and_the_choice() {
        let refused = BTreeMap::from([("events.clickstream", vec![0, 3]), ("events.iot", vec![1])]);
        let text = refusal("tributary-processor", &refused);
        for part in [
            "consumer group tributary-processor",
            "events.clickstream partitions [0, 3]",
            "events.iot partitions [1]",
            "--reset earliest",
            "--reset latest",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        assert!(!text.ends_with('.'));
    }
}
