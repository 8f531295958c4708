//! Shared harness: a gateway in this process over a real broker, with a catalog of randomly
//! named topics shaped like the real one, and an independent Kafka reader.

#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tributary_core::{Catalog, TopicRole, TopicSpec, ValueFormat};
use tributary_gateway::{AppState, GatewayConfig};
use tributary_kafka::KafkaConfig;

pub struct Topics {
    pub iot: String,
    pub click: String,
    pub tx: String,
    pub dlq: String,
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub base: String,
    pub topics: Topics,
    pub bootstrap: String,
    pub http: reqwest::Client,
    /// The schema registry this gateway uses (in this process, on its own `_schemas` topic).
    pub registry_url: String,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn source(name: &str, partitions: i32, key: &str, format: ValueFormat) -> TopicSpec {
    TopicSpec {
        name: name.to_owned(),
        partitions,
        replication_factor: None,
        key_field: Some(key.to_owned()),
        require_key: true,
        role: TopicRole::Source,
        value_format: format,
        configs: Default::default(),
    }
}

/// Topics shaped like the production catalog, with random names, values in `format`.
pub fn test_catalog(format: ValueFormat) -> (Catalog, Topics) {
    let s = tributary_test_support::random_suffix();
    let topics = Topics {
        iot: format!("test-{s}.iot"),
        click: format!("test-{s}.click"),
        tx: format!("test-{s}.tx"),
        dlq: format!("test-{s}.dlq"),
    };
    let catalog = Catalog::new(vec![
        source(&topics.iot, 12, "device_id", format),
        source(&topics.click, 24, "user_id", format),
        source(&topics.tx, 12, "user_id", format),
        TopicSpec {
            name: topics.dlq.clone(),
            partitions: 6,
            replication_factor: None,
            key_field: None,
            require_key: false,
            role: TopicRole::DeadLetter,
            value_format: ValueFormat::Json,
            configs: Default::default(),
        },
    ])
    .expect("valid test catalog");
    (catalog, topics)
}

impl TestGateway {
    /// A gateway on the shared test broker, writing JSON values.
    pub async fn start(tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::start_with(&tributary_test_support::bootstrap(), ValueFormat::Json, tweak).await
    }

    /// A gateway on the shared test broker, writing registry-framed Avro values.
    pub async fn start_avro(tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::start_with(&tributary_test_support::bootstrap(), ValueFormat::Avro, tweak).await
    }

    /// A gateway on the broker at `bootstrap`, writing JSON values.
    pub async fn start_on(bootstrap: &str, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::start_with(bootstrap, ValueFormat::Json, tweak).await
    }

    /// A gateway and a schema registry on the broker at `bootstrap`, with fresh topics.
    pub async fn start_with(
        bootstrap: &str,
        format: ValueFormat,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let (catalog, topics) = test_catalog(format);
        let kafka =
            KafkaConfig { bootstrap_servers: bootstrap.to_owned(), ..KafkaConfig::default() };
        let outcomes = tributary_kafka::apply_topics(&kafka, &catalog, Duration::from_secs(30))
            .await
            .expect("creating test topics");
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
        let registry_url = start_registry(&kafka).await;
        let mut config = GatewayConfig::default();
        config.registry.url = registry_url.clone();
        tweak(&mut config);
        let state = AppState::new(config, kafka, catalog).expect("gateway state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(tributary_gateway::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            base: format!("http://{addr}"),
            topics,
            bootstrap: bootstrap.to_owned(),
            http: reqwest::Client::new(),
            registry_url,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `body` as JSON to `/api/v1/events/{topic}`; returns status and JSON body.
    pub async fn post(&self, topic: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(&format!("/api/v1/events/{topic}")))
            .json(body)
            .send()
            .await
            .expect("POST reaches the gateway");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET reaches the gateway");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sum of end offsets of `topic`, read by an independent client.
    pub fn end_offsets(&self, topic: &str) -> i64 {
        end_offsets(&self.bootstrap, topic)
    }

    /// Stops the server, waits for it to finish, and deletes the test's topics so a shared
    /// broker does not fill up with them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
        let t = &self.topics;
        delete_topics(&self.bootstrap, &[&t.iot, &t.click, &t.tx, &t.dlq]).await;
    }
}

/// A schema registry in this process, on a schema topic of its own; its base URL.
pub async fn start_registry(kafka: &KafkaConfig) -> String {
    start_registry_with(kafka, |_| {}).await
}

/// A schema registry in this process, on a schema topic of its own, with the settings
/// `tweak` makes; its base URL (`https` when it has a certificate).
pub async fn start_registry_with(
    kafka: &KafkaConfig,
    tweak: impl FnOnce(&mut tributary_registry::RegistryConfig),
) -> String {
    use tributary_registry::{Registry, RegistryConfig};
    let mut config = RegistryConfig {
        topic: tributary_test_support::random_topic("schemas"),
        ..RegistryConfig::default()
    };
    tweak(&mut config);
    let registry = Registry::open(&config, kafka).await.expect("registry opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let scheme = if registry.tls() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    tokio::spawn(tributary_registry::serve(listener, registry, std::future::pending()));
    url
}

/// An event for `user_id`, with the given id.
pub fn event(id: &str, user: &str) -> Value {
    json!({
        "event_id": id,
        "timestamp": "2026-11-30T12:00:00Z",
        "event_type": "page_view",
        "user_id": user,
        "payload": {"url": "/home", "n": 1}
    })
}

/// Deletes topics, ignoring failures (cleanup only).
pub async fn delete_topics(bootstrap: &str, topics: &[&str]) {
    let admin: Option<AdminClient<DefaultClientContext>> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().ok();
    if let Some(admin) = admin {
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let _ = admin.delete_topics(topics, &opts).await;
    }
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tributary-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("test consumer")
}

/// Sum of end offsets of every partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str) -> i64 {
    let c = consumer(bootstrap);
    let md =
        c.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10))).expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == topic).expect("topic in metadata");
    t.partitions()
        .iter()
        .map(|p| {
            c.fetch_watermarks(topic, p.id(), Timeout::After(Duration::from_secs(10)))
                .expect("watermarks")
                .1
        })
        .sum()
}

/// The record at `partition`/`offset` of `topic`, read by a client independent of the gateway.
pub fn read_at(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> OwnedMessage {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            assert_eq!(m.offset(), offset, "first record read is the one asked for");
            return m.detach();
        }
    }
    panic!("no record at {topic}/{partition}@{offset}");
}

/// All records of `topic`, read by an independent client.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let c = consumer(bootstrap);
    let md =
        c.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10))).expect("metadata");
    let t = md.topics().iter().find(|t| t.name() == topic).expect("topic");
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in t.partitions() {
        let (lo, hi) =
            c.fetch_watermarks(topic, p.id(), Timeout::After(Duration::from_secs(10))).expect("wm");
        expected += hi - lo;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < expected && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.expect("consume").detach());
        }
    }
    assert_eq!(out.len() as i64, expected, "read every record of {topic}");
    out
}

/// A header's value as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    let hs = m.headers()?;
    hs.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
