//! The write path single and batch writes share: the dedupe window, handing records to the
//! producer, and settling their outcomes.

use super::encode::Prepared;
use crate::dedupe::{Begin, Guard, Outcome};
use crate::error::ApiError;
use crate::AppState;
use chrono::{SecondsFormat, Utc};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tributary_kafka::{Delivered, KafkaError, OutgoingRecord, PendingDelivery};

/// The outcome of writing one prepared event.
pub(super) enum Written {
    New(Delivered),
    Duplicate(Delivered),
}

/// A write that has been started: answered already, or waiting for Kafka.
pub(super) enum Started {
    /// A retry answered from the dedupe window.
    Answered(Written),
    /// Handed to librdkafka; settled by [`AppState::settle`].
    Pending(PendingWrite),
    /// The same event is being written by another request; its outcome is ours.
    InFlight(watch::Receiver<Outcome>),
}

/// A record in librdkafka's hands and the dedupe reservation its outcome settles.
pub(super) struct PendingWrite {
    delivery: PendingDelivery,
    guard: Guard,
}

/// A write whose outcome the request is waiting for; dropped before the outcome came, it
/// hands the write to a settling task.
struct Waiting<'a> {
    state: &'a AppState,
    topic: &'a str,
    write: Option<PendingWrite>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(write) = self.write.take() else { return };
        // Outside a runtime (it is shutting down) no task can wait: the reservation is given
        // up as failed when `write` drops, so a retry writes again rather than waits.
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(self.state.settle(self.topic, vec![write]));
        }
    }
}

/// Settles the dedupe reservation of one write with its outcome, counting a failure; true when
/// it was written. The first error is kept in `first_error` for the caller's log line.
fn settled(
    m: &crate::metrics::TopicMetrics,
    guard: Guard,
    result: &Result<Delivered, KafkaError>,
    first_error: &mut Option<String>,
) -> bool {
    match result {
        Ok(d) => {
            guard.complete(Ok(*d));
            true
        }
        Err(e) => {
            m.failed(e.class, 1);
            first_error.get_or_insert_with(|| e.to_string());
            guard.complete(Err(()));
            false
        }
    }
}

/// When writes start: the record timestamp and the `ingest_time` header. One per request, so a
/// batch formats the time once.
pub(super) struct Ingest {
    millis: i64,
    /// RFC 3339 in UTC with milliseconds: 24 bytes for the years 1000 to 9999.
    text: [u8; INGEST_TEXT],
    len: u8,
}

const INGEST_TEXT: usize = 32;

impl Ingest {
    /// The time now. Its text is formatted once per millisecond and worker thread, not once per
    /// request.
    pub(super) fn now() -> Self {
        thread_local! {
            static LAST: std::cell::Cell<(i64, [u8; INGEST_TEXT], u8)> =
                const { std::cell::Cell::new((i64::MIN, [0; INGEST_TEXT], 0)) };
        }
        let now = Utc::now();
        let millis = now.timestamp_millis();
        let (last, mut text, mut len) = LAST.get();
        if last != millis {
            let formatted = now.to_rfc3339_opts(SecondsFormat::Millis, true);
            let n = formatted.len().min(INGEST_TEXT);
            text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
            len = n as u8;
            LAST.set((millis, text, len));
        }
        Self { millis, text, len }
    }

    fn text(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }
}

impl AppState {
    /// Starts writing one event: consults the dedupe window and hands the record to
    /// librdkafka. Events started one after another keep that order on their partition. When
    /// the producer's queue is full (Kafka slow or gone), the answer is `503 queue_full` at
    /// once: waiting for room would hold the request, and its memory, for nothing.
    pub(super) async fn start_write(
        &self,
        topic: &str,
        p: Prepared,
        ingest: &Ingest,
    ) -> Result<Started, ApiError> {
        let guard = match self.inner.dedupe.begin(p.dedupe_key, p.fingerprint) {
            Begin::Duplicate(d) => return Ok(Started::Answered(Written::Duplicate(d))),
            Begin::Conflict => return Err(ApiError::EventIdConflict(p.event_id)),
            Begin::InFlight(rx) => return Ok(Started::InFlight(rx)),
            Begin::New(guard) => guard,
        };
        let headers: [(&str, &[u8]); 3] = [
            ("event_type", p.event_type.as_bytes()),
            ("ingest_time", ingest.text()),
            ("content_type", p.content_type),
        ];
        let record = OutgoingRecord {
            topic,
            key: p.key.as_deref().map(str::as_bytes),
            value: &p.value,
            headers: &headers,
            timestamp_ms: Some(ingest.millis),
        };
        match self.inner.producer.try_enqueue(record).await {
            Ok(delivery) => Ok(Started::Pending(PendingWrite { delivery, guard })),
            Err(e) => {
                if e.is_queue_full() {
                    metrics::counter!(crate::metrics::QUEUE_FULL, "topic" => topic.to_owned())
                        .increment(1);
                }
                self.metrics_for(topic).failed(e.class, 1);
                guard.complete(Err(()));
                Err(self.unavailable(&e))
            }
        }
    }

    /// Waits for the broker's answers to `writes` and settles the dedupe window with them, in
    /// a task of its own: neither a client hanging up nor the request deadline can leave the
    /// window unsettled. One task per request, not per event.
    pub(super) fn settle(
        &self,
        topic: &str,
        writes: Vec<PendingWrite>,
    ) -> JoinHandle<Vec<Result<Delivered, KafkaError>>> {
        let state = self.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let m = state.metrics_for(&topic);
            let mut results = Vec::with_capacity(writes.len());
            let (mut written, mut first_error) = (0, None);
            // Everything is enqueued already: awaiting in order delays nothing.
            for w in writes {
                let result = w.delivery.await;
                written += u64::from(settled(m, w.guard, &result, &mut first_error));
                results.push(result);
            }
            m.written(written);
            if let Some(error) = first_error {
                tracing::warn!(topic = %topic, %error, "writes not acknowledged");
            }
            results
        })
    }

    /// Waits for one write in the request's own task, until `deadline` at most. When the wait
    /// ends early (the deadline, or the client gone and the request dropped), the write is
    /// handed to [`Self::settle`] so the window is still settled: a task only on that path.
    async fn settle_one(
        &self,
        topic: &str,
        write: PendingWrite,
        deadline: Instant,
    ) -> Result<Written, ApiError> {
        let mut waiting = Waiting { state: self, topic, write: Some(write) };
        let delivery = &mut waiting.write.as_mut().expect("set above").delivery;
        let result = tokio::time::timeout_at(deadline.into(), delivery).await;
        let Ok(result) = result else { return Err(self.late()) };
        let write = waiting.write.take().expect("taken once");
        let m = self.metrics_for(topic);
        let mut error = None;
        if settled(m, write.guard, &result, &mut error) {
            m.written(1);
        }
        if let Some(error) = error {
            tracing::warn!(topic = %topic, %error, "write not acknowledged");
        }
        result.map(Written::New).map_err(|e| self.unavailable(&e))
    }

    /// Waits for writes being settled by [`Self::settle`], until `deadline` at most.
    pub(super) async fn await_settled(
        &self,
        task: JoinHandle<Vec<Result<Delivered, KafkaError>>>,
        count: usize,
        deadline: Instant,
    ) -> Vec<Result<Written, ApiError>> {
        match tokio::time::timeout_at(deadline.into(), task).await {
            Err(_) => (0..count).map(|_| Err(self.late())).collect(),
            Ok(Err(e)) => (0..count)
                .map(|_| Err(ApiError::Internal(format!("write task failed: {e}"))))
                .collect(),
            Ok(Ok(results)) => results
                .into_iter()
                .map(|r| r.map(Written::New).map_err(|e| self.unavailable(&e)))
                .collect(),
        }
    }

    /// Waits for the outcome of the same event written by another request.
    pub(super) async fn await_in_flight(
        &self,
        mut rx: watch::Receiver<Outcome>,
        deadline: Instant,
    ) -> Result<Written, ApiError> {
        let outcome = tokio::time::timeout_at(deadline.into(), async {
            rx.wait_for(Option::is_some).await.map(|o| *o)
        })
        .await;
        match outcome {
            Ok(Ok(Some(Ok(d)))) => Ok(Written::Duplicate(d)),
            Err(_) => Err(self.late()),
            _ => Err(ApiError::Unavailable {
                message: "an earlier request with this event_id failed to write; retry".to_owned(),
                retry_after_secs: self.inner.config.retry_after_secs,
            }),
        }
    }

    /// Waits for one started write, until `deadline` at most.
    pub(super) async fn finish_write(
        &self,
        topic: &str,
        started: Started,
        deadline: Instant,
    ) -> Result<Written, ApiError> {
        match started {
            Started::Answered(w) => Ok(w),
            Started::Pending(w) => self.settle_one(topic, w, deadline).await,
            Started::InFlight(rx) => self.await_in_flight(rx, deadline).await,
        }
    }

    /// The answer at the write deadline. The record is still in librdkafka's hands (until
    /// `delivery_timeout_ms`): its outcome is not known yet, and a retry with the same
    /// `event_id` waits for it instead of writing again.
    fn late(&self) -> ApiError {
        ApiError::Unavailable {
            message: format!(
                "kafka has not acknowledged the write within {} ms and its outcome is not known \
                 yet; retrying with the same event_id is safe and answers its position once written",
                self.inner.config.produce_timeout_ms
            ),
            retry_after_secs: self.inner.config.retry_after_secs,
        }
    }

    /// The deadline of a write that starts now.
    pub(super) fn write_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.inner.config.produce_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn the_ingest_text_is_the_time_of_its_millisecond() {
        for _ in 0..3 {
            let ingest = Ingest::now();
            let at = Utc.timestamp_millis_opt(ingest.millis).single().expect("in range");
            let text = std::str::from_utf8(ingest.text()).expect("UTF-8");
            assert_eq!(text, at.to_rfc3339_opts(SecondsFormat::Millis, true));
            assert_eq!(text.len(), 24);
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
