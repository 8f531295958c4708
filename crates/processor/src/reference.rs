//! Reference data: compacted topics (`reference.devices`, `reference.users`) held in memory and
//! kept current while the processor runs.
//!
//! Every processor instance reads every partition of every reference topic from the beginning
//! (no consumer group), so any instance can enrich any key. A record's value is a JSON object of
//! attributes; a tombstone (no value) removes the key. Processing starts once each reference
//! topic has been read up to the end it had at startup.

use crate::ProcessorError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tributary_kafka::{KafkaConfig, KafkaError};

/// A key's attributes.
pub type Attributes = Arc<BTreeMap<String, String>>;

/// The latest attributes per key of one reference topic.
#[derive(Debug, Default)]
pub struct Table {
    rows: RwLock<HashMap<String, Attributes>>,
}

impl Table {
    /// The attributes of `key`, if the topic has any.
    pub fn get(&self, key: &str) -> Option<Attributes> {
        self.rows.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.rows.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn apply(&self, key: &[u8], value: Option<&[u8]>) -> bool {
        let Ok(key) = std::str::from_utf8(key) else { return false };
        let mut rows = self.rows.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match value.map(attributes) {
            None => {
                rows.remove(key);
                true
            }
            Some(Some(attrs)) => {
                rows.insert(key.to_owned(), Arc::new(attrs));
                true
            }
            Some(None) => false,
        }
    }
}

/// A JSON object's fields as text (strings as they are, anything else as JSON).
fn attributes(value: &[u8]) -> Option<BTreeMap<String, String>> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(value) else { return None };
    Some(
        obj.into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect(),
    )
}

/// The reference tables by topic, loaded and followed by a background thread.
#[derive(Debug, Clone, Default)]
pub struct References {
    tables: HashMap<String, Arc<Table>>,
}

impl References {
    /// The table of `topic`.
    pub fn table(&self, topic: &str) -> Option<Arc<Table>> {
        self.tables.get(topic).cloned()
    }

    /// Reads `topics` up to their current end (at most `load_timeout`), then keeps following
    /// them on a thread until `stop` is set.
    pub fn start(
        kafka: &KafkaConfig,
        topics: &[String],
        load_timeout: Duration,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, ProcessorError> {
        let tables: HashMap<String, Arc<Table>> =
            topics.iter().map(|t| (t.clone(), Arc::new(Table::default()))).collect();
        if topics.is_empty() {
            return Ok(Self { tables });
        }
        let consumer: BaseConsumer = kafka
            .consumer(None)
            .create()
            .map_err(|e| KafkaError::new("creating the reference data reader", e))?;
        let ends = assign_from_beginning(&consumer, topics, &tables, &stop)?;
        load(&consumer, &tables, ends, load_timeout);
        let refs = Self { tables: tables.clone() };
        spawn_follower(consumer, tables, stop)?;
        Ok(refs)
    }
}

/// Assigns every partition of the existing reference `topics` from the beginning; returns where
/// each non-empty partition ended at startup.
fn assign_from_beginning(
    consumer: &BaseConsumer,
    topics: &[String],
    tables: &HashMap<String, Arc<Table>>,
    stop: &AtomicBool,
) -> Result<HashMap<(String, i32), i64>, ProcessorError> {
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| KafkaError::new("fetching metadata of the reference topics", e))?;
    let mut tpl = TopicPartitionList::new();
    // Where each partition ended at startup: loaded when every one is reached.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    // Right after a broker start, leaders may not be elected yet (a broker with many
    // partitions takes minutes to load them): retry until stopped, saying so now and then.
    let mut said = Instant::now();
    for t in md.topics().iter().filter(|t| tables.contains_key(t.name())) {
        for p in t.partitions() {
            let high = startup_end(consumer, t.name(), p.id(), timeout, stop, &mut said)?;
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                .map_err(|e| KafkaError::new("assigning the reference topics", e))?;
            if high > 0 {
                ends.insert((t.name().to_owned(), p.id()), high);
            }
        }
    }
    for t in topics.iter().filter(|t| !md.topics().iter().any(|m| m.name() == t.as_str())) {
        tracing::warn!(topic = %t, "reference topic does not exist; results get no attributes from it");
    }
    consumer.assign(&tpl).map_err(|e| KafkaError::new("assigning the reference topics", e))?;
    Ok(ends)
}

/// The end offset of one partition, retrying (and warning at most every 15 s, tracked in
/// `said`) until the broker serves it or `stop` is set.
fn startup_end(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: Duration,
    stop: &AtomicBool,
    said: &mut Instant,
) -> Result<i64, ProcessorError> {
    loop {
        match consumer.fetch_watermarks(topic, partition, timeout) {
            Ok((_, high)) => return Ok(high),
            Err(e) if !stop.load(Ordering::Relaxed) => {
                if said.elapsed() >= Duration::from_secs(15) {
                    *said = Instant::now();
                    tracing::warn!(topic = topic, partition = partition, error = %e, "waiting for the broker to serve a reference topic");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(KafkaError::new(format!("reading the end of {topic}"), e).into()),
        }
    }
}

/// Reads the reference topics until every partition in `ends` reached its startup end or
/// `load_timeout` passed, then logs what was loaded.
fn load(
    consumer: &BaseConsumer,
    tables: &HashMap<String, Arc<Table>>,
    mut ends: HashMap<(String, i32), i64>,
    load_timeout: Duration,
) {
    let started = Instant::now();
    while !ends.is_empty() && started.elapsed() < load_timeout {
        follow(consumer, tables, &mut ends);
        // Transaction markers at the end are never delivered: check the position too.
        if let Ok(pos) = consumer.position() {
            for e in pos.elements() {
                if let Offset::Offset(o) = e.offset() {
                    let k = (e.topic().to_owned(), e.partition());
                    if ends.get(&k).is_some_and(|end| o >= *end) {
                        ends.remove(&k);
                    }
                }
            }
        }
    }
    if !ends.is_empty() {
        tracing::warn!(
            partitions = ends.len(),
            "reference data not fully loaded in time; going on with what is there"
        );
    }
    for (topic, table) in tables {
        tracing::info!(topic = %topic, keys = table.len(), "reference data loaded");
    }
}

/// Keeps following the reference topics on a thread until `stop` is set.
fn spawn_follower(
    consumer: BaseConsumer,
    tables: HashMap<String, Arc<Table>>,
    stop: Arc<AtomicBool>,
) -> Result<(), ProcessorError> {
    std::thread::Builder::new()
        .name("reference-data".into())
        .spawn(move || {
            let mut none = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                follow(&consumer, &tables, &mut none);
            }
        })
        .map_err(|e| ProcessorError::Setup(format!("starting the reference data thread: {e}")))?;
    Ok(())
}

/// Reads one record (or waits up to 100 ms) and applies it; partitions reach their startup end
/// are removed from `ends`.
fn follow(
    consumer: &BaseConsumer,
    tables: &HashMap<String, Arc<Table>>,
    ends: &mut HashMap<(String, i32), i64>,
) {
    match consumer.poll(Duration::from_millis(100)) {
        Some(Ok(m)) => {
            if let (Some(table), Some(key)) = (tables.get(m.topic()), m.key()) {
                if !table.apply(key, m.payload()) {
                    metrics::counter!(crate::metrics::REFERENCE_INVALID, "topic" => m.topic().to_owned())
                        .increment(1);
                }
            }
            let k = (m.topic().to_owned(), m.partition());
            if ends.get(&k).is_some_and(|end| m.offset() + 1 >= *end) {
                ends.remove(&k);
            }
        }
        Some(Err(e)) => tracing::warn!(error = %e, "reading reference data"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_keeps_the_latest_value_and_honours_tombstones() {
        let t = Table::default();
        assert!(t.apply(b"d-1", Some(br#"{"site":"Berlin","floor":3}"#)));
        assert_eq!(
            t.get("d-1").as_deref().and_then(|a| a.get("floor")).map(String::as_str),
            Some("3")
        );
        assert!(t.apply(b"d-1", Some(br#"{"site":"Paris"}"#)));
        assert_eq!(
            t.get("d-1").as_deref().and_then(|a| a.get("site")).map(String::as_str),
            Some("Paris")
        );
        assert!(!t.apply(b"d-1", Some(b"not json")), "an unusable value is reported");
        assert!(t.get("d-1").is_some(), "and changes nothing");
        assert!(t.apply(b"d-1", None));
        assert!(t.get("d-1").is_none(), "a tombstone removes the key");
    }
}
