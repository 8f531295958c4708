//! The topic catalog: which topics Tributary manages, their partition counts, how their
//! records are keyed, and whether the HTTP API may write them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a topic is for; decides who may write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TopicRole {
    /// Raw events from producers; writable through the gateway.
    Source,
    /// Dead letters written by the platform; read-only through the gateway.
    DeadLetter,
    /// Results written by the processor; read-only through the gateway.
    Output,
    /// Compacted reference data (the latest value per key) the processor enriches results
    /// with; read-only through the gateway.
    Reference,
}

/// How record values of a topic are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// Avro with Confluent framing (magic byte, schema id), the schema registered as the
    /// subject `<topic>-value`.
    #[default]
    Avro,
    /// Protobuf with Confluent framing (magic byte, schema id, message indexes), the schema
    /// registered as the subject `<topic>-value`.
    Protobuf,
    /// The event's canonical JSON, UTF-8.
    Json,
}

/// One topic in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Full Kafka topic name, for example `events.clickstream`.
    pub name: String,
    /// Number of partitions the topic is created with.
    pub partitions: i32,
    /// Replication factor the topic is created with; unset, the cluster's own default
    /// (`default.replication.factor`: 1 on the local broker, 3 on the local cluster and on a
    /// three-zone MSK cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i16>,
    /// Event field whose value is the record key (`device_id`, `user_id`); looked up at the top
    /// level of the event first, then inside `payload`. `None` writes unkeyed records.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Whether an event without a key is rejected (422) rather than written unkeyed.
    #[serde(default = "default_true")]
    pub require_key: bool,
    /// What the topic is for.
    pub role: TopicRole,
    /// How values are encoded: `avro` (registry-framed, the default), `protobuf`
    /// (registry-framed) or `json`.
    #[serde(default)]
    pub value_format: ValueFormat,
    /// Topic-level settings applied when the topic is created, for example
    /// `cleanup.policy = "compact"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

impl TopicSpec {
    /// The registry subject of the topic's values (Confluent's TopicNameStrategy).
    pub fn value_subject(&self) -> String {
        format!("{}-value", self.name)
    }

    /// Whether producers may write this topic through the HTTP API.
    pub fn writable(&self) -> bool {
        self.role == TopicRole::Source
    }
}

/// Why a catalog is unusable.
/// The processor's output topic for `source` and `window` (`1m` or `5m`):
/// `events.clickstream` → `aggregates.clickstream.1m`.
pub fn aggregate_topic(source: &str, window: &str) -> String {
    let base = source.strip_prefix("events.").unwrap_or(source);
    format!("aggregates.{base}.{window}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("topic {0:?} appears twice in the catalog")]
    Duplicate(String),
    #[error("topic {name:?} has {partitions} partitions; it needs at least 1")]
    NoPartitions { name: String, partitions: i32 },
    #[error("topic {name:?} has replication factor {factor}; it needs at least 1")]
    NoReplicas { name: String, factor: i16 },
    #[error("{0:?} is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-], not . or ..)")]
    BadName(String),
}

/// The set of topics the platform manages, looked up by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    topics: BTreeMap<String, TopicSpec>,
}

impl Catalog {
    /// Builds a catalog, checking names, partition counts and duplicates.
    pub fn new(specs: Vec<TopicSpec>) -> Result<Self, CatalogError> {
        let mut topics = BTreeMap::new();
        for spec in specs {
            if !valid_topic_name(&spec.name) {
                return Err(CatalogError::BadName(spec.name));
            }
            if spec.partitions < 1 {
                return Err(CatalogError::NoPartitions {
                    name: spec.name,
                    partitions: spec.partitions,
                });
            }
            if let Some(factor) = spec.replication_factor.filter(|f| *f < 1) {
                return Err(CatalogError::NoReplicas { name: spec.name, factor });
            }
            if topics.contains_key(&spec.name) {
                return Err(CatalogError::Duplicate(spec.name));
            }
            topics.insert(spec.name.clone(), spec);
        }
        Ok(Self { topics })
    }

    /// The spec's topics: three event sources and the dead-letter queue; the processor's
    /// results (`aggregates.<source>.<window>`, with the source's partition count); and the
    /// compacted reference topics it enriches with.
    pub fn default_specs() -> Vec<TopicSpec> {
        let spec = |name: String, partitions, key: Option<&str>, role, value_format| TopicSpec {
            name,
            partitions,
            replication_factor: None,
            key_field: key.map(str::to_owned),
            require_key: key.is_some(),
            role,
            value_format,
            configs: BTreeMap::new(),
        };
        let sources = [
            ("events.iot.sensors", 12, "device_id"),
            ("events.clickstream", 24, "user_id"),
            ("events.transactions", 12, "user_id"),
        ];
        let mut specs = Vec::new();
        for (name, partitions, key) in sources {
            specs.push(spec(
                name.to_owned(),
                partitions,
                Some(key),
                TopicRole::Source,
                ValueFormat::Avro,
            ));
            for window in ["1m", "5m"] {
                let output = aggregate_topic(name, window);
                specs.push(spec(
                    output,
                    partitions,
                    Some("key"),
                    TopicRole::Output,
                    ValueFormat::Avro,
                ));
            }
        }
        // Dead letters keep the original bytes of whatever failed.
        specs.push(spec(
            "events.dlq".to_owned(),
            6,
            None,
            TopicRole::DeadLetter,
            ValueFormat::Json,
        ));
        for (name, key) in [("reference.devices", "device_id"), ("reference.users", "user_id")] {
            let mut r =
                spec(name.to_owned(), 3, Some(key), TopicRole::Reference, ValueFormat::Json);
            r.configs.insert("cleanup.policy".to_owned(), "compact".to_owned());
            specs.push(r);
        }
        specs
    }

    /// Looks a topic up by its full name.
    pub fn get(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.get(name)
    }

    /// All topics, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &TopicSpec> {
        self.topics.values()
    }

    /// Names of all topics, ordered.
    pub fn names(&self) -> Vec<&str> {
        self.topics.keys().map(String::as_str).collect()
    }

    /// The same catalog with every replication factor replaced (for example 3 on MSK).
    pub fn with_replication_factor(mut self, factor: i16) -> Result<Self, CatalogError> {
        for spec in self.topics.values_mut() {
            spec.replication_factor = Some(factor);
        }
        Self::new(self.topics.into_values().collect())
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new(Self::default_specs()).unwrap_or_else(|_| Self { topics: BTreeMap::new() })
    }
}

/// Kafka's own rule for legal topic names.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalog_has_the_spec_topics() {
        let catalog = Catalog::default();
        let counts: Vec<(&str, i32)> =
            catalog.iter().map(|t| (t.name.as_str(), t.partitions)).collect();
        assert_eq!(
            counts,
            vec![
                ("aggregates.clickstream.1m", 24),
                ("aggregates.clickstream.5m", 24),
                ("aggregates.iot.sensors.1m", 12),
                ("aggregates.iot.sensors.5m", 12),
                ("aggregates.transactions.1m", 12),
                ("aggregates.transactions.5m", 12),
                ("events.clickstream", 24),
                ("events.dlq", 6),
                ("events.iot.sensors", 12),
                ("events.transactions", 12),
                ("reference.devices", 3),
                ("reference.users", 3),
            ]
        );
        assert_eq!(
            catalog.get("events.iot.sensors").and_then(|t| t.key_field.as_deref()),
            Some("device_id")
        );
        assert_eq!(
            catalog.get("events.clickstream").and_then(|t| t.key_field.as_deref()),
            Some("user_id")
        );
        assert!(catalog.get("events.transactions").is_some_and(TopicSpec::writable));
        assert!(!catalog.get("events.dlq").is_some_and(TopicSpec::writable));
        assert!(!catalog.get("aggregates.iot.sensors.1m").is_some_and(TopicSpec::writable));
        let devices = catalog.get("reference.devices").expect("reference topic");
        assert_eq!(devices.configs.get("cleanup.policy").map(String::as_str), Some("compact"));
        assert_eq!(aggregate_topic("events.iot.sensors", "5m"), "aggregates.iot.sensors.5m");
    }

    #[test]
    fn rejects_bad_catalogs() {
        let mut specs = Catalog::default_specs();
        specs.push(specs[0].clone());
        assert_eq!(Catalog::new(specs), Err(CatalogError::Duplicate("events.iot.sensors".into())));

        let mut specs = Catalog::default_specs();
        specs[1].partitions = 0;
        assert!(matches!(Catalog::new(specs), Err(CatalogError::NoPartitions { .. })));

        let mut specs = Catalog::default_specs();
        specs[2].name = "bad topic".into();
        assert!(matches!(Catalog::new(specs), Err(CatalogError::BadName(_))));
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("events.iot.sensors"));
        assert!(valid_topic_name("a_b-C.9"));
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn replication_factor_override_applies_to_all() {
        let catalog = Catalog::default().with_replication_factor(3).expect("valid factor");
        assert!(catalog.iter().all(|t| t.replication_factor == Some(3)));
        assert!(Catalog::default().with_replication_factor(0).is_err());
    }
}
