//! The warehouse writes, on a thread of their own: a flush hands its batch over and returns,
//! so the next batch is read and decoded while this one is written. One batch at a time: a
//! flush waits for the one before it, so batches commit in order, and none is written after
//! one that failed (its offsets would skip the failed batch's rows).

use crate::metrics as m;
use crate::rows::Trigger;
use crate::setup::SinkHealth;
use crate::warehouse::{Batch, Warehouse};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The next offset per (topic, partition) of a batch.
pub(crate) type Offsets = HashMap<(Arc<str>, i32), i64>;

/// The writer thread and the batch in flight.
pub(crate) struct Writer {
    batches: Option<SyncSender<(Batch, Trigger)>>,
    /// Per batch, in order: its offsets once it is in the warehouse, or why it is not.
    results: Receiver<Result<Offsets, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The partitions of the batch being written, with their next offsets.
    in_flight: Option<Offsets>,
}

/// Writes each batch of `inbox`, reporting to `outbox`, until one fails or either side goes.
fn write_batches(
    warehouse: &Mutex<Warehouse>,
    health: &SinkHealth,
    inbox: Receiver<(Batch, Trigger)>,
    outbox: mpsc::Sender<Result<Offsets, String>>,
) {
    for (mut batch, trigger) in inbox {
        let started = Instant::now();
        let rows: Vec<(Arc<str>, usize)> =
            batch.rows.iter().map(|(t, r)| (Arc::clone(t), r.len())).collect();
        let result =
            warehouse.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write(&mut batch);
        let failed = result.is_err();
        let sent = outbox.send(match result {
            Ok(()) => {
                metrics::histogram!(m::FLUSH_DURATION).record(started.elapsed().as_secs_f64());
                let count: usize = rows.iter().map(|(_, n)| n).sum();
                metrics::histogram!(m::FLUSH_ROWS).record(count as f64);
                metrics::counter!(m::FLUSHES, "trigger" => trigger.label()).increment(1);
                for (table, n) in &rows {
                    metrics::counter!(m::ROWS_WRITTEN, "table" => table.to_string())
                        .increment(*n as u64);
                }
                health.last_flush_ms.store(crate::setup::now_ms(), Ordering::Relaxed);
                Ok(batch.offsets)
            }
            Err(e) => Err(e.to_string()),
        });
        if failed || sent.is_err() {
            break;
        }
    }
}

impl Writer {
    pub(crate) fn start(warehouse: Arc<Mutex<Warehouse>>, health: Arc<SinkHealth>) -> Self {
        let (batches, inbox) = mpsc::sync_channel::<(Batch, Trigger)>(1);
        let (outbox, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sink-writer".into())
            .spawn(move || write_batches(&warehouse, &health, inbox, outbox))
            .ok();
        Self { batches: Some(batches), results, thread, in_flight: None }
    }

    /// Hands `batch` to the writer thread; false when the thread is gone.
    pub(crate) fn send(&mut self, batch: Batch, trigger: Trigger) -> bool {
        let offsets = batch.offsets.clone();
        let sent = self.batches.as_ref().is_some_and(|b| b.send((batch, trigger)).is_ok());
        if sent {
            self.in_flight = Some(offsets);
        }
        sent
    }

    /// The outcome of the batch in flight: waits for it when `wait`, else only looks.
    /// `None` when nothing is in flight (or, without waiting, it is not written yet).
    pub(crate) fn outcome(&mut self, wait: bool) -> Option<Result<Offsets, String>> {
        self.in_flight.as_ref()?;
        let r = if wait {
            self.results.recv().map_err(|_| "the warehouse writer stopped".to_owned())
        } else {
            match self.results.try_recv() {
                Ok(r) => Ok(r),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => Err("the warehouse writer stopped".to_owned()),
            }
        };
        self.in_flight = None;
        Some(r.and_then(|w| w))
    }

    /// Whether the buffer of the batch in flight holds `topic` [`partition`].
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|o| o.keys().any(|(t, p)| &**t == topic && *p == partition))
    }
}

impl Drop for Writer {
    /// Lets the batch in flight finish before anything else opens the warehouse: a new
    /// consumer that read the offsets before it committed would load its rows again.
    fn drop(&mut self) {
        self.batches = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
