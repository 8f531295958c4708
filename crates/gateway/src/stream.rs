//! `WS /api/v1/stream/{topic}`: live events as JSON text frames, resumable without loss or
//! repetition.
//!
//! Every frame carries a resume token: the next offset of every partition after that frame.
//! A client that reconnects with the last token it received continues exactly after the last
//! frame it got. The first frame (`subscribed`) carries the starting token, so even a client
//! that received no event can resume. Memory per client is bounded: librdkafka prefetch is
//! capped (`ws_prefetch_kbytes`) and a client that takes no frame for `ws_send_timeout_ms` is
//! sent a `slow_consumer` error with its token and disconnected.

use crate::error::ApiError;
use crate::events::RecordView;
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::StreamConsumer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tributary_kafka::reader::{positioned_reader, ConsumedRecord, StartAt};

/// Close code sent to a client that cannot keep up (RFC 6455 "try again later").
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;
/// How long the closing error frame and close frame may take to reach a client.
const FAREWELL: Duration = Duration::from_secs(5);
/// Close code sent when the gateway shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

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

/// `GET /api/v1/stream/{topic}` with a WebSocket upgrade.
#[utoipa::path(
    get, path = "/api/v1/stream/{topic}", tag = "stream",
    params(("topic" = String, Path, description = "Full topic name"), StreamQuery),
    responses(
        (status = 101, description = "WebSocket: JSON text frames (`subscribed`, `event`, `error`), see Frame", body = Frame),
        (status = 400, description = "Bad `from` or `resume_token`", body = crate::ErrorBody),
        (status = 404, description = "Unknown topic", body = crate::ErrorBody),
        (status = 503, description = "Kafka unavailable", body = crate::ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
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
    let start = match (&q.resume_token, q.from.as_deref()) {
        (Some(token), _) => {
            StartAt::Offsets(decode_token(&spec.name, token).map_err(|message| {
                ApiError::BadRequest { code: "invalid_resume_token", message }
            })?)
        }
        (None, None | Some("latest")) => StartAt::Latest,
        (None, Some("earliest")) => StartAt::Earliest,
        (None, Some(other)) => {
            return Err(ApiError::BadRequest {
                code: "invalid_parameter",
                message: format!("from must be latest or earliest, got {other:?}"),
            })
        }
    };
    let kafka = state.inner.kafka.clone();
    let name = spec.name.clone();
    let cfg = state.inner.config.clone();
    let (consumer, positions) = tokio::task::spawn_blocking(move || {
        positioned_reader(
            &kafka,
            &name,
            &start,
            cfg.ws_prefetch_kbytes,
            Duration::from_millis(cfg.health_timeout_ms),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reader task failed: {e}")))?
    .map_err(|e| state.unavailable(&e))?;
    let topic = spec.name.clone();
    Ok(ws.on_upgrade(move |socket| run(socket, state, topic, consumer, positions)))
}

fn text(frame: &Frame) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default()))
}

async fn run(
    socket: WebSocket,
    state: AppState,
    topic: String,
    consumer: StreamConsumer,
    mut positions: BTreeMap<i32, i64>,
) {
    let streams = state.inner.ws_streams.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!(crate::metrics::WS_STREAMS).set(streams as f64);
    let m = state.metrics_for(&topic);
    let cfg = &state.inner.config;
    let send_timeout = Duration::from_millis(cfg.ws_send_timeout_ms);
    let mut shutdown = state.inner.shutdown.clone();
    let (mut tx, mut rx) = socket.split();
    let mut ping = tokio::time::interval(Duration::from_secs(cfg.ws_ping_interval_secs.max(1)));
    ping.tick().await;

    let first = text(&Frame::Subscribed {
        topic: topic.clone(),
        resume_token: encode_token(&topic, &positions),
    });
    let mut end: Option<(u16, &'static str, Option<Frame>)> = None;
    if tokio::time::timeout(send_timeout, tx.send(first)).await.map_or(true, |r| r.is_err()) {
        end = Some((CLOSE_SLOW_CONSUMER, "", None));
    }
    while end.is_none() {
        tokio::select! {
            () = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                end = Some((CLOSE_GOING_AWAY, "gateway shutting down; reconnect with your resume_token", Some(Frame::Error {
                    error: "shutting_down".into(),
                    message: "the gateway is shutting down; reconnect with resume_token".into(),
                    resume_token: encode_token(&topic, &positions),
                })));
            }
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {} // pings are answered by the library; other input is ignored
            },
            _ = ping.tick() => {
                if tokio::time::timeout(send_timeout, tx.send(Message::Ping(Default::default()))).await.map_or(true, |r| r.is_err()) {
                    end = Some((CLOSE_SLOW_CONSUMER, "", None));
                }
            }
            msg = consumer.recv() => match msg {
                Ok(msg) => {
                    let record = ConsumedRecord::from_message(&msg);
                    drop(msg);
                    let partition = record.partition;
                    let previous = positions.insert(partition, record.offset + 1);
                    let frame = Frame::Event { record: state.view(record).await, resume_token: encode_token(&topic, &positions) };
                    // feed = the frame is queued in the socket's buffer; flush = it left it. The
                    // two steps tell whether a timed-out frame may still reach the client, so the
                    // error token below neither skips nor repeats it.
                    let queued = match tokio::time::timeout(send_timeout, tx.feed(text(&frame))).await {
                        Ok(Ok(())) => match tokio::time::timeout(send_timeout, tx.flush()).await {
                            Ok(Ok(())) => { m.ws_sent.increment(1); continue; }
                            Ok(Err(_)) => break,
                            Err(_) => true,
                        },
                        Ok(Err(_)) => break, // the client went away
                        Err(_) => false,
                    };
                    if !queued {
                        match previous {
                            Some(o) => positions.insert(partition, o),
                            None => positions.remove(&partition),
                        };
                    }
                    m.ws_slow.increment(1);
                    end = Some((CLOSE_SLOW_CONSUMER, "slow consumer; reconnect with your resume_token", Some(Frame::Error {
                        error: "slow_consumer".into(),
                        message: format!("the client took no frame for {} ms; reconnect with resume_token to continue", cfg.ws_send_timeout_ms),
                        resume_token: encode_token(&topic, &positions),
                    })));
                }
                Err(err) => {
                    // librdkafka reconnects by itself; a partition error is worth a log line.
                    tracing::debug!(topic = %topic, error = %err, "stream read error");
                }
            }
        }
    }
    // Free the Kafka reader and its prefetch before waiting on the client.
    drop(consumer);
    if let Some((code, reason, frame)) = end {
        // A slow client still reading gets the error after the frames already queued; one that
        // reads nothing is dropped when the farewell deadline passes.
        let farewell = async {
            if let Some(frame) = frame {
                tx.send(text(&frame)).await?;
            }
            tx.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) })))
                .await
        };
        let _ = tokio::time::timeout(FAREWELL, farewell).await;
    }
    let streams = state.inner.ws_streams.fetch_sub(1, Ordering::Relaxed) - 1;
    metrics::gauge!(crate::metrics::WS_STREAMS).set(streams as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

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
