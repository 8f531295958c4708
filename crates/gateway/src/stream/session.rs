//! One client's stream after the upgrade: catch-up from its own position with a pooled
//! reader, then the live fan-out of its topic's tail reader, until it leaves or has to go.

use super::hub::{LiveRecord, Subscription};
use super::{encode_token, Frame, Slot};
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError as RdError;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tributary_kafka::reader::{positioned_reader, ConsumedRecord, ReaderTuning, StartAt};

/// Close code sent to a client that cannot keep up (RFC 6455 "try again later"); also sent
/// when Kafka cannot be read.
pub const CLOSE_SLOW_CONSUMER: u16 = 1013;
/// Close code sent when the gateway shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code sent when a client's message is larger than `ws_max_client_message_bytes`
/// (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code sent when the stream's token expires (application range: 4000 + HTTP 401).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;
/// Close code sent when the client sent nothing, not even a pong, for `ws_idle_timeout_secs`
/// (application range: 4000 + HTTP 408).
pub const CLOSE_IDLE: u16 = 4408;
/// How long the closing error frame and close frame may take to reach a client.
const FAREWELL: Duration = Duration::from_secs(5);

/// How the client's side of a stream ended.
enum ClientEnd {
    Left,
    TooBig,
    Idle,
}

/// Where a session starts: already joined to the live tail, or from a position to catch up.
pub enum Start {
    Live(Subscription),
    From(StartAt),
}

fn text(frame: &Frame) -> Message {
    Message::Text(Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default()))
}

/// How a stream ends on the gateway's side: the close code and reason, and the error frame
/// (with its resume token) sent before the close frame.
pub struct Farewell {
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
    /// The frame left the socket's buffer (or was already delivered before).
    Delivered,
    /// The client went away.
    Gone,
    /// The client took no frame in time; the positions count what may still reach it.
    Slow,
}

/// Reads the client's side: pongs and messages keep it alive; a message above `max_bytes`,
/// or nothing for `idle`, ends it.
async fn watch_client(
    mut rx: SplitStream<WebSocket>,
    max_bytes: usize,
    idle: Duration,
) -> ClientEnd {
    loop {
        let msg = match tokio::time::timeout(idle, rx.next()).await {
            Err(_) => return ClientEnd::Idle,
            Ok(None | Some(Ok(Message::Close(_)))) => return ClientEnd::Left,
            Ok(Some(Err(e))) => {
                // The WebSocket library refuses a frame above the limit before reading it.
                let e = e.to_string();
                let too_big = e.contains("too long") || e.contains("Space limit");
                return if too_big { ClientEnd::TooBig } else { ClientEnd::Left };
            }
            Ok(Some(Ok(msg))) => msg,
        };
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(_) => 0,
        };
        if len > max_bytes {
            return ClientEnd::TooBig;
        }
    }
}

/// The text of an `event` frame: the record's view (a JSON object, serialized once for every
/// stream of the topic) with the frame's type and resume token added.
fn event_frame(view: &str, token: &str) -> String {
    let fields = view.strip_prefix('{').and_then(|v| v.strip_suffix('}')).unwrap_or_default();
    let sep = if fields.is_empty() { "" } else { "," };
    format!(r#"{{"type":"event"{sep}{fields},"resume_token":"{token}"}}"#)
}

/// What interrupted a wait.
enum Wake<T> {
    Got(T),
    End(Option<Farewell>),
}

/// One client's stream: where it is and how frames reach it.
pub struct Session {
    state: AppState,
    topic: String,
    send_timeout: Duration,
    positions: BTreeMap<i32, i64>,
    tx: SplitSink<WebSocket, Message>,
    client: Pin<Box<dyn Future<Output = ClientEnd> + Send>>,
    shutdown: watch::Receiver<bool>,
    expires: Option<tokio::time::Instant>,
    ping: tokio::time::Interval,
    /// Counts this stream against the caps until the session ends.
    _slot: Slot,
}

impl Session {
    /// A session on `socket`; `expires` is when the client's token stops being valid.
    pub fn new(
        socket: WebSocket,
        state: AppState,
        topic: String,
        slot: Slot,
        expires: Option<tokio::time::Instant>,
    ) -> Self {
        let cfg = &state.inner.config;
        let (tx, rx) = socket.split();
        let idle = Duration::from_secs(cfg.ws_idle_timeout_secs.max(1));
        let client = Box::pin(watch_client(rx, cfg.ws_max_client_message_bytes, idle));
        let period = Duration::from_secs(cfg.ws_ping_interval_secs.max(1));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A session busy sending does not owe the client a burst of missed pings afterwards.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            send_timeout: Duration::from_millis(cfg.ws_send_timeout_ms),
            shutdown: state.inner.shutdown.clone(),
            state,
            topic,
            positions: BTreeMap::new(),
            tx,
            client,
            expires,
            ping,
            _slot: slot,
        }
    }

    /// Serves the client until it leaves, is too slow, its token expires, or the gateway
    /// shuts down.
    pub async fn run(mut self, start: Start) {
        let end = match start {
            Start::Live(sub) => {
                self.positions.clone_from(&sub.positions);
                if self.send(self.subscribed()).await {
                    self.live(sub).await
                } else {
                    Some(Farewell::silent_slow())
                }
            }
            Start::From(at) => match self.catch_up(at).await {
                Ok(sub) => self.live(sub).await,
                Err(end) => end,
            },
        };
        if let Some(end) = end {
            self.farewell(end).await;
        }
    }

    fn subscribed(&self) -> Message {
        text(&Frame::Subscribed {
            topic: self.topic.clone(),
            resume_token: encode_token(&self.topic, &self.positions),
        })
    }

    /// Waits for `fut` unless the client leaves, the gateway shuts down or the token expires;
    /// pings the client meanwhile.
    async fn wait<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, Option<Farewell>> {
        tokio::pin!(fut);
        loop {
            let expires = self.expires;
            let wake = tokio::select! {
                v = &mut fut => Wake::Got(v),
                end = &mut self.client => Wake::End(match end {
                    ClientEnd::Left => None,
                    ClientEnd::TooBig => Some(self.too_big()),
                    ClientEnd::Idle => Some(self.idle()),
                }),
                () = async { let _ = self.shutdown.wait_for(|s| *s).await; } => {
                    Wake::End(Some(self.going_away()))
                }
                () = async {
                    match expires {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => Wake::End(Some(self.token_expired())),
                _ = self.ping.tick() => {
                    if !self.send(Message::Ping(Default::default())).await {
                        return Err(Some(Farewell::silent_slow()));
                    }
                    continue;
                }
            };
            return match wake {
                Wake::Got(v) => Ok(v),
                Wake::End(end) => Err(end),
            };
        }
    }

    /// Catches the client up from `at` with a pooled reader until it meets the tail reader,
    /// then hands over the live subscription. Every record is sent once: those below the
    /// subscription's positions from the catch-up reader, the rest from the subscription.
    async fn catch_up(&mut self, at: StartAt) -> Result<Subscription, Option<Farewell>> {
        let state = self.state.clone();
        let hubs = &state.inner.hubs;
        let topic = self.topic.clone();
        let Some(permit) = self.wait(hubs.reader_permit_wait()).await? else {
            return Err(Some(self.going_away()));
        };
        let mut at = at;
        let mut first = true;
        loop {
            // Join first: a reader created after the join reaches every subscription position.
            let sub = self.wait(hubs.join(&state, &topic)).await?;
            let sub = sub.map_err(|e| Some(self.unavailable(&e.to_string())))?;
            let consumer = self.open_reader(at).await?;
            if first {
                first = false;
                if !self.send(self.subscribed()).await {
                    return Err(Some(Farewell::silent_slow()));
                }
            }
            let read = self.read_until(&consumer, &sub.positions).await;
            // Closing a librdkafka consumer blocks (it leaves its broker connections cleanly):
            // on a blocking thread, within the permit, so the pool bounds closing readers too.
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
            read?;
            if !sub.lagged() {
                drop(permit);
                return Ok(sub);
            }
            // The tail ran a whole channel ahead meanwhile: take what it kept, go round again.
            let mut sub = sub;
            while let Some(record) = sub.rx.recv().await {
                match self.deliver(record.partition, record.offset, &record.json).await {
                    Sent::Delivered => {}
                    Sent::Gone => return Err(None),
                    Sent::Slow => return Err(Some(self.slow_consumer())),
                }
            }
            at = StartAt::Offsets(self.positions.clone());
        }
    }

    /// A reader positioned at `at`; the session's positions become its start.
    async fn open_reader(&mut self, at: StartAt) -> Result<StreamConsumer, Option<Farewell>> {
        let cfg = &self.state.inner.config;
        let kafka = self.state.inner.kafka.clone();
        let name = self.topic.clone();
        let tuning = ReaderTuning { prefetch_kbytes: cfg.ws_prefetch_kbytes, partition_eof: true };
        let timeout = Duration::from_millis(cfg.health_timeout_ms);
        let open = tokio::task::spawn_blocking(move || {
            positioned_reader(&kafka, &name, &at, tuning, timeout)
        });
        match self.wait(open).await? {
            Ok(Ok((consumer, positions))) => {
                self.positions = positions;
                Ok(consumer)
            }
            Ok(Err(e)) => Err(Some(self.unavailable(&e.to_string()))),
            Err(e) => Err(Some(self.unavailable(&e.to_string()))),
        }
    }

    /// Sends every record of `consumer` below `until` (per partition); a partition is done
    /// at `until`, at a record at or beyond it, or at its end.
    async fn read_until(
        &mut self,
        consumer: &StreamConsumer,
        until: &BTreeMap<i32, i64>,
    ) -> Result<(), Option<Farewell>> {
        let mut open: Vec<i32> = self
            .positions
            .iter()
            .filter(|(p, o)| until.get(p).is_some_and(|t| *o < t))
            .map(|(p, _)| *p)
            .collect();
        while !open.is_empty() {
            let record = match self.wait(consumer.recv()).await? {
                Ok(msg) => ConsumedRecord::from_message(&msg),
                Err(RdError::PartitionEOF(p)) => {
                    open.retain(|q| *q != p);
                    continue;
                }
                Err(err) => {
                    tracing::debug!(topic = %self.topic, error = %err, "stream read error");
                    continue;
                }
            };
            let (p, o) = (record.partition, record.offset);
            if until.get(&p).is_none_or(|t| o >= *t) {
                open.retain(|q| *q != p);
                continue;
            }
            let view = self.state.view(record).await;
            let json = serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_owned());
            match self.deliver(p, o, &json).await {
                Sent::Delivered => {}
                Sent::Gone => return Err(None),
                Sent::Slow => return Err(Some(self.slow_consumer())),
            }
            if o + 1 >= until.get(&p).copied().unwrap_or(0) {
                open.retain(|q| *q != p);
            }
        }
        Ok(())
    }

    /// Sends the subscription's records until the stream has to end.
    async fn live(&mut self, mut sub: Subscription) -> Option<Farewell> {
        loop {
            let record: Option<std::sync::Arc<LiveRecord>> = match self.wait(sub.rx.recv()).await {
                Ok(r) => r,
                Err(end) => return end,
            };
            // A subscriber a whole channel behind was dropped by the tail reader: its token
            // counts exactly what it was sent.
            if sub.lagged() {
                self.state.metrics_for(&self.topic).ws_slow.increment(1);
                return Some(self.slow_consumer());
            }
            let Some(record) = record else { return Some(self.going_away()) };
            match self.deliver(record.partition, record.offset, &record.json).await {
                Sent::Delivered => {}
                Sent::Gone => return None,
                Sent::Slow => return Some(self.slow_consumer()),
            }
        }
    }

    /// Sends within the send timeout; false when it did not go out.
    async fn send(&mut self, msg: Message) -> bool {
        tokio::time::timeout(self.send_timeout, self.tx.send(msg)).await.is_ok_and(|r| r.is_ok())
    }

    /// Sends one record (its view as a JSON object) as an event frame whose token counts it as
    /// delivered; a record before the client's position was sent already and is skipped.
    async fn deliver(&mut self, partition: i32, offset: i64, view: &str) -> Sent {
        if self.positions.get(&partition).is_some_and(|next| offset < *next) {
            return Sent::Delivered;
        }
        let previous = self.positions.insert(partition, offset + 1);
        let frame = event_frame(view, &encode_token(&self.topic, &self.positions));
        let m = self.state.metrics_for(&self.topic);
        // feed = the frame is queued in the socket's buffer; flush = it left it. The two steps
        // tell whether a timed-out frame may still reach the client, so the error token below
        // neither skips nor repeats it.
        let msg = Message::Text(Utf8Bytes::from(frame));
        let queued = match tokio::time::timeout(self.send_timeout, self.tx.feed(msg)).await {
            Ok(Ok(())) => match tokio::time::timeout(self.send_timeout, self.tx.flush()).await {
                Ok(Ok(())) => {
                    m.ws_sent.increment(1);
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
        m.ws_slow.increment(1);
        Sent::Slow
    }

    fn ending(&self, code: u16, reason: &'static str, error: &str, message: String) -> Farewell {
        Farewell {
            code,
            reason,
            frame: Some(Frame::Error {
                error: error.to_owned(),
                message,
                resume_token: encode_token(&self.topic, &self.positions),
            }),
        }
    }

    /// The end of a client that took no frame in time: an error with the token of what it got.
    fn slow_consumer(&self) -> Farewell {
        let ms = self.state.inner.config.ws_send_timeout_ms;
        self.ending(
            CLOSE_SLOW_CONSUMER,
            "slow consumer; reconnect with your resume_token",
            "slow_consumer",
            format!(
                "the client took no frame for {ms} ms or fell a whole buffer behind; \
                 reconnect with resume_token to continue"
            ),
        )
    }

    /// The end of every stream when the gateway shuts down.
    fn going_away(&self) -> Farewell {
        self.ending(
            CLOSE_GOING_AWAY,
            "gateway shutting down; reconnect with your resume_token",
            "shutting_down",
            "the gateway is shutting down; reconnect with resume_token".into(),
        )
    }

    fn unavailable(&self, why: &str) -> Farewell {
        tracing::warn!(topic = %self.topic, error = %why, "opening a stream reader");
        self.ending(
            CLOSE_SLOW_CONSUMER,
            "kafka unavailable; reconnect with your resume_token",
            "kafka_unavailable",
            "kafka could not be read; reconnect with resume_token".into(),
        )
    }

    fn too_big(&self) -> Farewell {
        let max = self.state.inner.config.ws_max_client_message_bytes;
        self.ending(
            CLOSE_TOO_BIG,
            "message too big",
            "message_too_big",
            format!("client messages may be at most {max} bytes"),
        )
    }

    fn idle(&self) -> Farewell {
        let secs = self.state.inner.config.ws_idle_timeout_secs;
        self.ending(
            CLOSE_IDLE,
            "idle timeout",
            "idle_timeout",
            format!("the client sent nothing, not even a pong, for {secs} s"),
        )
    }

    fn token_expired(&self) -> Farewell {
        self.ending(
            CLOSE_TOKEN_EXPIRED,
            "token expired; reconnect with a new token and your resume_token",
            "token_expired",
            "the bearer token expired; reconnect with a fresh token and resume_token".into(),
        )
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
    use crate::events::RecordView;
    use tributary_kafka::reader::ConsumedRecord;

    #[test]
    fn an_event_frame_is_the_frame_serde_would_write() {
        let record = ConsumedRecord {
            partition: 3,
            offset: 41,
            timestamp_ms: Some(1_764_504_000_000),
            key: Some(b"user-1".to_vec()),
            value: Some(br#"{"event_id":"e-1","payload":{"q":"a \"b\""}}"#.to_vec()),
            headers: vec![("event_type".into(), b"click".to_vec())],
        };
        let view = RecordView::from_record(record, None);
        let json = serde_json::to_string(&view).expect("view");
        let token = encode_token("t", &[(3, 42)].into());
        let spliced: serde_json::Value =
            serde_json::from_str(&event_frame(&json, &token)).expect("valid JSON");
        let frame = Frame::Event { record: view, resume_token: token };
        assert_eq!(spliced, serde_json::to_value(&frame).expect("frame"));
        let empty: serde_json::Value =
            serde_json::from_str(&event_frame("{}", "x")).expect("valid JSON");
        assert_eq!(empty, serde_json::json!({"type": "event", "resume_token": "x"}));
    }
}
