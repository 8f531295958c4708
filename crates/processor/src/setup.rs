//! From settings to a running processor: [`Processor::setup`] checks the configuration against
//! the catalog, registers the output schema and loads the reference topics into a
//! [`Pipeline`]; [`Processor::run`] starts a [`Worker`] with its consumer and transactional
//! producer, and rebuilds both after a failure.

use crate::config::ProcessorConfig;
use crate::metrics as m;
use crate::output::{Encoding, Output, Outputs, AGGREGATE_AVSC};
use crate::phase::Rebuild;
use crate::record::{Decoder, Filter};
use crate::reference::{References, Table};
use crate::resume::{self, Reset, SourceTopics};
use crate::task::TaskConfig;
use crate::watermark::WatermarkConfig;
use crate::window::WindowConfig;
use crate::worker::{ProcessorConsumer, Worker};
use crate::ProcessorError;
use rdkafka::consumer::BaseConsumer;
use rdkafka::metadata::Metadata;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tributary_core::{aggregate_topic, Catalog, TopicSpec, ValueFormat};
use tributary_kafka::cause::{self, Causes, Watched};
use tributary_kafka::group::{run_members, Liveness, Membership, RebuildReason as _};
use tributary_kafka::{
    KafkaConfig, KafkaError, ProducerTuning, TransactionalProducer, TxnSettings,
};
use tributary_schema::client::RegistryClient;
use tributary_schema::compat::SchemaType;

/// One source topic: how its records are checked, and where its results go.
#[derive(Debug)]
pub(crate) struct Input {
    pub topic: String,
    /// Per-record counters, registered once (the hot path only increments them).
    pub records_in: metrics::Counter,
    pub records_replayed: metrics::Counter,
    pub late: metrics::Counter,
    pub duplicates: metrics::Counter,
    pub filter: Filter,
    pub outputs: Outputs,
    /// The reference topic and its table, when results are enriched.
    pub reference: Option<(String, Arc<Table>)>,
}

/// What every part of the processor reads and nobody changes.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub config: ProcessorConfig,
    pub kafka: KafkaConfig,
    pub inputs: Vec<Input>,
    pub decoder: Decoder,
    pub task: TaskConfig,
    /// The producer's settings; its `transactional.id` is this instance's slot.
    pub txn: TxnSettings,
    /// Where partitions without a committed offset start (`--reset`); `None`: at the oldest
    /// record, once the start check found no results written before.
    pub reset: Option<Reset>,
    /// Refusals (credentials, TLS, ACLs) reported to the processor's clients: its health's.
    pub causes: Causes,
}

impl Pipeline {
    pub fn input_index(&self, topic: &str) -> Option<usize> {
        self.inputs.iter().position(|s| s.topic == topic)
    }

    pub fn transactional_id(&self) -> &str {
        &self.txn.transactional_id
    }

    /// A transactional producer, initialised (which fences the previous producer with this
    /// `transactional.id` and aborts what it left open) and in a transaction.
    pub fn producer(&self) -> Result<TransactionalProducer, KafkaError> {
        TransactionalProducer::start_watched(&self.kafka, &self.txn, self.causes.clone())
    }
}

/// What the processor's `/health` reports.
#[derive(Debug, Default)]
pub struct ProcessorHealth {
    /// Partitions assigned to this instance.
    pub assigned: AtomicUsize,
    /// Wall-clock ms of the last committed transaction.
    pub last_commit_ms: AtomicI64,
    /// The processing loop runs and passes.
    pub liveness: Liveness,
}

impl tributary_ops::Health for ProcessorHealth {
    fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut f = serde_json::Map::new();
        f.insert("assigned_partitions".into(), self.assigned.load(Ordering::Relaxed).into());
        f.insert("last_commit_ms".into(), self.last_commit_ms.load(Ordering::Relaxed).into());
        if let Some(reason) = self.liveness.reason() {
            f.insert("reason".into(), reason.into());
        }
        f
    }

    fn liveness(&self) -> &Liveness {
        &self.liveness
    }
}

/// A configured processor, ready to [`Processor::run`].
#[derive(Debug)]
pub struct Processor {
    pipeline: Arc<Pipeline>,
    health: Arc<ProcessorHealth>,
}

/// Settings the processor cannot run with.
fn check(config: &ProcessorConfig) -> Result<(), ProcessorError> {
    let invalid = [
        (config.window_ms < 1_000, "window_ms must be at least 1000"),
        (config.sliding_panes < 1, "sliding_panes must be at least 1"),
        (config.grace_ms < 0, "grace_ms must not be negative"),
        (config.out_of_orderness_ms < 0, "out_of_orderness_ms must not be negative"),
        (config.idle_ms < 1, "idle_ms must be positive"),
        (config.commit_interval_ms == 0, "commit_interval_ms must be positive"),
        (config.max_categories == 0, "max_categories must be at least 1"),
    ];
    match invalid.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err(ProcessorError::Config(format!("[processor] {why}"))),
        None => Ok(()),
    }
}

/// The output topics of `source`, with their encodings (Avro schemas registered).
fn outputs(
    source: &str,
    catalog: &Catalog,
    registry: &RegistryClient,
    runtime: &tokio::runtime::Handle,
) -> Result<Outputs, ProcessorError> {
    let output = |window: &str| -> Result<Output, ProcessorError> {
        let topic = aggregate_topic(source, window);
        let format = catalog.get(&topic).map_or(ValueFormat::Avro, |t| t.value_format);
        let encoding = match format {
            ValueFormat::Json => Encoding::Json,
            ValueFormat::Avro => {
                let subject = format!("{topic}-value");
                let id = runtime
                    .block_on(registry.register(&subject, SchemaType::Avro, AGGREGATE_AVSC))
                    .map_err(|e| {
                        ProcessorError::Registry(format!("registering the schema of {topic}: {e}"))
                    })?;
                let schema = runtime
                    .block_on(registry.schema(id))
                    .map_err(|e| ProcessorError::Registry(format!("reading schema {id}: {e}")))?
                    .ok_or_else(|| ProcessorError::Registry(format!("schema {id} vanished")))?;
                Encoding::Avro { id, schema }
            }
            ValueFormat::Protobuf => {
                return Err(ProcessorError::Config(format!(
                    "{topic}: window results are written as Avro or JSON, not Protobuf"
                )))
            }
        };
        Ok(Output { topic, encoding })
    };
    Ok(Outputs { tumbling: output("1m")?, sliding: output("5m")? })
}

/// The partition count of `spec`'s topic as the cluster has it (the key check must agree with
/// the topic), else the catalog's.
fn partitions(md: &Metadata, spec: &TopicSpec) -> i32 {
    md.topics().iter().find(|t| t.name() == spec.name && !t.partitions().is_empty()).map_or(
        spec.partitions,
        |t| {
            let n = t.partitions().len() as i32;
            if n != spec.partitions {
                tracing::warn!(topic = %spec.name, cluster = n, catalog = spec.partitions, "the topic's partition count differs from the catalog; using the cluster's");
            }
            n
        },
    )
}

/// The window and watermark settings of every task.
fn task_config(config: &ProcessorConfig) -> TaskConfig {
    TaskConfig {
        window: WindowConfig {
            pane_ms: config.window_ms,
            sliding_panes: config.sliding_panes,
            grace_ms: config.grace_ms,
        },
        watermark: WatermarkConfig {
            out_of_orderness_ms: config.out_of_orderness_ms,
            idle_ms: config.idle_ms,
            max_lag_ms: config.max_past_ms,
        },
    }
}

/// The transactional producer's settings: this instance's slot.
fn txn_settings(config: &ProcessorConfig) -> TxnSettings {
    TxnSettings {
        transactional_id: config.transactional_id(),
        tuning: ProducerTuning { delivery_timeout_ms: config.transaction_timeout_ms, linger_ms: 5 },
        transaction_timeout_ms: Some(config.transaction_timeout_ms),
        // Right after a commit the coordinator answers CONCURRENT_TRANSACTIONS until its
        // markers are written; librdkafka retries after retry.backoff.ms (100 ms by default),
        // which capped the processor at ten transactions a second.
        retry_backoff_ms: Some(5),
    }
}

impl Processor {
    /// Checks the configuration against the catalog, registers the output schema, loads the
    /// reference topics, and refuses to start source partitions without a committed offset
    /// when their results were written before, unless `reset` says where they start. Runs on
    /// a thread outside the async runtime.
    pub fn setup(
        config: ProcessorConfig,
        kafka: KafkaConfig,
        catalog: &Catalog,
        runtime: tokio::runtime::Handle,
        stop: Arc<AtomicBool>,
        reset: Option<Reset>,
    ) -> Result<Self, ProcessorError> {
        // The counters registered below must reach the exporter, not a no-op recorder.
        m::prometheus();
        check(&config)?;
        let health = Arc::new(ProcessorHealth::default());
        let causes = health.liveness.causes.clone();
        let registry = RegistryClient::from_config(&config.registry)
            .map_err(|e| ProcessorError::Config(format!("[processor.registry] {e}")))?;
        let registry = Arc::new(registry);
        let mut reference_topics: Vec<String> =
            config.sources.iter().filter_map(|s| s.reference.clone()).collect();
        reference_topics.sort();
        reference_topics.dedup();
        let references = References::start(
            &kafka,
            &reference_topics,
            Duration::from_millis(config.reference_load_timeout_ms),
            stop,
        )?;
        // Partition counts as the cluster has them (the key check must agree with the topic).
        let md_client: BaseConsumer<Watched> = kafka
            .consumer(None)
            .create_with_context(Watched { causes: causes.clone() })
            .map_err(|e| KafkaError::new("creating a metadata client", e))?;
        let md = cause::fetch_metadata(&md_client, Duration::from_secs(10))?;
        let mut inputs = Vec::new();
        for s in &config.sources {
            let spec = catalog.get(&s.topic).ok_or_else(|| {
                ProcessorError::Config(format!(
                    "source topic {} is not in the topic catalog",
                    s.topic
                ))
            })?;
            let key_field = spec.key_field.clone().ok_or_else(|| {
                ProcessorError::Config(format!(
                    "source topic {} has no key_field in the catalog",
                    s.topic
                ))
            })?;
            inputs.push(Input {
                topic: s.topic.clone(),
                records_in: metrics::counter!(m::RECORDS_IN, "topic" => s.topic.clone()),
                records_replayed: metrics::counter!(m::RECORDS_REPLAYED, "topic" => s.topic.clone()),
                late: metrics::counter!(m::LATE_RECORDS, "topic" => s.topic.clone()),
                duplicates: metrics::counter!(m::DUPLICATES, "topic" => s.topic.clone()),
                filter: Filter {
                    key_field,
                    measure: s.measure.clone(),
                    count_by: s.count_by.clone(),
                    partitions: partitions(&md, spec),
                    max_future_ms: config.max_future_ms,
                    max_past_ms: config.max_past_ms,
                },
                outputs: outputs(&s.topic, catalog, &registry, &runtime)?,
                reference: s
                    .reference
                    .as_ref()
                    .and_then(|r| references.table(r).map(|t| (r.clone(), t))),
            });
        }
        let sources: Vec<SourceTopics<'_>> = inputs
            .iter()
            .map(|i| SourceTopics {
                topic: &i.topic,
                outputs: [&i.outputs.tumbling.topic, &i.outputs.sliding.topic],
            })
            .collect();
        resume::check_committed(&kafka, &config.group_id, &md, &sources, reset)?;
        let (task, txn) = (task_config(&config), txn_settings(&config));
        let decoder = Decoder::new(registry, runtime);
        let pipeline = Pipeline { config, kafka, inputs, decoder, task, txn, reset, causes };
        Ok(Self { pipeline: Arc::new(pipeline), health })
    }

    /// What the health endpoint reads.
    pub fn status(&self) -> Arc<ProcessorHealth> {
        Arc::clone(&self.health)
    }

    /// Processes until `stop` is set, rebuilding the consumer and producer after errors.
    pub fn run(&self, stop: &AtomicBool) -> Result<(), ProcessorError> {
        let topics: Vec<&str> = self.pipeline.inputs.iter().map(|s| s.topic.as_str()).collect();
        let count = |reason: Rebuild| {
            metrics::counter!(m::REBUILDS, "reason" => reason.label()).increment(1);
        };
        run_members(stop, &topics, &self.health.liveness, || self.member(&topics), count);
        Ok(())
    }

    /// A member of the group: a [`Worker`] with a new transactional producer and consumer.
    fn member(&self, topics: &[&str]) -> Result<ProcessorConsumer, Rebuild> {
        let producer = self.pipeline.producer().map_err(|e| {
            // A refusal (a missing ACL for the transactional id) is logged once, by `note`.
            if !self.pipeline.causes.note(&e.cause) {
                tracing::warn!(error = %e, "starting the transactional producer");
            }
            Rebuild::Producer
        })?;
        let worker = Worker::new(Arc::clone(&self.pipeline), Arc::clone(&self.health), producer);
        let membership = Membership {
            group_id: &self.pipeline.config.group_id,
            instance_id: Some(self.pipeline.transactional_id()),
            session_timeout_ms: Some(10_000),
            statistics_interval_ms: 1_000,
            prefetch_kbytes: None,
        };
        let consumer = membership.create(&self.pipeline.kafka, worker).map_err(|e| {
            tracing::warn!(error = %e, "starting the consumer");
            Rebuild::Consumer
        })?;
        tracing::info!(transactional_id = %self.pipeline.transactional_id(), topics = ?topics, "processor running");
        Ok(consumer)
    }
}
