//! In-sync replicas against `min.insync.replicas`: whether a topic's partitions can take
//! `acks=all` writes. With fewer in-sync replicas than that setting the leader refuses writes
//! (`NOT_ENOUGH_REPLICAS`) and an idempotent producer retries them until the ISR grows again,
//! so all a writer sees is no acknowledgement; this says why.

use crate::config::KafkaConfig;
use crate::error::KafkaError;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// The replicas of one partition, as the cluster metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub topic: String,
    pub partition: i32,
    /// Brokers assigned a replica.
    pub replicas: Vec<i32>,
    /// Brokers in sync with the leader (the leader included).
    pub isr: Vec<i32>,
}

/// A partition with fewer in-sync replicas than replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortPartition {
    pub topic: String,
    pub partition: i32,
    /// Replicas in sync with the leader (the leader included) on brokers that answer.
    pub in_sync: usize,
    /// Replicas assigned.
    pub replicas: usize,
    /// Members of the metadata's ISR on brokers that do not answer. Without a controller
    /// quorum (two of three combined nodes down) the metadata cannot change, so its ISR
    /// still names dead brokers: they are not counted.
    pub gone: Vec<i32>,
}

/// The partitions of `partitions` short of in-sync replicas, not counting the ISR members on
/// the brokers of `down`.
pub fn short_partitions(partitions: &[PartitionReplicas], down: &[i32]) -> Vec<ShortPartition> {
    partitions
        .iter()
        .filter_map(|p| {
            let (live, gone): (Vec<i32>, Vec<i32>) = p.isr.iter().partition(|b| !down.contains(b));
            (live.len() < p.replicas.len()).then(|| ShortPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                in_sync: live.len(),
                replicas: p.replicas.len(),
                gone,
            })
        })
        .collect()
}

/// Reads topics' `min.insync.replicas` (DescribeConfigs) with one long-lived admin client; it
/// connects on first use.
pub struct MinIsrReader {
    admin: AdminClient<DefaultClientContext>,
}

impl std::fmt::Debug for MinIsrReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinIsrReader").finish_non_exhaustive()
    }
}

impl MinIsrReader {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let admin = config
            .base()
            .create()
            .map_err(|e| KafkaError::new("creating the kafka admin client", e))?;
        Ok(Self { admin })
    }

    /// `min.insync.replicas` of each of `topics`, in order: the value, or the code the broker
    /// answered for that topic (`TopicAuthorizationFailed` when the user may not
    /// DescribeConfigs it). An error when no broker answered within `timeout`.
    pub async fn read(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Vec<Result<i32, RDKafkaErrorCode>>, KafkaError> {
        let specs: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(timeout));
        let results = self
            .admin
            .describe_configs(&specs, &opts)
            .await
            .map_err(|e| KafkaError::new("describing topic configs", e))?;
        Ok(results
            .into_iter()
            .map(|r| {
                let resource = r?;
                resource
                    .get("min.insync.replicas")
                    .and_then(|e| e.value.as_deref())
                    .and_then(|v| v.parse().ok())
                    .ok_or(RDKafkaErrorCode::InvalidConfig)
            })
            .collect())
    }
}

/// The partitions of `short` below their topic's `min.insync.replicas` in `min_isr` (topic,
/// value), where it is known.
pub fn below_min_isr<'a>(
    short: &'a [ShortPartition],
    min_isr: &[(String, i32)],
) -> Vec<(&'a ShortPartition, i32)> {
    short
        .iter()
        .filter_map(|p| {
            let (_, min) = min_isr.iter().find(|(t, _)| *t == p.topic)?;
            (p.in_sync < usize::try_from(*min).unwrap_or(0)).then_some((p, *min))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(topic: &str, partition: i32, in_sync: usize) -> ShortPartition {
        ShortPartition { topic: topic.into(), partition, in_sync, replicas: 3, gone: vec![] }
    }

    #[test]
    fn isr_members_on_brokers_that_do_not_answer_are_not_counted() {
        let p = |partition, isr: &[i32]| PartitionReplicas {
            topic: "t".into(),
            partition,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        };
        let parts = [p(0, &[1, 2, 3]), p(1, &[2, 3]), p(2, &[1, 3])];
        let none = short_partitions(&parts, &[]);
        assert_eq!(
            none.iter().map(|s| (s.partition, s.in_sync)).collect::<Vec<_>>(),
            [(1, 2), (2, 2)]
        );
        let two_down = short_partitions(&parts, &[2, 3]);
        assert_eq!(two_down.len(), 3);
        assert_eq!((two_down[0].in_sync, two_down[0].gone.clone()), (1, vec![2, 3]));
        assert_eq!((two_down[1].in_sync, two_down[1].gone.clone()), (0, vec![2, 3]));
    }

    #[test]
    fn only_partitions_under_their_topics_minimum_count() {
        let parts = [short("a", 0, 1), short("a", 1, 2), short("b", 0, 1), short("c", 0, 1)];
        let min = [("a".to_owned(), 2), ("b".to_owned(), 1)];
        let below = below_min_isr(&parts, &min);
        assert_eq!(below, vec![(&parts[0], 2)], "a/1 has 2 of 2, b's minimum is 1, c's unknown");
    }
}
