//! The warehouse writes, on a thread of their own: a flush hands its batch over and returns,
//! so the next batches are read and decoded while this one is written. At most
//! [`MAX_IN_FLIGHT`] batches are handed over and not yet written (one being written, the next
//! waiting), so a long write (a checkpoint) does not stop the decoding. One thread writes them
//! in order, and none is written after one that failed (its offsets would skip the failed
//! batch's rows).

use crate::metrics as m;
use crate::rows::Trigger;
use crate::setup::SinkHealth;
use crate::warehouse::{Batch, Warehouse};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Batches handed to the writer and not yet written, at most.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// The next offset per (topic, partition) of a batch.
pub(crate) type Offsets = HashMap<(Arc<str>, i32), i64>;

/// The writer thread and the batches in flight.
pub(crate) struct Writer {
    batches: Option<SyncSender<(Batch, Trigger)>>,
    /// Per batch, in order: its offsets once it is in the warehouse, or why it is not.
    results: Receiver<Result<Offsets, String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The partitions of each batch handed over and not yet written, oldest first, with their
    /// next offsets.
    in_flight: VecDeque<Offsets>,
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
        Self { batches: Some(batches), results, thread, in_flight: VecDeque::new() }
    }

    /// Hands `batch` to the writer thread; false when the thread is gone.
    pub(crate) fn send(&mut self, batch: Batch, trigger: Trigger) -> bool {
        let offsets = batch.offsets.clone();
        let sent = self.batches.as_ref().is_some_and(|b| b.send((batch, trigger)).is_ok());
        if sent {
            self.in_flight.push_back(offsets);
        }
        sent
    }

    /// Batches handed over and not yet settled by [`Writer::outcome`].
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The outcome of the oldest batch in flight: waits for it when `wait`, else only looks.
    /// `None` when nothing is in flight (or, without waiting, it is not written yet).
    pub(crate) fn outcome(&mut self, wait: bool) -> Option<Result<Offsets, String>> {
        self.in_flight.front()?;
        let r = if wait {
            self.results.recv().map_err(|_| "the warehouse writer stopped".to_owned())
        } else {
            match self.results.try_recv() {
                Ok(r) => Ok(r),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => Err("the warehouse writer stopped".to_owned()),
            }
        };
        self.in_flight.pop_front();
        Some(r.and_then(|w| w))
    }

    /// Whether a batch in flight holds `topic` [`partition`].
    pub(crate) fn holds(&self, topic: &str, partition: i32) -> bool {
        self.in_flight.iter().any(|o| o.keys().any(|(t, p)| &**t == topic && *p == partition))
    }
}

impl Drop for Writer {
    /// Lets the batches in flight finish before anything else opens the warehouse: a new
    /// consumer that read the offsets before it committed would load its rows again.
    fn drop(&mut self) {
        self.batches = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::{Rows, TableKind, Tuning};

    fn batch(table: &str, partition: i32, next: i64) -> Batch {
        let mut rows = Rows::default();
        rows.push(r#"{"offset":0}"#, r#"{"n":1}"#);
        let mut b = Batch::default();
        b.rows.insert(table.into(), rows);
        b.offsets.insert(("t".into(), partition), next);
        b
    }

    #[test]
    fn two_batches_in_flight_are_written_and_settled_in_order_and_none_after_a_failure() {
        let dir = std::env::temp_dir().join(format!("tributary-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = Warehouse::open(&dir.join("w.duckdb"), &Tuning::single_thread()).expect("open");
        w.ensure_table("T", TableKind::Other).expect("table");
        let warehouse = Arc::new(Mutex::new(w));
        let mut writer = Writer::start(Arc::clone(&warehouse), Arc::default());
        assert!(writer.send(batch("T", 0, 5), Trigger::Count));
        assert!(writer.send(batch("T", 1, 9), Trigger::Count));
        assert_eq!(writer.in_flight(), 2);
        assert!(writer.holds("t", 0) && writer.holds("t", 1) && !writer.holds("t", 2));
        let first = writer.outcome(true).expect("an outcome").expect("written");
        assert_eq!(first.get(&("t".into(), 0)), Some(&5), "the older batch first");
        let second = writer.outcome(true).expect("an outcome").expect("written");
        assert_eq!(second.get(&("t".into(), 1)), Some(&9));
        assert_eq!((writer.in_flight(), writer.outcome(true).is_none()), (0, true));
        // A batch for a table that does not exist fails; the one after it is not written.
        assert!(writer.send(batch("MISSING", 2, 3), Trigger::Count));
        // The writer may already have stopped, and then refuses the batch.
        let queued = writer.send(batch("T", 3, 7), Trigger::Count);
        assert!(writer.outcome(true).expect("an outcome").is_err());
        if queued {
            assert!(writer.outcome(true).expect("an outcome").is_err(), "the writer stopped");
        }
        assert_eq!(writer.in_flight(), 0);
        drop(writer);
        let offsets = warehouse.lock().expect("lock").offsets("t").expect("offsets");
        assert_eq!(offsets, HashMap::from([(0, 5), (1, 9)]), "nothing after the failure");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
