//! Health's view of replication. A partition with fewer in-sync replicas than its topic's
//! `min.insync.replicas` takes no `acks=all` write (two brokers of three down, say): writes to
//! it answer `503` at `produce_timeout_ms`, and health says which partition and why. Each
//! topic's `min.insync.replicas` comes from DescribeConfigs (the ACL the gateway's user needs
//! is in docs/security.md); when it cannot be read, 2 is assumed and the answer says so.
//!
//! An ISR member on a broker that does not accept connections is not counted: with two of
//! three combined broker-controller nodes down there is no controller quorum, the metadata
//! cannot change, and its ISR keeps naming the dead brokers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tributary_kafka::isr::{below_min_isr, short_partitions};
use tributary_kafka::{ClusterInfo, KafkaConfig, KafkaError, MinIsrReader, ShortPartition};

/// What is assumed when a topic's `min.insync.replicas` cannot be read: the usual production
/// value (MSK's and `make up KAFKA=cluster`'s), which a partition with one in-sync replica of
/// several is below.
const ASSUMED_MIN_ISR: i32 = 2;

/// How long a topic's `min.insync.replicas` is reused before it is read again.
const KNOWN_FOR: Duration = Duration::from_secs(60);

/// Topics' `min.insync.replicas`, read when a partition is short of in-sync replicas.
pub struct Replicas {
    reader: MinIsrReader,
    known: Mutex<HashMap<String, (i32, Instant)>>,
}

impl Replicas {
    pub fn new(kafka: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self { reader: MinIsrReader::new(kafka)?, known: Mutex::default() })
    }

    /// Why writes to some partitions of the topics `wanted` says are the catalog's fail, if
    /// they do: fewer in-sync replicas on brokers that answer than `min.insync.replicas`.
    pub async fn check(
        &self,
        info: &ClusterInfo,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let down = unreachable(info, timeout).await;
        let partitions: Vec<_> =
            info.partitions.iter().filter(|p| wanted(&p.topic)).cloned().collect();
        let short = short_partitions(&partitions, &down);
        if short.is_empty() {
            return Ok(());
        }
        let (min_isr, unread) = self.min_isr(&short, timeout).await;
        let below = below_min_isr(&short, &min_isr);
        let Some((first, min)) = below.first() else { return Ok(()) };
        let assumed = if unread.contains(&first.topic) {
            ", assumed: the topic's configs could not be read (DescribeConfigs; see the log)"
        } else {
            ""
        };
        let more = match below.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more partitions)"),
        };
        let gone = match first.gone.as_slice() {
            [] => String::new(),
            ids => format!(
                " (not counting brokers {} of its ISR, which do not answer)",
                ids.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
            ),
        };
        Err(format!(
            "partition {} of topic {} has {} in-sync replica{} of {}{gone}, fewer than its \
             min.insync.replicas ({min}{assumed}): kafka refuses acks=all writes to it until a \
             replica catches up{more}",
            first.partition,
            first.topic,
            first.in_sync,
            if first.in_sync == 1 { "" } else { "s" },
            first.replicas,
        ))
    }

    /// `min.insync.replicas` of the topics of `short`, and the topics whose value is assumed.
    async fn min_isr(
        &self,
        short: &[ShortPartition],
        timeout: Duration,
    ) -> (Vec<(String, i32)>, Vec<String>) {
        let mut topics: Vec<String> = short.iter().map(|p| p.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let mut found = Vec::new();
        let mut ask = Vec::new();
        {
            let known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for t in topics {
                match known.get(&t) {
                    Some((v, at)) if at.elapsed() < KNOWN_FOR => found.push((t, *v)),
                    _ => ask.push(t),
                }
            }
        }
        if ask.is_empty() {
            return (found, Vec::new());
        }
        let answers = match self.reader.read(&ask, timeout).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "health check: reading min.insync.replicas");
                ask.iter().map(|_| Err(rdkafka::types::RDKafkaErrorCode::RequestTimedOut)).collect()
            }
        };
        let mut unread = Vec::new();
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (topic, answer) in ask.into_iter().zip(answers) {
            match answer {
                Ok(v) => {
                    known.insert(topic.clone(), (v, Instant::now()));
                    found.push((topic, v));
                }
                Err(code) => {
                    tracing::warn!(%topic, error = ?code, assumed = ASSUMED_MIN_ISR,
                        "health check: min.insync.replicas of the topic could not be read");
                    found.push((topic.clone(), ASSUMED_MIN_ISR));
                    unread.push(topic);
                }
            }
        }
        (found, unread)
    }
}

/// The brokers of the metadata that refuse a TCP connection, or accept none within `timeout`.
async fn unreachable(info: &ClusterInfo, timeout: Duration) -> Vec<i32> {
    let probes = info.broker_addrs.iter().map(|(id, host, port)| async move {
        let addr = format!("{host}:{port}");
        let connected = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await;
        (!matches!(connected, Ok(Ok(_)))).then_some(*id)
    });
    futures::future::join_all(probes).await.into_iter().flatten().collect()
}
