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
use crate::metrics::TopicMetrics;
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::StreamConsumer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
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
    let ws = ws.protocols([crate::auth::BEARER_PROTOCOL]);
    Ok(ws.on_upgrade(move |socket| run(socket, state, topic, consumer, positions)))
}

fn text(frame: &Frame) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default()))
}

/// How a stream ends on the gateway's side: the close code and reason, and the error frame
/// (with its resume token) sent before the close frame.
struct Farewell {
    code: u16,
    reason: &'static str,
    frame: Option<Frame>,
}

impl Farewell {
    /// A client that did not take a frame in time and gets no error frame.
    fn silent_slow() -> Self {
        Self { code: CLOSE_SLOW_CONSUMER, reason: "", frame: None }
    }
}

/// What became of one record sent to the client.
enum Sent {
    /// The frame left the socket's buffer.
    Delivered,
    /// The client went away.
    Gone,
    /// The client took no frame in time; the positions count what may still reach it.
    Slow,
}

/// One client's stream: where it is and how frames reach it.
struct Session<'a> {
    state: &'a AppState,
    topic: &'a str,
    m: &'a TopicMetrics,
    send_timeout: Duration,
    positions: BTreeMap<i32, i64>,
    tx: SplitSink<WebSocket, Message>,
}

/// Serves one client until it leaves, is too slow, or the gateway shuts down.
async fn run(
    socket: WebSocket,
    state: AppState,
    topic: String,
    consumer: StreamConsumer,
    positions: BTreeMap<i32, i64>,
) {
    let streams = state.inner.ws_streams.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::gauge!(crate::metrics::WS_STREAMS).set(streams as f64);
    let cfg = &state.inner.config;
    let shutdown = state.inner.shutdown.clone();
    let (tx, mut rx) = socket.split();
    let mut session = Session {
        state: &state,
        topic: &topic,
        m: state.metrics_for(&topic),
        send_timeout: Duration::from_millis(cfg.ws_send_timeout_ms),
        positions,
        tx,
    };
    let mut ping = tokio::time::interval(Duration::from_secs(cfg.ws_ping_interval_secs.max(1)));
    ping.tick().await;

    let first = text(&Frame::Subscribed {
        topic: topic.clone(),
        resume_token: encode_token(&topic, &session.positions),
    });
    let end = if session.send(first).await {
        session.pump(&consumer, &mut rx, shutdown, ping).await
    } else {
        Some(Farewell::silent_slow())
    };
    // Free the Kafka reader and its prefetch before waiting on the client.
    drop(consumer);
    if let Some(end) = end {
        session.farewell(end).await;
    }
    let streams = state.inner.ws_streams.fetch_sub(1, Ordering::Relaxed) - 1;
    metrics::gauge!(crate::metrics::WS_STREAMS).set(streams as f64);
}

impl Session<'_> {
    /// Sends `msg` within the send timeout; false when it did not go out.
    async fn send(&mut self, msg: Message) -> bool {
        tokio::time::timeout(self.send_timeout, self.tx.send(msg)).await.is_ok_and(|r| r.is_ok())
    }

    /// Forwards records until the client leaves (`None`) or the stream has to end.
    async fn pump(
        &mut self,
        consumer: &StreamConsumer,
        rx: &mut SplitStream<WebSocket>,
        mut shutdown: watch::Receiver<bool>,
        mut ping: tokio::time::Interval,
    ) -> Option<Farewell> {
        loop {
            tokio::select! {
                () = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    return Some(self.going_away());
                }
                incoming = rx.next() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(_)) => {} // pings are answered by the library; other input is ignored
                },
                _ = ping.tick() => {
                    if !self.send(Message::Ping(Default::default())).await {
                        return Some(Farewell::silent_slow());
                    }
                }
                msg = consumer.recv() => match msg {
                    Ok(msg) => {
                        let record = ConsumedRecord::from_message(&msg);
                        drop(msg);
                        match self.forward(record).await {
                            Sent::Delivered => {}
                            Sent::Gone => return None,
                            Sent::Slow => return Some(self.slow_consumer()),
                        }
                    }
                    Err(err) => {
                        // librdkafka reconnects by itself; a partition error is worth a log line.
                        tracing::debug!(topic = %self.topic, error = %err, "stream read error");
                    }
                }
            }
        }
    }

    /// Sends one record as an event frame whose token counts it as delivered.
    async fn forward(&mut self, record: ConsumedRecord) -> Sent {
        let partition = record.partition;
        let previous = self.positions.insert(partition, record.offset + 1);
        let frame = Frame::Event {
            record: self.state.view(record).await,
            resume_token: encode_token(self.topic, &self.positions),
        };
        // feed = the frame is queued in the socket's buffer; flush = it left it. The two steps
        // tell whether a timed-out frame may still reach the client, so the error token below
        // neither skips nor repeats it.
        let queued = match tokio::time::timeout(self.send_timeout, self.tx.feed(text(&frame))).await
        {
            Ok(Ok(())) => match tokio::time::timeout(self.send_timeout, self.tx.flush()).await {
                Ok(Ok(())) => {
                    self.m.ws_sent.increment(1);
                    return Sent::Delivered;
                }
                Ok(Err(_)) => return Sent::Gone,
                Err(_) => true,
            },
            Ok(Err(_)) => return Sent::Gone, // the client went away
            Err(_) => false,
        };
        if !queued {
            match previous {
                Some(o) => self.positions.insert(partition, o),
                None => self.positions.remove(&partition),
            };
        }
        self.m.ws_slow.increment(1);
        Sent::Slow
    }

    /// The end of a client that took no frame in time: an error with the token of what it got.
    fn slow_consumer(&self) -> Farewell {
        Farewell {
            code: CLOSE_SLOW_CONSUMER,
            reason: "slow consumer; reconnect with your resume_token",
            frame: Some(Frame::Error {
                error: "slow_consumer".into(),
                message: format!(
                    "the client took no frame for {} ms; reconnect with resume_token to continue",
                    self.state.inner.config.ws_send_timeout_ms
                ),
                resume_token: encode_token(self.topic, &self.positions),
            }),
        }
    }

    /// The end of every stream when the gateway shuts down.
    fn going_away(&self) -> Farewell {
        Farewell {
            code: CLOSE_GOING_AWAY,
            reason: "gateway shutting down; reconnect with your resume_token",
            frame: Some(Frame::Error {
                error: "shutting_down".into(),
                message: "the gateway is shutting down; reconnect with resume_token".into(),
                resume_token: encode_token(self.topic, &self.positions),
            }),
        }
    }

    /// Sends the error frame, if any, and the close frame. A slow client still reading gets the
    /// error after the frames already queued; one that reads nothing is dropped when the
    /// farewell deadline passes.
    async fn farewell(&mut self, end: Farewell) {
        let Farewell { code, reason, frame } = end;
        let tx = &mut self.tx;
        let farewell = async {
            if let Some(frame) = frame {
                tx.send(text(&frame)).await?;
            }
            tx.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) })))
                .await
        };
        let _ = tokio::time::timeout(FAREWELL, farewell).await;
    }
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
