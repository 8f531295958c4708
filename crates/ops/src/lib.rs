//! What Tributary's services show operators, written once: the process's Prometheus recorder
//! with per-metric histogram buckets ([`prometheus`]), and the `/metrics` and `/health` router
//! of the Kafka loaders — the processor and the sink — built from their consumer-group
//! [`Liveness`] plus the fields each adds ([`Health`], [`router`]).
//!
//! `/health` (readiness; `/health/ready` is the same) answers 200 with `"status": "ok"` while the
//! service's poll loop runs and passes, else 503 with `"status": "unavailable"`; the service's own
//! fields come next to `status`. `/health/live` (liveness) answers 200 unless the loop is running
//! but stuck: a service waiting between rebuilds for Kafka is not ready, yet alive.
//!
//! HTTPS for the gateway's and the registry's own listeners is in [`tls`].

pub mod tls;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};
use tributary_kafka::group::Liveness;

/// Histogram buckets of one metric: its full name and the buckets' upper bounds.
pub type Buckets = (&'static str, &'static [f64]);

/// The process-wide Prometheus recorder, installed on the first call, with that caller's
/// `buckets` (a process runs one service, which always passes the same). Histograms without
/// buckets are rendered as summaries.
pub fn prometheus(buckets: &[Buckets]) -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = buckets
            .iter()
            .try_fold(PrometheusBuilder::new(), |b, (name, bounds)| {
                b.set_buckets_for_metric(Matcher::Full((*name).to_owned()), bounds)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program); then ours only
        // renders what it records itself.
        let _ = metrics::set_global_recorder(recorder);
        keep_up(handle.clone());
        handle
    })
}

/// How often the recorder folds histogram samples into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the recorder's upkeep every [`UPKEEP_EVERY`] on a thread of its own. The recorder keeps
/// every histogram sample until it is drained, by a scrape of `/metrics` or by this: without
/// it, a process nobody scrapes (no Prometheus, or one that stopped) grows by eight bytes for
/// every request it times, for ever. A thread, not a task: the recorder may be made before a
/// runtime exists.
fn keep_up(handle: PrometheusHandle) {
    let spawned =
        std::thread::Builder::new().name("metrics-upkeep".to_owned()).spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting the metrics upkeep thread; samples are drained only by scrapes");
    }
}

/// What a service's `/health` reads.
pub trait Health: Send + Sync + 'static {
    /// Whether the service's poll loop runs and passes.
    fn liveness(&self) -> &Liveness;
    /// The service's own fields of the `/health` body.
    fn fields(&self) -> Map<String, Value>;
}

/// `/metrics` (Prometheus text, from `handle`), `/health` and `/health/ready` (readiness) and
/// `/health/live` (liveness), from `health`.
pub fn router<H: Health>(health: Arc<H>, handle: &'static PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/health", get(health_of::<H>))
        .route("/health/ready", get(health_of::<H>))
        .route("/health/live", get(live_of::<H>))
        .with_state(health)
}

async fn live_of<H: Health>(State(health): State<Arc<H>>) -> impl IntoResponse {
    let (code, body) = live_body(health.liveness().hung());
    (code, Json(body))
}

/// The status and body of `/health/live`: 503 `hung` only when the loop runs but is stuck.
pub fn live_body(hung: bool) -> (StatusCode, Value) {
    if hung {
        (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "hung"}))
    } else {
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    }
}

async fn health_of<H: Health>(State(health): State<Arc<H>>) -> impl IntoResponse {
    let (code, body) = health_body(health.liveness().alive(), health.fields());
    (code, Json(body))
}

/// The status and body of `/health`: `status` first, then the service's `fields`.
pub fn health_body(alive: bool, fields: Map<String, Value>) -> (StatusCode, Value) {
    let mut body = Map::new();
    body.insert("status".into(), Value::from(if alive { "ok" } else { "unavailable" }));
    body.extend(fields);
    let code = if alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    /// Every test installs the recorder with these: whichever runs first installs it.
    const BUCKETS: &[Buckets] = &[("ops_test_seconds", &[0.5, 1.0])];

    #[derive(Default)]
    struct Loader {
        liveness: Liveness,
    }

    impl Health for Loader {
        fn liveness(&self) -> &Liveness {
            &self.liveness
        }

        fn fields(&self) -> Map<String, Value> {
            Map::from_iter([("last_flush_ms".to_owned(), Value::from(7))])
        }
    }

    #[test]
    fn live_says_hung_only_when_stuck() {
        assert_eq!(live_body(false), (StatusCode::OK, serde_json::json!({"status": "ok"})));
        let (code, body) = live_body(true);
        assert_eq!(
            (code, body["status"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("hung"))
        );
    }

    #[test]
    fn health_says_ok_only_when_alive() {
        let fields = || Map::from_iter([("assigned_partitions".to_owned(), Value::from(3))]);
        let (code, body) = health_body(true, fields());
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"status": "ok", "assigned_partitions": 3}));
        let (code, body) = health_body(false, fields());
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
    }

    #[test]
    fn the_first_caller_installs_the_recorder() {
        let h = prometheus(BUCKETS);
        metrics::histogram!("ops_test_seconds").record(0.7);
        let again = prometheus(&[]);
        assert!(std::ptr::eq(h, again), "one recorder per process");
        let text = h.render();
        assert!(
            text.contains("ops_test_seconds_bucket{le=\"0.5\"} 0"),
            "buckets, not a summary: {text}"
        );
    }

    #[tokio::test]
    async fn the_router_serves_health_and_metrics() {
        let app = router(Arc::new(Loader::default()), prometheus(BUCKETS));
        let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
        let resp = app.clone().oneshot(get("/health")).await.expect("health");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "the loop is not running");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body, serde_json::json!({"status": "unavailable", "last_flush_ms": 7}));
        let resp = app.clone().oneshot(get("/health/ready")).await.expect("ready");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "readiness is /health");
        // Not running (waiting between rebuilds, for example for Kafka): alive all the same.
        let resp = app.clone().oneshot(get("/health/live")).await.expect("live");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body, serde_json::json!({"status": "ok"}));
        let resp = app.oneshot(get("/metrics")).await.expect("metrics");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
