//! `POST /api/v1/sql`: one query on the warehouse while the sink writes.
//!
//! A request is JSON (`{"sql": "..."}` with `Content-Type: application/json`): a web page can
//! send a `text/plain` POST to a loopback port without asking, but not a JSON one or one with
//! an `Authorization` header (the browser asks first, and this service grants no cross-origin
//! request). With `[sink] sql_token` set, the request carries `Authorization: Bearer <token>`;
//! without it, the request must be sent to an address or `localhost`, not to a name (DNS
//! rebinding).
//! The query runs on a connection of its own ([`crate::sql`] says what it may do), at most
//! `sql_timeout_ms` (then DuckDB's interrupt stops it) and answers at most `sql_max_rows` rows.

use crate::config::SinkConfig;
use crate::sql::{self, QueryError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tributary_core::secret::{digest, same_digest, Secret};

/// After the timeout, how long the handler keeps interrupting before it answers anyway.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// What the endpoint needs: a connection to clone per query, and its limits.
pub(crate) struct SqlState {
    base: Mutex<duckdb::Connection>,
    max_rows: usize,
    timeout: Duration,
    token: Option<Secret>,
}

impl SqlState {
    pub(crate) fn new(base: duckdb::Connection, config: &SinkConfig) -> Self {
        Self {
            base: Mutex::new(base),
            max_rows: config.sql_max_rows,
            timeout: Duration::from_millis(config.sql_timeout_ms),
            token: config.sql_token.clone(),
        }
    }
}

/// The body of a request.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    /// Exactly one query.
    sql: String,
}

/// A refusal as the platform answers every client error: `{"error", "message"}`.
fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = Json(serde_json::json!({"error": code, "message": message.into()}));
    if status == StatusCode::UNAUTHORIZED {
        return (status, [(header::WWW_AUTHENTICATE, "Bearer realm=\"tributary\"")], body)
            .into_response();
    }
    (status, body).into_response()
}

/// Whether the request names this machine by an address or `localhost`. A web page that points
/// a name of its own at 127.0.0.1 (DNS rebinding) is "same origin" with this port to the
/// browser, but its requests carry that name in `Host`.
fn addressed_locally(headers: &HeaderMap) -> Result<(), String> {
    // A browser always sends `Host`; a client that does not is no web page.
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(name.to_owned())
    }
}

/// The bearer token when one is required, else the name the request was sent to.
fn authorize(state: &SqlState, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &state.token else {
        return addressed_locally(headers).err().map(|name| {
            refuse(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "without [sink] sql_token, queries are taken only when sent to an address or \
                     localhost, not to the name {name:?} (a web page can point a name at this \
                     machine); set sql_token to query through a name"
                ),
            )
        });
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let message = match given {
        None => "this endpoint needs a bearer token: Authorization: Bearer <[sink] sql_token>",
        Some(t) if !same_digest(t.as_bytes(), &digest(expected.expose().as_bytes())) => {
            "the bearer token was refused"
        }
        Some(_) => return None,
    };
    Some(refuse(StatusCode::UNAUTHORIZED, "unauthorized", message))
}

/// Authorization, then the media type; `None` admits the request.
fn admit(state: &SqlState, headers: &HeaderMap) -> Option<Response> {
    if let Some(refusal) = authorize(state, headers) {
        return Some(refusal);
    }
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = media.split(';').next().unwrap_or("").trim();
    (!essence.eq_ignore_ascii_case("application/json")).then(|| {
        refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the query as JSON, {{\"sql\": \"...\"}}, with Content-Type: application/json (not {:?})",
                if media.is_empty() { "none" } else { media }
            ),
        )
    })
}

/// The result of `task` if it ends within `timeout`; else `None`, after interrupting the query
/// until it ends (an interrupt that lands between two of its statements, the parse check and
/// the query, is not kept for the next one) or [`INTERRUPT_GRACE`] has passed.
async fn within<T>(
    mut task: tokio::task::JoinHandle<T>,
    interrupt: &duckdb::InterruptHandle,
    timeout: Duration,
) -> Option<Result<T, tokio::task::JoinError>> {
    if let Ok(done) = tokio::time::timeout(timeout, &mut task).await {
        return Some(done);
    }
    let deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
    loop {
        interrupt.interrupt();
        if tokio::time::timeout(Duration::from_millis(50), &mut task).await.is_ok() {
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                grace_secs = INTERRUPT_GRACE.as_secs(),
                "a query still runs after its interrupts; answering without it"
            );
            return None;
        }
    }
}

/// Runs one query on a connection of its own, interrupted after the timeout.
pub(crate) async fn sql(
    State(state): State<Arc<SqlState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = admit(&state, &headers) {
        return refusal;
    }
    let request: SqlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body must be {{\"sql\": \"<one query>\"}}: {e}"),
            )
        }
    };
    let conn = {
        let base = state.base.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        base.try_clone()
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "opening a query connection");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "warehouse_unavailable",
                "the warehouse cannot take a query now",
            );
        }
    };
    let interrupt = conn.interrupt_handle();
    let max_rows = state.max_rows;
    let task = tokio::task::spawn_blocking(move || sql::query(&conn, &request.sql, max_rows));
    let Some(result) = within(task, &interrupt, state.timeout).await else {
        let ms = state.timeout.as_millis();
        return refuse(
            StatusCode::BAD_REQUEST,
            "query_timeout",
            format!("the query ran past {ms} ms ([sink] sql_timeout_ms) and was interrupted"),
        );
    };
    match result {
        Ok(Ok(answer)) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "columns": answer.columns,
                "rows": answer.rows,
                "truncated": answer.truncated,
            })),
        )
            .into_response(),
        Ok(Err(QueryError::Refused(message))) | Ok(Err(QueryError::Failed(message))) => {
            refuse(StatusCode::BAD_REQUEST, "invalid_query", message)
        }
        Err(e) => {
            tracing::warn!(error = %e, "running a query");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the query failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_are_local_names() {
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, h.parse().expect("header"));
            addressed_locally(&headers)
        };
        for local in ["127.0.0.1:8084", "localhost:8084", "LOCALHOST", "[::1]:8084", "10.0.0.7"] {
            assert_eq!(host(local), Ok(()), "{local}");
        }
        for name in ["attacker.example:8084", "127.0.0.1.nip.io:8084", "sink.internal"] {
            assert!(host(name).is_err(), "{name}");
        }
        assert_eq!(addressed_locally(&HeaderMap::new()), Ok(()));
    }
}
