//! Load shedding: at most `max_in_flight_requests` API requests are worked on at once; the
//! next one is answered at once with `503 overloaded` and `Retry-After` instead of queueing
//! without bound (and its memory with it). Health, the OpenAPI document and `/metrics` are
//! never shed, so probes and scrapes still see an overloaded instance as alive.

use crate::error::ApiError;
use crate::metrics as m;
use crate::AppState;
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

/// Paths that are always served: cheap, and needed most when the instance is busy.
fn never_shed(path: &str) -> bool {
    path.starts_with("/api/v1/health") || path == "/api/v1/openapi.json" || path == "/metrics"
}

/// The slot a request to `path` holds (a WebSocket stream only until it is upgraded) while it is worked on (`None` for paths never shed), or
/// `Err` when all are taken.
pub(crate) fn admit(state: &AppState, path: &str) -> Result<Option<OwnedSemaphorePermit>, ()> {
    if never_shed(path) {
        return Ok(None);
    }
    std::sync::Arc::clone(&state.inner.in_flight).try_acquire_owned().map(Some).map_err(|_| ())
}

/// The `503 overloaded` answer, counted.
pub(crate) fn overloaded(state: &AppState) -> Response {
    metrics::counter!(m::REQUESTS_SHED).increment(1);
    let limit = state.inner.config.max_in_flight_requests;
    let retry_after_secs = state.inner.config.retry_after_secs;
    ApiError::Overloaded { limit, retry_after_secs }.into_response()
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
