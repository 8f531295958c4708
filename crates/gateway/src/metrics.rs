//! Metric names (one place), the Prometheus recorder (`tributary_ops::prometheus` with the
//! gateway's buckets), and the per-request timing middleware.

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Histogram of request durations by `route`, `method`, `status`.
pub const API_REQUEST_DURATION: &str = "api_request_duration_seconds";
/// Records acknowledged by Kafka, by `topic`.
pub const PRODUCER_RECORDS: &str = "kafka_producer_records_total";
/// Writes Kafka did not acknowledge, by `topic` and `reason` (`unavailable`, `rejected`,
/// `internal`).
pub const PRODUCER_ERRORS: &str = "kafka_producer_errors_total";
/// Events refused before reaching Kafka, by `topic` and `reason` (the error code).
pub const EVENTS_REJECTED: &str = "gateway_events_rejected_total";
/// Retries answered from the dedupe window, by `topic`.
pub const DUPLICATES: &str = "gateway_duplicate_events_total";
/// Open WebSocket streams.
pub const WS_STREAMS: &str = "gateway_ws_streams";
/// Events sent to WebSocket clients, by `topic`.
pub const WS_EVENTS_SENT: &str = "gateway_ws_events_sent_total";
/// WebSocket clients disconnected for not keeping up, by `topic`.
pub const WS_SLOW_DISCONNECTS: &str = "gateway_ws_slow_disconnects_total";
/// Streams refused before the upgrade by a cap, by `reason` (`too_many_streams`,
/// `too_many_streams_for_principal`).
pub const WS_REFUSED: &str = "gateway_ws_streams_refused_total";
/// Topics with a shared stream (tail) reader running.
pub const STREAM_READERS: &str = "gateway_stream_readers";
/// Readers of the pool in use (streams catching up and `latest`).
pub const POOL_READERS: &str = "gateway_pool_readers";
/// 1 when the last health check reached the broker, 0 when it did not.
pub const KAFKA_UP: &str = "gateway_kafka_up";
/// Records handed to librdkafka and not yet acknowledged or failed.
pub const PRODUCER_IN_FLIGHT: &str = "kafka_producer_in_flight_records";
/// Event ids remembered by the dedupe window.
pub const DEDUPE_ENTRIES: &str = "gateway_dedupe_entries";
/// Requests answered `503 overloaded` because `max_in_flight_requests` were being worked on.
pub const REQUESTS_SHED: &str = "gateway_requests_shed_total";

/// Requests answered `429 rate_limited`, by `class` (`writes`, `reads`, `streams`).
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
/// Rate-limit buckets held (one per client and class).
pub const RATE_LIMIT_CLIENTS: &str = "gateway_rate_limit_clients";
/// Writes answered `503 queue_full` because the producer's queue was full, by `topic`.
pub const QUEUE_FULL: &str = "gateway_producer_queue_full_total";

/// Request latency buckets in seconds: fine below 100 ms where the spec's targets are.
const BUCKETS: &[tributary_ops::Buckets] = &[(
    API_REQUEST_DURATION,
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
)];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    tributary_ops::prometheus(BUCKETS)
}

/// Per-topic counters, registered once so the hot path only increments atomics.
pub struct TopicMetrics {
    pub records: Counter,
    pub duplicates: Counter,
    pub errors_unavailable: Counter,
    pub errors_rejected: Counter,
    pub errors_internal: Counter,
    pub ws_sent: Counter,
    pub ws_slow: Counter,
    /// Plain counts for the JSON summary.
    pub records_n: AtomicU64,
    pub errors_n: AtomicU64,
    pub rejected_n: AtomicU64,
    pub duplicates_n: AtomicU64,
    topic: String,
}

impl TopicMetrics {
    pub fn new(topic: &str) -> Self {
        let t = topic.to_owned();
        Self {
            records: metrics::counter!(PRODUCER_RECORDS, "topic" => t.clone()),
            duplicates: metrics::counter!(DUPLICATES, "topic" => t.clone()),
            errors_unavailable: metrics::counter!(PRODUCER_ERRORS, "topic" => t.clone(), "reason" => "unavailable"),
            errors_rejected: metrics::counter!(PRODUCER_ERRORS, "topic" => t.clone(), "reason" => "rejected"),
            errors_internal: metrics::counter!(PRODUCER_ERRORS, "topic" => t.clone(), "reason" => "internal"),
            ws_sent: metrics::counter!(WS_EVENTS_SENT, "topic" => t.clone()),
            ws_slow: metrics::counter!(WS_SLOW_DISCONNECTS, "topic" => t.clone()),
            records_n: AtomicU64::new(0),
            errors_n: AtomicU64::new(0),
            rejected_n: AtomicU64::new(0),
            duplicates_n: AtomicU64::new(0),
            topic: t,
        }
    }

    pub fn written(&self, n: u64) {
        self.records.increment(n);
        self.records_n.fetch_add(n, Ordering::Relaxed);
    }

    pub fn duplicate(&self, n: u64) {
        self.duplicates.increment(n);
        self.duplicates_n.fetch_add(n, Ordering::Relaxed);
    }

    pub fn failed(&self, class: tributary_kafka::ErrorClass, n: u64) {
        match class {
            tributary_kafka::ErrorClass::Unavailable => self.errors_unavailable.increment(n),
            tributary_kafka::ErrorClass::Rejected => self.errors_rejected.increment(n),
            tributary_kafka::ErrorClass::Internal => self.errors_internal.increment(n),
        }
        self.errors_n.fetch_add(n, Ordering::Relaxed);
    }

    /// An event refused before Kafka; `reason` is the error code (a small fixed set).
    pub fn rejected(&self, reason: &'static str) {
        metrics::counter!(EVENTS_REJECTED, "topic" => self.topic.clone(), "reason" => reason)
            .increment(1);
        self.rejected_n.fetch_add(1, Ordering::Relaxed);
    }
}

/// The timing of one request into `api_request_duration_seconds`, labelled by the route
/// template (never the raw URI, which would make label sets unbounded).
pub(crate) struct Timing {
    route: Route,
    method: &'static str,
    start: Instant,
}

enum Route {
    Matched(MatchedPath),
    Known(&'static str),
    Unmatched,
}

impl Timing {
    /// Times a request the router has matched (or not).
    pub(crate) fn start(req: &Request) -> Self {
        // Only standard methods become label values: anything else would grow the label set.
        let method: &'static str = match *req.method() {
            axum::http::Method::GET => "GET",
            axum::http::Method::POST => "POST",
            axum::http::Method::PUT => "PUT",
            axum::http::Method::DELETE => "DELETE",
            axum::http::Method::HEAD => "HEAD",
            axum::http::Method::OPTIONS => "OPTIONS",
            axum::http::Method::PATCH => "PATCH",
            _ => "other",
        };
        let route = match req.extensions().get::<MatchedPath>() {
            Some(matched) => Route::Matched(matched.clone()),
            None => Route::Unmatched,
        };
        Self { route, method, start: Instant::now() }
    }

    /// Times a request routed without the router, to the route template `route`.
    pub(crate) fn start_known(method: &'static str, route: &'static str) -> Self {
        Self { route: Route::Known(route), method, start: Instant::now() }
    }

    pub(crate) fn finish(self, resp: &Response) {
        let route = match &self.route {
            Route::Matched(matched) => matched.as_str(),
            Route::Known(route) => route,
            Route::Unmatched => "unmatched",
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        durations(route, self.method, resp.status().as_u16()).record(elapsed);
    }
}

/// A histogram handle per route, method and status, cached per worker thread: the recorder's
/// lookup (label strings built and hashed, a shared map) is paid once per thread and label set,
/// not on every request. The sets are few: route templates times methods times statuses.
fn durations(route: &str, method: &'static str, status: u16) -> Histogram {
    thread_local! {
        static CACHE: std::cell::RefCell<Vec<(String, &'static str, u16, Histogram)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    CACHE.with_borrow_mut(|cache| {
        if let Some((.., h)) =
            cache.iter().find(|(r, m, s, _)| *s == status && *m == method && r == route)
        {
            return h.clone();
        }
        let h = metrics::histogram!(API_REQUEST_DURATION, "route" => route.to_owned(), "method" => method, "status" => status.to_string());
        cache.push((route.to_owned(), method, status, h.clone()));
        h
    })
}
