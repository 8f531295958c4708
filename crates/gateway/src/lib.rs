//! The ingestion gateway: the spec's HTTP and WebSocket API in front of Kafka.
//!
//! Guarantees: a `201` means Kafka acknowledged the write (`acks=all`, idempotent producer);
//! a rejected event writes nothing; a retried `event_id` within the dedupe window returns the
//! original position and writes nothing; when Kafka is unreachable writes answer `503` with
//! `Retry-After` within `produce_timeout_ms`, while the record keeps its place until
//! `delivery_timeout_ms`, so a retry gets its final position rather than a second write;
//! SIGTERM lets in-flight writes finish (up to `shutdown_grace_secs`).
//!
//! Start reading at [`router`] (the routes), then [`events`] (writes and reads), [`stream`]
//! (the WebSocket stream) and [`ops`] (health, metrics, OpenAPI).

pub mod auth;
pub mod body;
pub mod config;
pub mod dedupe;
pub mod error;
pub mod events;
mod listen;
pub mod metrics;
pub mod ops;
pub mod ratelimit;
pub mod replicas;
pub mod schemas;
mod shed;
pub mod stream;

use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tributary_core::{Catalog, TopicSpec};
use tributary_kafka::{EventProducer, KafkaConfig, KafkaError, ProducerTuning, QueueBound};

pub use config::GatewayConfig;
pub use error::{ApiError, ErrorBody};

/// Why the gateway cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A setting that cannot be used (the JWT key, for example).
    #[error("{0}")]
    Config(String),
}

/// Shared state of one gateway process.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    kafka: KafkaConfig,
    catalog: Catalog,
    producer: EventProducer,
    dedupe: dedupe::Dedupe,
    /// Topics' `min.insync.replicas`, for health (see [`replicas`]).
    replicas: replicas::Replicas,
    schemas: schemas::TopicSchemas,
    topics: HashMap<String, metrics::TopicMetrics>,
    health: ops::HealthCache,
    shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    ws_streams: std::sync::atomic::AtomicI64,
    started: Instant,
    auth: Option<auth::Auth>,
    /// One permit per request that may be worked on at once (see [`shed`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The shared Kafka readers of streams and `latest` (see [`stream::hub`]).
    hubs: stream::Hubs,
    /// Open streams per principal, for `ws_max_streams_per_principal`.
    stream_caps: stream::Caps,
    /// The certificate HTTPS is served with; `None` serves plain HTTP.
    tls: Option<tributary_ops::tls::TlsAcceptor>,
    /// Per-client rate limits; `None` when no route class has a quota.
    limiter: Option<ratelimit::Limiter>,
}

impl AppState {
    /// Builds the state; connects to nothing yet (Kafka is reached on first use).
    pub fn new(
        config: GatewayConfig,
        kafka: KafkaConfig,
        catalog: Catalog,
    ) -> Result<Self, GatewayError> {
        let _ = metrics::prometheus();
        config.validate().map_err(GatewayError::Config)?;
        let auth = auth::Auth::from_config(&config).map_err(GatewayError::Config)?;
        let tls = tributary_ops::tls::TlsAcceptor::from_files(
            config.tls_cert_file.as_deref(),
            config.tls_key_file.as_deref(),
            Duration::from_millis(config.header_timeout_ms),
        )
        .map_err(|e| GatewayError::Config(format!("[gateway] {e}")))?;
        let schemas = schemas::TopicSchemas::new(&config, &catalog)
            .map_err(|e| GatewayError::Config(format!("[gateway.registry] {e}")))?;
        let tuning = ProducerTuning {
            delivery_timeout_ms: config.delivery_timeout_ms,
            ..ProducerTuning::default()
        };
        let limiter =
            ratelimit::Limiter::from_config(&config.rate_limit).map_err(GatewayError::Config)?;
        let bound = QueueBound {
            max_messages: config.producer_queue_max_messages,
            max_kbytes: config.producer_queue_max_kbytes,
        };
        let producer = EventProducer::with_queue_bound(&kafka, tuning, bound)?;
        let replicas = replicas::Replicas::new(&kafka)?;
        let topics =
            catalog.iter().map(|t| (t.name.clone(), metrics::TopicMetrics::new(&t.name))).collect();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let config_in_flight = config.max_in_flight_requests;
        let reader_pool_size = config.reader_pool_size;
        Ok(Self {
            inner: Arc::new(Inner {
                dedupe: dedupe::Dedupe::new(
                    Duration::from_secs(config.dedupe_window_secs),
                    config.dedupe_max_entries,
                ),
                health: ops::HealthCache::default(),
                replicas,
                schemas,
                config,
                kafka,
                catalog,
                producer,
                topics,
                shutdown,
                shutdown_tx,
                ws_streams: std::sync::atomic::AtomicI64::new(0),
                started: Instant::now(),
                auth,
                in_flight: Arc::new(tokio::sync::Semaphore::new(config_in_flight)),
                hubs: stream::Hubs::new(reader_pool_size),
                stream_caps: stream::Caps::default(),
                tls,
                limiter,
            }),
        })
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// A catalog topic by name, or 404 naming the known ones.
    fn topic(&self, name: &str) -> Result<&TopicSpec, ApiError> {
        self.inner.catalog.get(name).ok_or_else(|| ApiError::UnknownTopic {
            topic: name.to_owned(),
            known: self.inner.catalog.names().join(", "),
        })
    }

    /// A topic the API may write, or 404/403.
    fn writable_topic(&self, name: &str) -> Result<&TopicSpec, ApiError> {
        let spec = self.topic(name)?;
        if !spec.writable() {
            return Err(ApiError::TopicNotWritable(name.to_owned()));
        }
        Ok(spec)
    }

    fn metrics_for(&self, topic: &str) -> &metrics::TopicMetrics {
        // Every catalog topic has an entry; callers resolve the topic through the catalog first.
        &self.inner.topics[topic]
    }

    fn unavailable(&self, err: &KafkaError) -> ApiError {
        ApiError::from_kafka(err, self.inner.config.retry_after_secs)
    }

    /// How bearer tokens are checked; `None` when authentication is off.
    pub fn auth(&self) -> Option<&auth::Auth> {
        self.inner.auth.as_ref()
    }

    /// Whether the gateway serves HTTPS (`tls_cert_file` and `tls_key_file` are set).
    pub fn tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// Tells long-lived handlers (WebSocket streams) that the server is shutting down.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown_tx.send_replace(true);
    }
}

/// The path of [`events::publish`], the route taken by every single-event write.
const PUBLISH_ROUTE: &str = "/api/v1/events/{topic}";

/// All routes of the API, with request timing and load shedding. Authentication and rate limiting are layers
/// only when they are configured: a layer that would let every request through still costs
/// each request a boxed future and a state clone.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route(PUBLISH_ROUTE, post(events::publish))
        .route("/api/v1/events/{topic}/batch", post(events::publish_batch))
        .route("/api/v1/events/{topic}/latest", get(events::latest))
        .route("/api/v1/stream/{topic}", get(stream::stream))
        .route("/api/v1/topics", get(ops::topics))
        .route("/api/v1/health", get(ops::health))
        .route("/api/v1/health/live", get(ops::live))
        .route("/api/v1/health/ready", get(ops::ready))
        .route("/api/v1/metrics", get(ops::metrics_summary))
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/metrics", get(ops::prometheus))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed);
    // Inside auth: the rate limiter counts by the subject auth has checked.
    if state.inner.limiter.is_some() {
        app = app.layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::limit));
    }
    if state.auth().is_some() {
        app = app.layer(axum::middleware::from_fn_with_state(state.clone(), auth::require));
    }
    app.layer(axum::middleware::from_fn_with_state(state.clone(), front)).with_state(state)
}

/// What every request passes, in one layer (each layer costs every request a boxed future and
/// a clone of the route's service): its duration into the request histogram, shed 503s
/// included, and a slot of `max_in_flight_requests` (see [`shed`]).
async fn front(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let timing = metrics::Timing::start(&req);
    let resp = match shed::admit(&state, req.uri().path()) {
        Ok(_slot) => next.run(req).await,
        Err(()) => shed::overloaded(&state),
    };
    timing.finish(&resp);
    resp
}

/// The API as each connection calls it: the [`router`], except that a single-event write is
/// answered without it when neither authentication nor rate limiting is configured. The router
/// clones the matched route's service stack and boxes the handler's and the middleware's
/// futures for every request; on the route that carries most requests that was a fifth of
/// the allocations. The direct path does what [`front`] does (timing, load shedding) and
/// calls the same handler; anything it does not recognise exactly goes to the router.
#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
    /// `Some` when single-event writes may skip the router.
    direct: Option<AppState>,
}

impl Api {
    pub(crate) fn new(state: AppState) -> Self {
        let plain = state.inner.auth.is_none() && state.inner.limiter.is_none();
        Self { router: router(state.clone()), direct: plain.then_some(state) }
    }

    /// Answers one request; `peer` is given to the router's handlers as `ConnectInfo`.
    pub(crate) async fn call(
        &self,
        mut req: axum::extract::Request,
        peer: std::net::SocketAddr,
    ) -> axum::response::Response {
        if let Some(state) = &self.direct {
            if req.method() == axum::http::Method::POST {
                if let Some(topic) = publish_topic(req.uri().path()) {
                    let topic = topic.to_owned();
                    return publish_direct(state.clone(), topic, req).await;
                }
            }
        }
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let router = self.router.clone();
        match tower::ServiceExt::oneshot(router, req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// The topic of a single-event write's path, when the path is exactly
/// `/api/v1/events/{topic}` with a topic that needs no decoding (no `%`).
fn publish_topic(path: &str) -> Option<&str> {
    let topic = path.strip_prefix("/api/v1/events/")?;
    let plain = !topic.is_empty() && !topic.contains(['/', '%']);
    plain.then_some(topic)
}

/// [`events::publish`] without the router, timed and shed as [`front`] does.
async fn publish_direct(
    state: AppState,
    topic: String,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let timing = metrics::Timing::start_known("POST", PUBLISH_ROUTE);
    let (parts, body) = req.into_parts();
    let resp = match shed::admit(&state, parts.uri.path()) {
        Ok(_slot) => {
            let path = axum::extract::Path(topic);
            let state = axum::extract::State(state);
            events::publish(state, path, parts.headers, body).await.into_response()
        }
        Err(()) => shed::overloaded(&state),
    };
    timing.finish(&resp);
    resp
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (at most `shutdown_grace_secs`), closes WebSocket streams with a resume token, and
/// flushes the producer.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.inner.config.shutdown_grace_secs);
    let app = Api::new(state.clone());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let st = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        st.begin_shutdown();
        stop_tx.send_replace(true);
    });
    let header_timeout = Duration::from_millis(state.inner.config.header_timeout_ms);
    let tls = state.inner.tls.clone();
    let server = listen::serve_until(listener, app, header_timeout, tls, stop_rx.clone());
    let mut server = tokio::spawn(async move {
        server.await;
        Ok::<(), std::io::Error>(())
    });
    let result = tokio::select! {
        joined = &mut server => Some(joined),
        _ = stop_rx.wait_for(|s| *s) => None,
    };
    let result = match result {
        Some(joined) => joined.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        None => match tokio::time::timeout(grace, server).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(_) => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "requests still running after the grace period"
                );
                Ok(())
            }
        },
    };
    if let Err(err) = state.inner.producer.flush(grace).await {
        // Dropping the producer gives these up: written or not, nobody learns which.
        let unacknowledged = state.inner.producer.in_flight();
        tracing::warn!(error = %err, unacknowledged, "records still unacknowledged at shutdown");
    }
    result
}
