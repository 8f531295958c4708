//! Operations endpoints: health, metrics (Prometheus and a JSON summary), OpenAPI, the topic
//! catalog, and the JSON answers for unknown routes.

use crate::error::{ApiError, ErrorBody};
use crate::metrics::{self as m};
use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tributary_core::TopicRole;
use utoipa::OpenApi;

/// Results of recent health checks are reused for this long, so a busy load balancer does not
/// turn into a metadata storm on the broker.
const HEALTH_CACHE: Duration = Duration::from_millis(500);

/// The last health check and when it ran.
#[derive(Default)]
pub struct HealthCache {
    last: Mutex<Option<(Instant, Result<usize, String>)>>,
}

/// Answer of the health endpoint.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `up` when the broker answers and every catalog topic exists, else `down`.
    pub kafka: String,
    /// Brokers seen in the cluster metadata.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub brokers: Option<usize>,
    /// Why Kafka is considered down.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub uptime_secs: u64,
}

/// What the health answer, open to anyone, says about a failed check: the kind of failure,
/// never librdkafka's text, which can name brokers, hosts and ports (that goes to the log).
fn public_reason(err: &tributary_kafka::KafkaError, timeout_ms: u64) -> String {
    use rdkafka::types::RDKafkaErrorCode as C;
    match err.cause.rdkafka_error_code() {
        Some(C::Authentication | C::SaslAuthenticationFailed) => {
            "kafka refused the gateway's credentials (SASL authentication failed)".to_owned()
        }
        Some(C::ClusterAuthorizationFailed | C::TopicAuthorizationFailed) => {
            "kafka denied the gateway access (authorization failed)".to_owned()
        }
        Some(C::SSL) => "the TLS handshake with kafka failed".to_owned(),
        Some(code) => format!("kafka unreachable: no answer within {timeout_ms} ms ({code:?})"),
        None => format!("kafka unreachable: no answer within {timeout_ms} ms"),
    }
}

/// Whether every catalog topic exists and may be used: the brokers seen, or what is wrong.
async fn catalog_check(
    state: &AppState,
    info: &tributary_kafka::ClusterInfo,
    timeout: Duration,
) -> Result<usize, String> {
    let missing: Vec<String> = state
        .inner
        .catalog
        .iter()
        .map(|t| t.name.clone())
        .filter(|name| !info.topics.contains(name))
        .collect();
    if missing.is_empty() {
        let catalog = &state.inner.catalog;
        state.inner.replicas.check(info, |t| catalog.get(t).is_some(), timeout).await?;
        return Ok(info.brokers);
    }
    match state.inner.producer.denied_topics(missing.clone(), timeout).await {
        Ok(denied) if !denied.is_empty() => Err(format!(
            "kafka denied the gateway access to catalog topics: {} (authorization failed; \
             grant the gateway's user an ACL for them)",
            denied.join(", ")
        )),
        Ok(_) => Err(format!(
            "catalog topics missing on the cluster: {}; create them with `tributary topics apply`",
            missing.join(", ")
        )),
        Err(e) => {
            tracing::warn!(error = %e, "health check: kafka did not answer");
            Err(public_reason(&e, state.inner.config.health_timeout_ms))
        }
    }
}

/// Answer of the liveness endpoint.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Live {
    /// Always `ok`: the process accepts and serves requests.
    pub status: String,
    pub uptime_secs: u64,
}

/// `GET /api/v1/health/live`: 200 while the process serves requests, whatever Kafka's state.
/// Load balancers and container health checks follow this one, so an instance that answers
/// 503 with `Retry-After` during a broker outage is kept, not replaced.
#[utoipa::path(get, path = "/api/v1/health/live", tag = "ops", responses(
    (status = 200, description = "The process serves requests", body = Live),
))]
pub async fn live(State(state): State<AppState>) -> Json<Live> {
    Json(Live { status: "ok".into(), uptime_secs: state.inner.started.elapsed().as_secs() })
}

/// `GET /api/v1/health/ready`: the same answer as `GET /api/v1/health`.
#[utoipa::path(get, path = "/api/v1/health/ready", tag = "ops", responses(
    (status = 200, description = "Kafka reachable and every catalog topic exists", body = Health),
    (status = 503, description = "Not ready; `reason` says why", body = Health),
))]
pub async fn ready(state: State<AppState>) -> Response {
    health(state).await
}

/// `GET /api/v1/health` (readiness): 200 when the broker answers and every catalog topic
/// exists, 503 with the reason and `Retry-After` when not.
#[utoipa::path(get, path = "/api/v1/health", tag = "ops", responses(
    (status = 200, description = "Kafka reachable and every catalog topic exists", body = Health),
    (status = 503, description = "Not ready; `reason` says why", body = Health),
))]
pub async fn health(State(state): State<AppState>) -> Response {
    let cached = {
        let last =
            state.inner.health.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref().filter(|(at, _)| at.elapsed() < HEALTH_CACHE).map(|(_, r)| r.clone())
    };
    let result = match cached {
        Some(r) => r,
        None => {
            let timeout = Duration::from_millis(state.inner.config.health_timeout_ms);
            let r = match state.inner.producer.cluster_info(timeout).await {
                Err(e) => {
                    // The details (hosts, ports, librdkafka's text) go to the log only.
                    tracing::warn!(error = %e, "health check: kafka did not answer");
                    Err(public_reason(&e, state.inner.config.health_timeout_ms))
                }
                Ok(info) => catalog_check(&state, &info, timeout).await,
            };
            metrics::gauge!(m::KAFKA_UP).set(if r.is_ok() { 1.0 } else { 0.0 });
            *state.inner.health.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), r.clone()));
            r
        }
    };
    let uptime_secs = state.inner.started.elapsed().as_secs();
    match result {
        Ok(brokers) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                kafka: "up".into(),
                brokers: Some(brokers),
                reason: None,
                uptime_secs,
            }),
        )
            .into_response(),
        Err(reason) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                    kafka: "down".into(),
                    brokers: None,
                    reason: Some(reason),
                    uptime_secs,
                }),
            )
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, state.inner.config.retry_after_secs.into());
            r
        }
    }
}

/// Per-topic counts in the JSON summary.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicCounts {
    /// Events Kafka acknowledged.
    pub produced: u64,
    /// Events Kafka did not acknowledge.
    pub produce_errors: u64,
    /// Events refused before Kafka (bad input).
    pub rejected: u64,
    /// Retries answered from the dedupe window.
    pub duplicates: u64,
}

/// Answer of `GET /api/v1/metrics`: a summary for people; Prometheus scrapes `/metrics`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsSummary {
    pub uptime_secs: u64,
    pub topics: BTreeMap<String, TopicCounts>,
    /// Records handed to Kafka and not yet acknowledged.
    pub producer_in_flight: i32,
    /// Event ids remembered by the dedupe window.
    pub dedupe_entries: usize,
    /// Open WebSocket streams.
    pub websocket_streams: i64,
}

/// `GET /api/v1/metrics`: counts since start, as JSON.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "ops", responses((status = 200, body = MetricsSummary)))]
pub async fn metrics_summary(State(state): State<AppState>) -> Json<MetricsSummary> {
    let topics = state
        .inner
        .topics
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                TopicCounts {
                    produced: t.records_n.load(Ordering::Relaxed),
                    produce_errors: t.errors_n.load(Ordering::Relaxed),
                    rejected: t.rejected_n.load(Ordering::Relaxed),
                    duplicates: t.duplicates_n.load(Ordering::Relaxed),
                },
            )
        })
        .collect();
    Json(MetricsSummary {
        uptime_secs: state.inner.started.elapsed().as_secs(),
        topics,
        producer_in_flight: state.inner.producer.in_flight(),
        dedupe_entries: state.inner.dedupe.len(),
        websocket_streams: state.inner.ws_streams.load(Ordering::Relaxed),
    })
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn prometheus(State(state): State<AppState>) -> Response {
    metrics::gauge!(m::PRODUCER_IN_FLIGHT).set(f64::from(state.inner.producer.in_flight()));
    metrics::gauge!(m::DEDUPE_ENTRIES).set(state.inner.dedupe.len() as f64);
    let handle = m::prometheus();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
        .into_response()
}

/// A catalog entry as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicView {
    pub name: String,
    pub partitions: i32,
    pub key_field: Option<String>,
    pub role: TopicRole,
    /// How values are encoded on Kafka.
    pub value_format: tributary_core::ValueFormat,
    /// Whether `POST /api/v1/events/{topic}` accepts events.
    pub writable: bool,
}

/// `GET /api/v1/topics`: the topic catalog.
#[utoipa::path(get, path = "/api/v1/topics", tag = "ops", responses((status = 200, body = Vec<TopicView>)))]
pub async fn topics(State(state): State<AppState>) -> Json<Vec<TopicView>> {
    Json(
        state
            .inner
            .catalog
            .iter()
            .map(|t| TopicView {
                name: t.name.clone(),
                partitions: t.partitions,
                key_field: t.key_field.clone(),
                role: t.role,
                value_format: t.value_format,
                writable: t.writable(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::KafkaError as RdError;
    use rdkafka::types::RDKafkaErrorCode as C;

    fn reason(cause: RdError) -> String {
        public_reason(&tributary_kafka::KafkaError::new("fetching cluster metadata", cause), 2000)
    }

    #[test]
    fn health_names_the_kind_of_failure_and_no_host() {
        let down = reason(RdError::MetadataFetch(C::BrokerTransportFailure));
        assert_eq!(down, "kafka unreachable: no answer within 2000 ms (BrokerTransportFailure)");
        let auth = reason(RdError::MetadataFetch(C::Authentication));
        assert!(auth.contains("SASL authentication failed"), "{auth}");
        let denied = reason(RdError::MetadataFetch(C::ClusterAuthorizationFailed));
        assert!(denied.contains("authorization failed"), "{denied}");
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tributary gateway", description = "HTTP and WebSocket ingestion for Kafka"),
    paths(
        crate::events::publish,
        crate::events::publish_batch,
        crate::events::latest,
        crate::stream::stream,
        health,
        live,
        ready,
        metrics_summary,
        topics,
    ),
    components(schemas(ErrorBody, tributary_core::Event, crate::stream::Frame))
)]
struct ApiDoc;

/// The OpenAPI document, generated from the handlers' annotations.
pub fn openapi_doc() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let mut doc = ApiDoc::openapi();
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("JWT")
        .description(Some(
            "Required when the gateway has jwt_secret or jwt_public_key set: writes need the \
             scope events:write, reads events:read (or events:write:<topic> / \
             events:read:<topic>). WebSocket streams also take the token as the subprotocol \
             tributary.bearer.<JWT> (offered with tributary.bearer) or as ?access_token=.",
        ))
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    for (path, item) in &mut doc.paths.paths {
        for (method, op) in [
            (axum::http::Method::GET, item.get.as_mut()),
            (axum::http::Method::POST, item.post.as_mut()),
        ] {
            let (Some(op), Some(need)) = (op, crate::auth::need(&method, path)) else { continue };
            let scope = format!("events:{}", need.action);
            op.security = Some(vec![SecurityRequirement::new("bearer", [scope])]);
            op.responses.responses.insert("429".to_owned(), rate_limited().into());
        }
    }
    doc
}

/// The `429` every rate-limited operation may answer (`[gateway.rate_limit]`).
fn rate_limited() -> utoipa::openapi::Response {
    use utoipa::openapi::{
        ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, ResponseBuilder, Type,
    };
    let header = |text: &str| {
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String).build())
            .description(Some(text))
            .build()
    };
    ResponseBuilder::new()
        .description(
            "The client used up its quota for this route class (`rate_limited`); only when \
             [gateway.rate_limit] sets one",
        )
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
        )
        .header("Retry-After", header("seconds until a request is allowed again"))
        .header("RateLimit-Policy", header("the quota, e.g. \"writes\";q=600;w=60"))
        .header("RateLimit", header("what is left, e.g. \"writes\";r=0;t=20"))
        .build()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_doc())
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
