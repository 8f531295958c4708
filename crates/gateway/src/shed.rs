//! Load shedding: at most `max_in_flight_requests` API requests are worked on at once; the
//! next one is answered at once with `503 overloaded` and `Retry-After` instead of queueing
//! without bound (and its memory with it). Health, the OpenAPI document and `/metrics` are
//! never shed, so probes and scrapes still see an overloaded instance as alive.

use crate::error::ApiError;
use crate::metrics as m;
use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Paths that are always served: cheap, and needed most when the instance is busy.
fn never_shed(path: &str) -> bool {
    path.starts_with("/api/v1/health") || path == "/api/v1/openapi.json" || path == "/metrics"
}

/// Takes a slot for the request, or answers `503 overloaded` when none is free. A WebSocket
/// stream holds its slot only until it is upgraded.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if never_shed(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_slot) = std::sync::Arc::clone(&state.inner.in_flight).try_acquire_owned() else {
        metrics::counter!(m::REQUESTS_SHED).increment(1);
        let limit = state.inner.config.max_in_flight_requests;
        let retry_after_secs = state.inner.config.retry_after_secs;
        return ApiError::Overloaded { limit, retry_after_secs }.into_response();
    };
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_scrapes_are_never_shed() {
        for p in ["/api/v1/health", "/api/v1/health/live", "/api/v1/health/ready", "/metrics"] {
            assert!(never_shed(p), "{p}");
        }
        for p in
            ["/api/v1/events/t", "/api/v1/events/t/batch", "/api/v1/stream/t", "/api/v1/topics"]
        {
            assert!(!never_shed(p), "{p}");
        }
    }
}
