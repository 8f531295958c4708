//! Client configuration builders. The spec's settings live here and nowhere else.

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tributary_core::secret::Text;
use tributary_core::{is_secret_name, Secret};

/// How to reach the Kafka cluster; shared by every client Tributary creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of bootstrap brokers.
    #[serde(deserialize_with = "text")]
    pub bootstrap_servers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(deserialize_with = "text")]
    pub security_protocol: String,
    /// SASL mechanism when SASL is on: `SCRAM-SHA-512` (MSK), `SCRAM-SHA-256` or `PLAIN`.
    #[serde(deserialize_with = "opt_text")]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(deserialize_with = "opt_text")]
    pub sasl_username: Option<String>,
    /// SASL password; prefer the environment variable `TRIBUTARY_KAFKA__SASL_PASSWORD`.
    /// Shown as `***`.
    pub sasl_password: Option<Secret>,
    /// PEM file with the CA certificates that sign the brokers' certificates.
    #[serde(deserialize_with = "opt_text")]
    pub ssl_ca_location: Option<String>,
    /// Client id reported to the brokers (shows up in broker logs and quotas).
    #[serde(deserialize_with = "text")]
    pub client_id: String,
    /// Extra librdkafka properties, for settings Tributary has no field for (for example
    /// `linger.ms`, `batch.size`, `compression.type`). They cannot weaken the guarantees:
    /// `acks`, `enable.idempotence`, `max.in.flight.requests.per.connection`, `partitioner`,
    /// `isolation.level` and `enable.auto.commit` always keep Tributary's values. The values
    /// of properties named like secrets (`ssl.key.password`, `ssl.key.pem`,
    /// `sasl.oauthbearer.client.secret`, ...: see [`tributary_core::is_secret_name`]) are
    /// shown as `***`.
    #[serde(deserialize_with = "text_map")]
    pub extra: BTreeMap<String, ExtraValue>,
}

/// The value of a `[kafka.extra]` property: shown as written, or never when the property's
/// name says it holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ExtraValue {
    /// A setting like `linger.ms`.
    Plain(String),
    /// A password or a key.
    Secret(Secret),
}

impl ExtraValue {
    /// The value of property `name`, a [`Secret`] when the name says so.
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        if is_secret_name(name) {
            Self::Secret(Secret::new(value))
        } else {
            Self::Plain(value.into())
        }
    }

    /// The value, for librdkafka.
    pub fn expose(&self) -> &str {
        match self {
            Self::Plain(v) => v,
            Self::Secret(s) => s.expose(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            security_protocol: "plaintext".to_owned(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            client_id: "tributary".to_owned(),
            extra: BTreeMap::new(),
        }
    }
}

/// Text settings for librdkafka, also when an environment variable made them a number.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Text::deserialize(d).map(|t| t.0)
}

fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
}

fn text_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ExtraValue>, D::Error> {
    let map = BTreeMap::<String, Text>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = ExtraValue::new(&k, v.0);
            (k, v)
        })
        .collect())
}

/// Producer knobs that callers may tune; everything else is fixed by the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerTuning {
    /// Upper bound on the time from `send` to a delivery report, success or failure
    /// (librdkafka `message.timeout.ms`). A record given up while its request may have reached
    /// the broker can be written twice by a retry (or by the idempotent producer itself after
    /// an epoch bump), so callers with a shorter deadline of their own (the gateway's HTTP
    /// answer) keep this longer than it and wait for the outcome elsewhere.
    pub delivery_timeout_ms: u64,
    /// How long the producer waits to fill a batch (`linger.ms`); the spec says 10.
    pub linger_ms: u64,
}

/// How much the producer may hold for Kafka before refusing more: what bounds its memory while
/// the cluster is slow or unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBound {
    /// Most records queued (librdkafka `queue.buffering.max.messages`).
    pub max_messages: u32,
    /// Most bytes of keys and values queued, in KiB (`queue.buffering.max.kbytes`).
    pub max_kbytes: u32,
}

impl Default for ProducerTuning {
    fn default() -> Self {
        Self { delivery_timeout_ms: 5_000, linger_ms: 10 }
    }
}

impl KafkaConfig {
    /// Connection and security settings common to every client.
    pub fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id)
            .set("security.protocol", &self.security_protocol)
            // Fail fast on connection loss and reconnect quickly once the broker is back.
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("reconnect.backoff.max.ms", "2000")
            .set("topic.metadata.refresh.interval.ms", "30000");
        if let Some(m) = &self.sasl_mechanism {
            c.set("sasl.mechanism", m);
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p.expose());
        }
        if let Some(ca) = &self.ssl_ca_location {
            c.set("ssl.ca.location", ca);
        }
        for (k, v) in &self.extra {
            c.set(k, v.expose());
        }
        c
    }

    /// The spec's producer: `acks=all`, idempotent, 5 in flight, snappy, `linger.ms=10`, and
    /// the Java client's murmur2 partitioner so keys land where Java producers put them.
    pub fn producer(&self, tuning: ProducerTuning) -> ClientConfig {
        let mut c = self.base();
        c.set("compression.type", "snappy")
            .set("linger.ms", tuning.linger_ms.to_string())
            .set("request.timeout.ms", tuning.delivery_timeout_ms.clamp(1_000, 30_000).to_string());
        for (k, v) in &self.extra {
            c.set(k, v.expose());
        }
        // The guarantees other tools rely on, set last so nothing overrides them. A record
        // given up early may be written twice, so its timeout is the caller's setting only.
        c.set("message.timeout.ms", tuning.delivery_timeout_ms.to_string())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("partitioner", "murmur2_random");
        c
    }

    /// [`KafkaConfig::producer`] with an explicit bound on its queue, which `[kafka.extra]`
    /// cannot raise.
    pub fn bounded_producer(&self, tuning: ProducerTuning, bound: QueueBound) -> ClientConfig {
        let mut c = self.producer(tuning);
        c.set("queue.buffering.max.messages", bound.max_messages.to_string())
            .set("queue.buffering.max.kbytes", bound.max_kbytes.to_string());
        c
    }

    /// The spec's consumer: no auto-commit, `read_committed` (set explicitly: the Java
    /// client's default differs), at most 500 records per poll's worth of prefetch.
    /// `group_id` is `None` for readers that assign partitions themselves.
    pub fn consumer(&self, group_id: Option<&str>) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // librdkafka has no max.poll.records; bound the prefetch queue instead.
            .set("queued.min.messages", "500")
            // When that queue is full librdkafka waits this long before fetching again, 1 s
            // by default: a reader that fell behind for a moment would then stall for a second.
            .set("fetch.queue.backoff.ms", "5")
            // librdkafka's default lets that queue hold 64 MiB of fetched records, which a
            // reader behind a backlog always fills: 8 MiB keeps tens of thousands of records
            // ahead (a fetch round trip's worth at hundreds of thousands a second).
            .set("queued.max.messages.kbytes", "8192")
            // librdkafka wants a group id even for assign(); readers never join or commit it.
            .set("group.id", group_id.unwrap_or("tributary-reader"));
        for (k, v) in &self.extra {
            c.set(k, v.expose());
        }
        c.set("enable.auto.commit", "false").set("isolation.level", "read_committed");
        if let Some(g) = group_id {
            c.set("group.id", g);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(c: &'a ClientConfig, k: &str) -> Option<&'a str> {
        c.get(k)
    }

    #[test]
    fn producer_has_the_spec_settings() {
        let c = KafkaConfig::default().producer(ProducerTuning::default());
        for (k, v) in [
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("max.in.flight.requests.per.connection", "5"),
            ("compression.type", "snappy"),
            ("linger.ms", "10"),
            ("partitioner", "murmur2_random"),
            ("message.timeout.ms", "5000"),
            ("bootstrap.servers", "127.0.0.1:9092"),
        ] {
            assert_eq!(get(&c, k), Some(v), "{k}");
        }
    }

    #[test]
    fn a_bounded_producer_has_its_bound_whatever_extra_says() {
        let cfg = KafkaConfig {
            extra: [("queue.buffering.max.kbytes", "1048576")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ExtraValue::new(k, v)))
                .collect(),
            ..KafkaConfig::default()
        };
        let bound = QueueBound { max_messages: 1_000, max_kbytes: 2_048 };
        let c = cfg.bounded_producer(ProducerTuning::default(), bound);
        assert_eq!(get(&c, "queue.buffering.max.messages"), Some("1000"));
        assert_eq!(get(&c, "queue.buffering.max.kbytes"), Some("2048"));
        assert_eq!(get(&c, "acks"), Some("all"));
    }

    #[test]
    fn consumer_has_the_spec_settings() {
        let c = KafkaConfig::default().consumer(Some("g"));
        assert_eq!(get(&c, "enable.auto.commit"), Some("false"));
        assert_eq!(get(&c, "isolation.level"), Some("read_committed"));
        assert_eq!(get(&c, "group.id"), Some("g"));
        assert_eq!(get(&c, "queued.max.messages.kbytes"), Some("8192"), "bounded prefetch");
        let mut cfg = KafkaConfig::default();
        cfg.extra.insert(
            "queued.max.messages.kbytes".into(),
            ExtraValue::new("queued.max.messages.kbytes", "65536"),
        );
        assert_eq!(get(&cfg.consumer(None), "queued.max.messages.kbytes"), Some("65536"));
    }

    #[test]
    fn security_and_extra_settings_apply() {
        let cfg = KafkaConfig {
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some("p".into()),
            extra: [
                ("linger.ms", "50"),
                ("acks", "1"),
                ("enable.idempotence", "false"),
                ("message.timeout.ms", "1000"),
                ("isolation.level", "read_uncommitted"),
                ("ssl.key.password", "kp"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ExtraValue::new(k, v)))
            .collect(),
            ..KafkaConfig::default()
        };
        let c = cfg.producer(ProducerTuning::default());
        assert_eq!(get(&c, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(get(&c, "sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get(&c, "sasl.username"), Some("u"));
        assert_eq!(get(&c, "sasl.password"), Some("p"));
        assert_eq!(get(&c, "ssl.key.password"), Some("kp"));
        assert_eq!(get(&c, "linger.ms"), Some("50"), "extra tunes what it may");
        assert_eq!(get(&c, "acks"), Some("all"), "extra cannot weaken acks");
        assert_eq!(get(&c, "enable.idempotence"), Some("true"));
        assert_eq!(get(&c, "message.timeout.ms"), Some("5000"), "the caller's delivery timeout");
        let c = cfg.consumer(None);
        assert_eq!(get(&c, "isolation.level"), Some("read_committed"));
    }

    #[test]
    fn passwords_and_secret_extras_never_print() {
        let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
            "sasl_password": 7,
            "extra": {"linger.ms": 50, "ssl.key.password": "kp", "sasl.oauthbearer.client.secret": "cs"}
        }))
        .expect("config");
        assert_eq!(cfg.sasl_password.as_ref().map(Secret::expose), Some("7"));
        assert_eq!(cfg.extra["linger.ms"], ExtraValue::Plain("50".into()));
        let shown = serde_json::to_value(&cfg).expect("json");
        assert_eq!(shown["sasl_password"], "***");
        assert_eq!(shown["extra"]["linger.ms"], "50");
        assert_eq!(shown["extra"]["ssl.key.password"], "***");
        assert_eq!(shown["extra"]["sasl.oauthbearer.client.secret"], "***");
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("kp") && !debug.contains("\"cs\""), "{debug}");
    }
}
