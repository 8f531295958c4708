//! `WS /api/v1/stream/{topic}`: live events as JSON text frames, resumable without loss or
//! repetition.
//!
//! Every frame carries a resume token: the next offset of every partition after that frame.
//! A client that reconnects with the last token it received continues exactly after the last
//! frame it got. The first frame (`subscribed`) carries the starting token, so even a client
//! that received no event can resume.
//!
//! Streams share Kafka readers ([`hub`]): one tail reader per topic fans each record out to
//! the live streams; a stream that starts behind the tail (`from=earliest`, a resume token)
//! is caught up by a reader from a bounded pool, then joins the fan-out ([`session`]). Memory
//! per client is bounded: its channel from the tail reader holds `ws_subscriber_buffer`
//! records, and a client that falls that far behind, or takes no frame for
//! `ws_send_timeout_ms`, is sent a `slow_consumer` error with its token and disconnected.
//! Streams are capped in total and per principal (refused before the upgrade), client
//! messages are capped in size, a silent client is closed after `ws_idle_timeout_secs`, and a
//! stream ends when its bearer token expires.

pub mod hub;
pub mod session;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::events::RecordView;
use crate::AppState;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary_kafka::reader::StartAt;

pub use hub::Hubs;
use session::{Session, Start};
pub use session::{
    CLOSE_GOING_AWAY, CLOSE_IDLE, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG,
};

/// Query of the stream endpoint.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// `latest` (default: only events written from now on) or `earliest`.
    pub from: Option<String>,
    /// A token from an earlier frame; continues right after that frame (overrides `from`).
    pub resume_token: Option<String>,
}

/// A frame sent to stream clients.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// First frame: the stream is open; the token resumes from the start position.
    Subscribed { topic: String, resume_token: String },
    /// One record.
    Event {
        #[serde(flatten)]
        record: RecordView,
        resume_token: String,
    },
    /// The stream ends because of this error; reconnect with the token.
    Error { error: String, message: String, resume_token: String },
}

/// Encodes per-partition next offsets of `topic` as an opaque URL-safe token.
pub fn encode_token(topic: &str, positions: &BTreeMap<i32, i64>) -> String {
    let mut s = String::with_capacity(topic.len() + positions.len() * 10);
    s.push_str("v1|");
    s.push_str(topic);
    s.push('|');
    for (i, (p, o)) in positions.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&p.to_string());
        s.push(':');
        s.push_str(&o.to_string());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Decodes a token made by [`encode_token`] for `topic`.
pub fn decode_token(topic: &str, token: &str) -> Result<BTreeMap<i32, i64>, String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| "resume_token is not a token this gateway issued".to_owned())?;
    let text = String::from_utf8(raw).map_err(|_| "resume_token is corrupt".to_owned())?;
    let mut parts = text.splitn(3, '|');
    if parts.next() != Some("v1") {
        return Err("resume_token has an unknown version".to_owned());
    }
    let token_topic = parts.next().unwrap_or_default();
    if token_topic != topic {
        return Err(format!("resume_token belongs to topic {token_topic:?}, not {topic:?}"));
    }
    let mut out = BTreeMap::new();
    for pair in parts.next().unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
        let (p, o) = pair.split_once(':').ok_or_else(|| "resume_token is corrupt".to_owned())?;
        let p: i32 = p.parse().map_err(|_| "resume_token is corrupt".to_owned())?;
        let o: i64 = o.parse().map_err(|_| "resume_token is corrupt".to_owned())?;
        if p < 0 || o < 0 {
            return Err("resume_token is corrupt".to_owned());
        }
        out.insert(p, o);
    }
    Ok(out)
}

/// Open streams per principal (the total is `AppState`'s `ws_streams`).
#[derive(Debug, Default)]
pub struct Caps {
    per_principal: Mutex<HashMap<String, usize>>,
}

/// One open stream counted against the caps; released when dropped.
pub struct Slot {
    state: AppState,
    principal: Option<String>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &self.state.inner;
        if let Some(p) = &self.principal {
            let mut map = inner.stream_caps.per_principal.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(p);
                }
            }
        }
        let streams = inner.ws_streams.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(crate::metrics::WS_STREAMS).set(streams as f64);
    }
}

/// Why a stream is refused before the upgrade.
enum Refusal {
    /// `ws_max_streams` are open.
    Total,
    /// The principal has `ws_max_streams_per_principal` open.
    Principal,
}

impl Refusal {
    /// The answer: status and code, with `Retry-After`.
    fn response(&self, state: &AppState) -> Response {
        let cfg = state.config();
        let (status, code, message) = match self {
            Self::Total => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!("this gateway serves at most {} streams; retry later", cfg.ws_max_streams),
            ),
            Self::Principal => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams_for_principal",
                format!(
                    "at most {} streams per client are open at once; close one first",
                    cfg.ws_max_streams_per_principal
                ),
            ),
        };
        metrics::counter!(crate::metrics::WS_REFUSED, "reason" => code).increment(1);
        let body = ErrorBody { error: code.to_owned(), message, field: None };
        let retry = cfg.retry_after_secs.to_string();
        (status, [(header::RETRY_AFTER, retry)], Json(body)).into_response()
    }
}

/// Counts a new stream of `principal` (`None`: only the total cap applies), or refuses it.
fn reserve(state: &AppState, principal: Option<String>) -> Result<Slot, Refusal> {
    let inner = &state.inner;
    let cfg = &inner.config;
    let mut map = inner.stream_caps.per_principal.lock().unwrap_or_else(|e| e.into_inner());
    let total = inner.ws_streams.load(Ordering::Relaxed);
    if total >= i64::try_from(cfg.ws_max_streams).unwrap_or(i64::MAX) {
        return Err(Refusal::Total);
    }
    if let Some(p) = &principal {
        let mine = map.entry(p.clone()).or_default();
        if *mine >= cfg.ws_max_streams_per_principal {
            return Err(Refusal::Principal);
        }
        *mine += 1;
    }
    let streams = inner.ws_streams.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!(crate::metrics::WS_STREAMS).set(streams as f64);
    drop(map);
    Ok(Slot { state: state.clone(), principal })
}

/// When a stream of a token expiring at `exp` (epoch seconds) must end: `exp` plus the clock
/// skew the token check allows.
fn expiry(exp: u64, leeway_secs: u64) -> tokio::time::Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let left = Duration::from_secs(exp.saturating_add(leeway_secs)).saturating_sub(now);
    tokio::time::Instant::now() + left
}

/// Where a stream starts, from its query.
fn start_at(topic: &str, q: &StreamQuery) -> Result<StartAt, ApiError> {
    match (&q.resume_token, q.from.as_deref()) {
        (Some(token), _) => {
            Ok(StartAt::Offsets(decode_token(topic, token).map_err(|message| {
                ApiError::BadRequest { code: "invalid_resume_token", message }
            })?))
        }
        (None, None | Some("latest")) => Ok(StartAt::Latest),
        (None, Some("earliest")) => Ok(StartAt::Earliest),
        (None, Some(other)) => Err(ApiError::BadRequest {
            code: "invalid_parameter",
            message: format!("from must be latest or earliest, got {other:?}"),
        }),
    }
}

/// `GET /api/v1/stream/{topic}` with a WebSocket upgrade.
#[utoipa::path(
    get, path = "/api/v1/stream/{topic}", tag = "stream",
    params(("topic" = String, Path, description = "Full topic name"), StreamQuery),
    responses(
        (status = 101, description = "WebSocket: JSON text frames (`subscribed`, `event`, `error`), see Frame", body = Frame),
        (status = 400, description = "Bad `from` or `resume_token`", body = crate::ErrorBody),
        (status = 404, description = "Unknown topic", body = crate::ErrorBody),
        (status = 429, description = "`too_many_streams_for_principal`: the client has `ws_max_streams_per_principal` streams open", body = crate::ErrorBody),
        (status = 503, description = "`too_many_streams` (`ws_max_streams` are open) or Kafka unavailable", body = crate::ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    principal: Option<Extension<Principal>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let spec = state.topic(&topic)?;
    let ws = ws.map_err(|e| ApiError::BadRequest {
        code: "websocket_upgrade_required",
        message: format!("this endpoint speaks WebSocket only: {}", e.body_text()),
    })?;
    let Query(q) = query
        .map_err(|e| ApiError::BadRequest { code: "invalid_parameter", message: e.body_text() })?;
    let at = start_at(&spec.name, &q)?;
    let cfg = state.config();
    // The principal: the token's subject, else the client's address (when the listener
    // records it); without either only the total cap applies.
    let who = match (principal.as_ref().and_then(|p| p.subject.clone()), peer) {
        (Some(sub), _) => Some(format!("sub:{sub}")),
        (None, Some(Extension(ConnectInfo(addr)))) => Some(format!("ip:{}", addr.ip())),
        (None, None) => None,
    };
    let expires =
        principal.and_then(|Extension(p)| p.expires_at).map(|exp| expiry(exp, cfg.jwt_leeway_secs));
    let slot = match reserve(&state, who) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.response(&state)),
    };
    let start = match at {
        StartAt::Latest => Start::Live(
            state.inner.hubs.join(&state, &spec.name).await.map_err(|e| state.unavailable(&e))?,
        ),
        at => Start::From(at),
    };
    let topic = spec.name.clone();
    let max = cfg.ws_max_client_message_bytes;
    let ws = ws.max_message_size(max).max_frame_size(max);
    let ws = ws.protocols([crate::auth::BEARER_PROTOCOL]);
    Ok(ws.on_upgrade(move |socket| Session::new(socket, state, topic, slot, expires).run(start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ends_at_its_tokens_expiry_plus_the_leeway() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let at = expiry(now + 100, 30);
        let left = at.saturating_duration_since(tokio::time::Instant::now());
        assert!(left > Duration::from_secs(120) && left <= Duration::from_secs(130), "{left:?}");
        // An expiry in the past ends the stream at once.
        let at = expiry(now - 100, 30);
        assert!(at <= tokio::time::Instant::now());
    }

    #[test]
    fn tokens_round_trip_and_belong_to_their_topic() {
        let positions: BTreeMap<i32, i64> = [(0, 5), (1, 0), (23, 1_000_000_000_000)].into();
        let token = encode_token("events.clickstream", &positions);
        assert_eq!(decode_token("events.clickstream", &token), Ok(positions));
        assert!(decode_token("events.iot.sensors", &token).is_err());
        assert!(decode_token("events.clickstream", "not a token!").is_err());
        let forged =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1|events.clickstream|0:-4");
        assert!(decode_token("events.clickstream", &forged).is_err());
    }
}
