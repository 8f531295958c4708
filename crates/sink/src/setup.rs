//! From settings to a running sink: [`Sink::setup`] opens the warehouse and creates a table per
//! topic; [`Sink::run`] starts a [`Loader`] with its consumer and writer thread, and rebuilds
//! them after a failure.

use crate::config::SinkConfig;
use crate::loader::{Loader, Rebuild, SinkConsumer};
use crate::metrics as m;
use crate::rows::RowText;
use crate::warehouse::{Batch, TableKind, Tuning, Warehouse};
use crate::writer::Writer;
use crate::SinkError;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tributary_core::{Catalog, TopicRole};
use tributary_kafka::group::{run_members, Liveness, Membership, RebuildReason as _};
use tributary_kafka::{EventProducer, KafkaConfig, ProducerTuning};
use tributary_schema::client::RegistryClient;
use tributary_schema::decode::Decoder;

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where one topic's records go.
#[derive(Debug)]
pub(crate) struct Route {
    pub topic: Arc<str>,
    pub table: Arc<str>,
    /// Dead letters are stored whatever their bytes are, never dead-lettered again.
    pub dead_letters: bool,
}

/// What the sink's `/health` reports.
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// The poll loop runs and passes.
    pub liveness: Liveness,
    /// Wall-clock ms of the last batch written to the warehouse.
    pub last_flush_ms: AtomicI64,
}

impl tributary_ops::Health for SinkHealth {
    fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let last_flush = self.last_flush_ms.load(Ordering::Relaxed);
        let mut f = serde_json::Map::from_iter([("last_flush_ms".to_owned(), last_flush.into())]);
        if let Some(reason) = self.liveness.reason() {
            f.insert("reason".into(), reason.into());
        }
        f
    }
}

/// A configured sink, ready to [`Sink::run`].
pub struct Sink {
    config: Arc<SinkConfig>,
    kafka: KafkaConfig,
    routes: Arc<Vec<Route>>,
    decoder: Arc<Decoder>,
    dlq: Arc<EventProducer>,
    runtime: tokio::runtime::Handle,
    warehouse: Arc<Mutex<Warehouse>>,
    health: Arc<SinkHealth>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("topics", &self.routes.len()).finish_non_exhaustive()
    }
}

/// The topics to load: the configured ones, else every source, output and dead-letter topic
/// of the catalog.
fn topics(config: &SinkConfig, catalog: &Catalog) -> Vec<String> {
    if !config.topics.is_empty() {
        return config.topics.clone();
    }
    catalog
        .iter()
        .filter(|t| matches!(t.role, TopicRole::Source | TopicRole::Output | TopicRole::DeadLetter))
        .map(|t| t.name.clone())
        .collect()
}

impl Sink {
    /// Opens the warehouse and creates a table per topic. Runs outside the async runtime.
    pub fn setup(
        config: SinkConfig,
        kafka: KafkaConfig,
        catalog: &Catalog,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, SinkError> {
        if config.buffer_count_records == 0
            || config.buffer_size_bytes == 0
            || config.buffer_flush_time_secs <= 0.0
        {
            return Err(SinkError::Config("[sink] buffer_count_records, buffer_size_bytes and buffer_flush_time_secs must be positive".into()));
        }
        if config.sql_max_rows == 0 || config.sql_timeout_ms == 0 {
            return Err(SinkError::Config(
                "[sink] sql_max_rows and sql_timeout_ms must be positive".into(),
            ));
        }
        if config.sql_token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            return Err(SinkError::Config(
                "[sink] sql_token is empty: set a token, or leave it out to need none".into(),
            ));
        }
        let path = config.database_path();
        let tuning = Tuning {
            threads: config.warehouse_threads,
            memory_limit: config.warehouse_memory_limit.clone(),
            checkpoint_threshold: config.warehouse_checkpoint_threshold.clone(),
            compression: config.warehouse_compression.clone(),
        };
        let warehouse = Warehouse::open(&path, &tuning).map_err(|e| {
            SinkError::Warehouse(format!("opening the warehouse {}: {e}", path.display()))
        })?;
        let mut routes = Vec::new();
        for topic in topics(&config, catalog) {
            let role = catalog.get(&topic).map(|t| t.role);
            let table = config.table_for(&topic);
            let kind = match role {
                Some(TopicRole::Source) => TableKind::Events,
                Some(TopicRole::Output) => TableKind::WindowResults,
                _ => TableKind::Other,
            };
            warehouse
                .ensure_table(&table, kind)
                .map_err(|e| SinkError::Warehouse(format!("creating table raw.{table}: {e}")))?;
            routes.push(Route {
                topic: topic.into(),
                table: table.into(),
                dead_letters: role == Some(TopicRole::DeadLetter),
            });
        }
        let registry = RegistryClient::from_config(&config.registry)
            .map_err(|e| SinkError::Config(format!("[sink.registry] {e}")))?;
        let registry = Arc::new(registry);
        let dlq = EventProducer::new(&kafka, ProducerTuning::default())?;
        Ok(Self {
            config: Arc::new(config),
            kafka,
            routes: Arc::new(routes),
            decoder: Arc::new(Decoder::new(registry, runtime.clone())),
            dlq: Arc::new(dlq),
            runtime,
            warehouse: Arc::new(Mutex::new(warehouse)),
            health: Arc::new(SinkHealth::default()),
        })
    }

    /// What the health endpoint reads.
    pub fn status(&self) -> Arc<SinkHealth> {
        Arc::clone(&self.health)
    }

    /// A second connection for queries while the sink writes.
    pub fn reader(&self) -> Result<duckdb::Connection, SinkError> {
        self.warehouse
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .reader()
            .map_err(|e| SinkError::Warehouse(format!("opening a reader: {e}")))
    }

    /// Loads until `stop` is set, rebuilding the consumer after errors.
    pub fn run(&self, stop: &AtomicBool) -> Result<(), SinkError> {
        let topics: Vec<&str> = self.routes.iter().map(|s| &*s.topic).collect();
        let count = |reason: Rebuild| {
            metrics::counter!(m::REBUILDS, "reason" => reason.label()).increment(1)
        };
        run_members(stop, &topics, &self.health.liveness, || self.member(&topics), count);
        Ok(())
    }

    /// A member of the group: a [`Loader`] with a new writer thread and consumer.
    fn member(&self, topics: &[&str]) -> Result<SinkConsumer, Rebuild> {
        let loader = Loader {
            config: Arc::clone(&self.config),
            routes: Arc::clone(&self.routes),
            decoder: Arc::clone(&self.decoder),
            dlq: Arc::clone(&self.dlq),
            runtime: self.runtime.clone(),
            warehouse: Arc::clone(&self.warehouse),
            batch: Batch::default(),
            bytes: 0,
            oldest: None,
            failed: None,
            writer: Writer::start(Arc::clone(&self.warehouse), Arc::clone(&self.health)),
            text: RowText::default(),
        };
        let membership = Membership {
            group_id: &self.config.group_id,
            instance_id: None,
            session_timeout_ms: None,
            statistics_interval_ms: 5_000,
            // Behind a backlog the 8 MiB of other readers held 40 MiB more of fetched batches
            // for no more rows a second (docs/performance.md, the warehouse sink).
            prefetch_kbytes: Some(2048),
        };
        let consumer = membership.create(&self.kafka, loader).map_err(|e| {
            tracing::warn!(error = %e.cause, "creating the consumer");
            Rebuild::Consumer
        })?;
        let database = self.config.database_path();
        tracing::info!(topics = ?topics, database = %database.display(), "sink running");
        Ok(consumer)
    }
}
