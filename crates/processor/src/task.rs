//! One input partition's processing state, and how it survives a restart.
//!
//! A [`Task`] owns a partition's window engine and event-time clock. Keys never span
//! partitions (producers partition by the key with murmur2), so a partition's windows depend
//! on nothing but its own records, in offset order.
//!
//! ## Recovery by replay
//!
//! Each transaction commits, per partition, the next offset to process and a small
//! [`Checkpoint`] as the offset's metadata (Kafka stores both atomically with the output).
//! The checkpoint holds the clock, the first window end not emitted yet, the offset of the
//! oldest record an open window still needs (`replay_from`), and for each pane whose tumbling
//! window closed while sliding windows over it are still open, the offset at which it closed.
//!
//! After a crash or a rebalance, the new owner seeks to `replay_from` and reads forward. Records
//! before the committed position were processed already: they are put back into their panes
//! when they were on time then — a record of a closed pane was on time exactly when its offset
//! is below the pane's closing offset, because the watermark only grows with the offset — and
//! produce no output. From the committed position on, processing continues as if nothing had
//! happened, so the output is the same as that of a run without the crash.
//!
//! ## Duplicates
//!
//! A record whose key and `event_id` its pane already counted (a client retry that another
//! gateway wrote again) is dropped ([`Outcome::Duplicate`]); see [`crate::dedupe`]. Whether a
//! record is one depends only on the records of its pane before it, in offset order, and the
//! replay reads every record a kept pane counted (they are all at or after `replay_from`), so
//! it rebuilds the same sets and drops the same records as the run before the restart did.

use crate::dedupe::Seen;
use crate::watermark::{Clock, WatermarkConfig};
use crate::window::{Engine, Late, WindowConfig, WindowResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hash;

/// A partition's recovery point, stored as the committed offset's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub v: u8,
    /// Offset of the oldest record an open window still needs.
    #[serde(rename = "r")]
    pub replay_from: i64,
    /// Largest event time seen.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub max_event_ms: Option<i64>,
    /// Where the idle rule last moved the watermark.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub idle_floor_ms: Option<i64>,
    /// The first window end not emitted yet.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub next_end_ms: Option<i64>,
    /// Closed panes still feeding open sliding windows: (pane start, offset it closed at).
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<(i64, i64)>,
    /// The pane width and sliding-window panes it was written with: state from other window
    /// settings cannot be resumed.
    #[serde(rename = "w", default)]
    pub windows: (i64, i64),
}

impl Checkpoint {
    const VERSION: u8 = 1;

    /// Whether a task with `config` can resume from this checkpoint.
    pub fn fits(&self, config: &TaskConfig) -> bool {
        self.windows == (config.window.pane_ms, config.window.sliding_panes)
    }

    /// Compact JSON, well under Kafka's 4096-byte offset metadata limit.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for metadata this version did not write (empty, another tool's, or garbage).
    pub fn decode(metadata: &str) -> Option<Self> {
        let c: Self = serde_json::from_str(metadata).ok()?;
        (c.v == Self::VERSION).then_some(c)
    }
}

/// Settings of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskConfig {
    pub window: WindowConfig,
    pub watermark: WatermarkConfig,
}

/// What the windows take of a record that passed the filters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a, K> {
    pub key: K,
    /// The event's id: a record whose key and id its pane counted already is a duplicate.
    pub event_id: &'a str,
    pub event_ms: i64,
    pub measure: Option<f64>,
    pub category: Option<&'a str>,
}

/// What became of a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in its windows.
    Accepted,
    /// Its tumbling window had closed; counted in no window.
    Late(Late),
    /// Its pane counted this key's `event_id` already (a retry written twice); not counted.
    Duplicate,
    /// Read again after a restart (before the committed position); no output.
    Replayed,
}

/// One partition's windows and clock.
#[derive(Debug)]
pub struct Task<K> {
    settings: TaskConfig,
    engine: Engine<K>,
    clock: Clock,
    /// Offset of the first accepted record of each pane kept.
    pane_first: BTreeMap<i64, i64>,
    /// Panes whose tumbling window closed, with the offset they closed at.
    pane_closed: BTreeMap<i64, i64>,
    /// The events each kept pane counted.
    seen: Seen,
    /// The next offset to process.
    position: i64,
    /// Records below this offset were processed before the restart.
    replay_until: i64,
    /// The checkpoint replayed records are judged by.
    restored: Option<Checkpoint>,
}

impl<K: Clone + Eq + Hash + Ord> Task<K> {
    /// A task for a partition with no checkpoint, starting at `offset`.
    pub fn fresh(config: TaskConfig, offset: i64, now_ms: i64) -> Self {
        Self {
            settings: config,
            engine: Engine::new(config.window),
            clock: Clock::new(config.watermark, None, None, now_ms),
            pane_first: BTreeMap::new(),
            pane_closed: BTreeMap::new(),
            seen: Seen::new(),
            position: offset,
            replay_until: offset,
            restored: None,
        }
    }

    /// A task resuming at committed position `position` with checkpoint `cp`; the consumer
    /// must read from `cp.replay_from`.
    pub fn resume(config: TaskConfig, position: i64, cp: Checkpoint, now_ms: i64) -> Self {
        Self {
            settings: config,
            engine: Engine::resume(config.window, cp.next_end_ms, {
                let by_events =
                    cp.max_event_ms.map(|m| m.saturating_sub(config.watermark.out_of_orderness_ms));
                by_events.max(cp.idle_floor_ms)
            }),
            clock: Clock::new(config.watermark, cp.max_event_ms, cp.idle_floor_ms, now_ms),
            pane_first: BTreeMap::new(),
            pane_closed: cp.closed.iter().copied().collect(),
            seen: Seen::new(),
            position: cp.replay_from,
            replay_until: position,
            restored: Some(cp),
        }
    }

    /// The offset the consumer must read from.
    pub fn start_offset(&self) -> i64 {
        self.position
    }

    /// The next offset to process.
    pub fn position(&self) -> i64 {
        self.position.max(self.replay_until)
    }

    /// Whether the record at `offset` is being read again after a restart.
    pub fn replaying(&self, offset: i64) -> bool {
        offset < self.replay_until
    }

    pub fn watermark(&self) -> Option<i64> {
        self.clock.current()
    }

    fn config(&self) -> WindowConfig {
        self.settings.window
    }

    /// A record that passed the filters, at `offset`.
    pub fn record(&mut self, offset: i64, r: Record<'_, K>, now_ms: i64) -> Outcome {
        self.position = self.position.max(offset + 1);
        if offset < self.replay_until {
            self.replay(offset, r);
            return Outcome::Replayed;
        }
        let Record { key, event_id, event_ms, measure, category } = r;
        let pane = self.engine.pane_of(event_ms);
        let watermark = self.clock.current();
        let outcome = match self.engine.late(event_ms, watermark) {
            Some(late) => Outcome::Late(late),
            None if !self.seen.insert(pane, self.seen.fingerprint(&key, event_id)) => {
                Outcome::Duplicate
            }
            None => match self.engine.add(key, event_ms, measure, category, watermark) {
                Ok(()) => {
                    self.pane_first.entry(pane).or_insert(offset);
                    Outcome::Accepted
                }
                Err(late) => Outcome::Late(late),
            },
        };
        let before = self.clock.current();
        self.clock.observe(event_ms, now_ms);
        if self.clock.current() != before {
            self.mark_closed(offset + 1);
        }
        outcome
    }

    /// A record that was routed elsewhere (dead-lettered) at `offset`, read at `now_ms`: it
    /// moves the position, and shows the partition is not idle, but not its event time.
    pub fn skip(&mut self, offset: i64, now_ms: i64) {
        self.position = self.position.max(offset + 1);
        self.clock.touch(now_ms);
    }

    /// Re-adds a record processed before the restart, if it was on time then and not a
    /// duplicate.
    fn replay(&mut self, offset: i64, r: Record<'_, K>) {
        let Some(cp) = &self.restored else { return };
        let Record { key, event_id, event_ms, measure, category } = r;
        let cfg = self.config();
        let pane = self.engine.pane_of(event_ms);
        let ooo = self.settings.watermark.out_of_orderness_ms;
        let wm = cp.max_event_ms.map(|m| m.saturating_sub(ooo)).max(cp.idle_floor_ms);
        let closed_then = wm.is_some_and(|w| w >= pane + cfg.pane_ms + cfg.grace_ms);
        if closed_then {
            match self.pane_closed.get(&pane) {
                Some(&closed_at) if offset < closed_at => {}
                // Closed before this record arrived (or before any record of the pane did).
                _ => return,
            }
        }
        if self.engine.retained_from().is_some_and(|from| pane < from) {
            return;
        }
        if !self.seen.insert(pane, self.seen.fingerprint(&key, event_id)) {
            // Dropped as a duplicate then, too.
            return;
        }
        self.pane_first.entry(pane).or_insert(offset);
        self.engine.restore(key, event_ms, measure, category);
    }

    /// Notes, at position `next_offset`, the panes whose tumbling window the watermark closed.
    fn mark_closed(&mut self, next_offset: i64) {
        let Some(wm) = self.clock.current() else { return };
        let cfg = self.config();
        let limit = wm - cfg.grace_ms - cfg.pane_ms;
        for (&pane, _) in self.pane_first.range(..=limit).rev() {
            if self.pane_closed.contains_key(&pane) {
                break;
            }
            self.pane_closed.insert(pane, next_offset);
        }
    }

    /// Whether the consumer has read everything the partition holds, at `now_ms`; when it has,
    /// `consumer_position` is its position (past any transaction markers at the end).
    pub fn set_caught_up(&mut self, caught_up: bool, consumer_position: i64, now_ms: i64) {
        if self.replay_until > self.position {
            // Still rebuilding state: a report from before the restart or rebalance must not
            // end the replay early.
            return;
        }
        if caught_up {
            self.position = self.position.max(consumer_position);
        }
        self.clock.set_caught_up(caught_up, now_ms);
    }

    /// Applies the idle rule and returns every window the watermark has closed, oldest first.
    pub fn tick(&mut self, now_ms: i64) -> Vec<WindowResult<K>> {
        if self.replay_until > self.position {
            // Still reading records processed before the restart: the panes are incomplete.
            return Vec::new();
        }
        if self.clock.idle_tick(now_ms) {
            self.mark_closed(self.position);
        }
        let out = self.engine.advance(self.clock.current());
        if let Some(from) = self.engine.retained_from() {
            self.pane_first = self.pane_first.split_off(&from);
            self.pane_closed = self.pane_closed.split_off(&from);
            self.seen.forget_before(from);
        }
        if self.restored.is_some() && self.position >= self.replay_until {
            self.restored = None;
        }
        out
    }

    /// The recovery point after the last [`Task::tick`].
    pub fn checkpoint(&self) -> Checkpoint {
        if let Some(cp) = self.restored.as_ref().filter(|_| self.replay_until > self.position) {
            // Nothing new was processed: the old recovery point still holds.
            return cp.clone();
        }
        let replay_from = self.pane_first.values().copied().min().unwrap_or(self.position());
        Checkpoint {
            v: Checkpoint::VERSION,
            replay_from: replay_from.min(self.position()),
            max_event_ms: self.clock.max_event_ms(),
            idle_floor_ms: self.clock.idle_floor_ms(),
            next_end_ms: self.engine.next_end(),
            closed: self.pane_closed.iter().map(|(&p, &o)| (p, o)).collect(),
            windows: (self.settings.window.pane_ms, self.settings.window.sliding_panes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::WindowKind;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;
    const CFG: TaskConfig = TaskConfig {
        window: WindowConfig { pane_ms: MIN, sliding_panes: 5, grace_ms: 5_000 },
        watermark: WatermarkConfig { out_of_orderness_ms: 10_000, idle_ms: 3_000 },
    };

    /// One step of a run: a record of the input (valid or dead-lettered), the same event
    /// again (a client retry written twice: the record `back` records earlier), a tick (with
    /// the partition caught up and idle, or not), or a transaction commit.
    #[derive(Debug, Clone)]
    enum Step {
        Record { key: u8, step_ms: i64, jitter_ms: i64, value: u8, valid: bool },
        Retry { back: usize },
        Tick { idle: bool },
        Commit,
    }

    type Out = (WindowKind, i64, u8, u64, i64);

    /// What a `read_committed` reader would see: window results, and the offsets of late
    /// records and of duplicates.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        results: Vec<Out>,
        late: Vec<i64>,
        duplicates: Vec<i64>,
    }

    /// (key, event time, value, valid, event id) of one record.
    type In = (u8, i64, u8, bool, String);

    struct Input {
        /// The records by offset.
        records: Vec<In>,
        /// Step index of each record.
        at_step: Vec<usize>,
    }

    fn input(steps: &[Step]) -> Input {
        let mut t = 600_000;
        let mut records: Vec<In> = Vec::new();
        let mut at_step = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Record { key, step_ms, jitter_ms, value, valid } => {
                    t += step_ms;
                    let id = format!("e-{}", records.len());
                    records.push((*key, t - jitter_ms, *value, *valid, id));
                }
                Step::Retry { back } if !records.is_empty() => {
                    let again = records[records.len() - 1 - back.min(&(records.len() - 1))].clone();
                    records.push(again);
                }
                _ => continue,
            }
            at_step.push(i);
        }
        Input { records, at_step }
    }

    /// Hands record `o` of the input to `task`.
    fn feed(task: &mut Task<u8>, inp: &Input, o: usize, now: i64) -> Option<Outcome> {
        let (key, event_ms, v, valid, id) = &inp.records[o];
        if !valid {
            task.skip(o as i64, now);
            return None;
        }
        let r = Record {
            key: *key,
            event_id: id,
            event_ms: *event_ms,
            measure: Some(f64::from(*v)),
            category: None,
        };
        Some(task.record(o as i64, r, now))
    }

    /// Runs `steps`; at each step index in `crashes` (after that step) the process dies: what
    /// was not committed is lost, and a new task resumes from the last commit.
    fn run(steps: &[Step], crashes: &[usize]) -> Seen {
        let inp = input(steps);
        let mut seen = Seen::default();
        let mut pending = Seen::default();
        let mut task: Task<u8> = Task::fresh(CFG, 0, 0);
        let mut committed: (i64, Option<Checkpoint>, usize) = (0, None, 0);
        let mut crashed = vec![false; steps.len()];
        let mut i = 0;
        let mut offset = 0usize;
        while i < steps.len() {
            let now = i as i64 * 12_000;
            match &steps[i] {
                Step::Record { .. } | Step::Retry { .. } if inp.at_step.get(offset) == Some(&i) => {
                    match feed(&mut task, &inp, offset, now) {
                        Some(Outcome::Late(_)) => pending.late.push(offset as i64),
                        Some(Outcome::Duplicate) => pending.duplicates.push(offset as i64),
                        _ => {}
                    }
                    offset += 1;
                }
                Step::Record { .. } | Step::Retry { .. } => {}
                Step::Tick { idle } => {
                    // Caught up and quiet, or records are waiting to be read.
                    task.set_caught_up(*idle, task.position(), now);
                    let later = if *idle { now + CFG.watermark.idle_ms } else { now };
                    pending.results.extend(task.tick(later).into_iter().map(|r| {
                        (r.kind, r.end_ms, r.key, r.aggregate.count, r.aggregate.sum as i64)
                    }));
                }
                Step::Commit => {
                    // The worker closes what it can, then commits it with the positions.
                    pending.results.extend(task.tick(now).into_iter().map(|r| {
                        (r.kind, r.end_ms, r.key, r.aggregate.count, r.aggregate.sum as i64)
                    }));
                    seen.results.append(&mut pending.results);
                    seen.late.append(&mut pending.late);
                    seen.duplicates.append(&mut pending.duplicates);
                    committed = (task.position(), Some(task.checkpoint()), i);
                }
            }
            if crashes.contains(&i) && !crashed[i] {
                crashed[i] = true;
                pending = Seen::default();
                let (position, cp, step) = committed.clone();
                task = match cp {
                    Some(cp) => Task::resume(CFG, position, cp, now),
                    None => Task::fresh(CFG, 0, now),
                };
                // The consumer reads from the task's start offset; records up to the committed
                // position are replayed right away (they are all in the log already).
                let start = task.start_offset() as usize;
                for o in start..position as usize {
                    let r = feed(&mut task, &inp, o, now);
                    assert!(r.is_none_or(|r| r == Outcome::Replayed), "{r:?}");
                }
                offset = position as usize;
                // Continue with the step after the commit (or from the start).
                i = if committed.1.is_some() { step + 1 } else { 0 };
                // Steps between the commit and the crash run again; their records are next.
                debug_assert!(inp.at_step.get(offset).is_none_or(|&s| s >= i));
                continue;
            }
            i += 1;
        }
        // Drain: a final commit of what is left.
        seen.results.append(&mut pending.results);
        seen.late.append(&mut pending.late);
        seen.duplicates.append(&mut pending.duplicates);
        seen
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0u8..5, prop_oneof![19 => 0i64..30_000, 1 => 150_000i64..400_000], 0i64..120_000, 1u8..50, proptest::bool::weighted(0.9))
                .prop_map(|(key, step_ms, jitter_ms, value, valid)| Step::Record { key, step_ms, jitter_ms, value, valid }),
            2 => (0usize..20).prop_map(|back| Step::Retry { back }),
            2 => proptest::bool::weighted(0.2).prop_map(|idle| Step::Tick { idle }),
            2 => Just(Step::Commit),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Crashes at random moments, each followed by recovery from the last commit, give
        /// exactly the committed output of a run without crashes.
        #[test]
        fn recovery_gives_the_same_output(
            steps in proptest::collection::vec(step(), 1..250),
            crash_points in proptest::collection::vec(0usize..250, 0..6),
        ) {
            let clean = run(&steps, &[]);
            let crashed = run(&steps, &crash_points);
            prop_assert_eq!(crashed, clean);
        }
    }

    #[test]
    fn a_checkpoint_round_trips_and_fits_in_offset_metadata() {
        let cp = Checkpoint {
            v: 1,
            replay_from: 1_234_567_890,
            max_event_ms: Some(1_764_500_000_000),
            idle_floor_ms: None,
            next_end_ms: Some(1_764_500_040_000),
            closed: (0..4).map(|i| (1_764_499_800_000 + i * MIN, 1_234_567_999 + i)).collect(),
            windows: (MIN, 5),
        };
        assert!(cp.fits(&CFG));
        let mut other = CFG;
        other.window.pane_ms = 30_000;
        assert!(!cp.fits(&other), "other window settings do not resume this state");
        let text = cp.encode();
        assert!(text.len() < 400, "{text}");
        assert_eq!(Checkpoint::decode(&text), Some(cp));
        assert_eq!(Checkpoint::decode(""), None);
        assert_eq!(
            Checkpoint::decode("{\"v\":9,\"r\":1}"),
            None,
            "a newer format is not guessed at"
        );
    }

    /// A valid record of key 1.
    fn rec(id: &str, event_ms: i64, v: f64) -> Record<'_, u8> {
        Record { key: 1, event_id: id, event_ms, measure: Some(v), category: None }
    }

    /// Each event followed by a retry of it (written again by another gateway), commits now
    /// and then, and crashes right after a commit that fell between an event and its retry:
    /// the replay rebuilds which events were counted, so the retries are dropped exactly as
    /// in the run without a crash, and every window counts each event once.
    #[test]
    fn a_crash_among_duplicates_gives_the_results_of_a_run_without_one() {
        let mut steps = Vec::new();
        let mut crashes = Vec::new();
        for i in 0..60u8 {
            let key = i % 3;
            steps.push(Step::Record { key, step_ms: 4_000, jitter_ms: 0, value: 1, valid: true });
            if i % 4 == 1 {
                steps.push(Step::Commit);
                if i % 8 == 1 {
                    crashes.push(steps.len() - 1);
                }
            }
            steps.push(Step::Retry { back: 0 });
            if i % 7 == 3 {
                steps.push(Step::Tick { idle: false });
            }
        }
        steps.push(Step::Tick { idle: true });
        steps.push(Step::Commit);
        let clean = run(&steps, &[]);
        let crashed = run(&steps, &crashes);
        assert!(crashes.len() >= 7, "{crashes:?}");
        assert_eq!(crashed, clean);
        assert_eq!(clean.duplicates.len(), 60, "every retry dropped");
        assert!(clean.late.is_empty());
        let counted = |kind: WindowKind| -> u64 {
            clean.results.iter().filter(|r| r.0 == kind).map(|r| r.3).sum()
        };
        assert_eq!(counted(WindowKind::Tumbling), 60, "each event once");
        assert_eq!(counted(WindowKind::Sliding), 5 * 60, "each event once in each of 5 windows");
    }

    #[test]
    fn a_retry_is_dropped_in_its_pane_and_the_sets_go_with_the_panes() {
        let mut t: Task<u8> = Task::fresh(CFG, 0, 0);
        assert_eq!(t.record(0, rec("a", 10_000, 1.0), 0), Outcome::Accepted);
        assert_eq!(t.record(1, rec("a", 10_000, 1.0), 0), Outcome::Duplicate);
        let other_key = Record { key: 2, ..rec("a", 10_000, 1.0) };
        assert_eq!(t.record(2, other_key, 0), Outcome::Accepted, "another key's event");
        assert_eq!(t.record(3, rec("b", 70_000, 1.0), 0), Outcome::Accepted);
        // The same id in another pane is another event (a retry has the same timestamp).
        assert_eq!(t.record(4, rec("a", 75_000, 1.0), 0), Outcome::Accepted);
        assert_eq!(t.seen.len(), 4);
        // Past minute 0's end plus grace: a retry of "a" now is late, not a duplicate.
        assert_eq!(t.record(5, rec("c", 80_000, 1.0), 0), Outcome::Accepted);
        assert!(matches!(t.record(6, rec("a", 10_000, 1.0), 0), Outcome::Late(_)));
        t.set_caught_up(true, 7, 0);
        let out = t.tick(100 * MIN);
        let tumbling: Vec<(i64, u8, u64)> = out
            .iter()
            .filter(|w| w.kind == WindowKind::Tumbling)
            .map(|w| (w.end_ms, w.key, w.aggregate.count))
            .collect();
        assert_eq!(tumbling, vec![(MIN, 1, 1), (MIN, 2, 1), (2 * MIN, 1, 3)]);
        assert!(t.seen.is_empty(), "no pane kept, no set kept");
    }

    #[test]
    fn replay_restores_closed_panes_only_with_records_that_were_on_time() {
        let mut t: Task<u8> = Task::fresh(CFG, 0, 0);
        assert_eq!(t.record(0, rec("a", 10_000, 1.0), 0), Outcome::Accepted);
        // Moves the watermark past minute 0 plus grace: minute 0 closes at offset 2.
        assert_eq!(t.record(1, rec("b", 80_000, 2.0), 0), Outcome::Accepted);
        assert!(matches!(t.record(2, rec("c", 20_000, 4.0), 0), Outcome::Late(_)));
        let out = t.tick(0);
        assert_eq!(out.len(), 2, "tumbling and sliding of minute 0: {out:?}");
        let cp = t.checkpoint();
        assert_eq!(cp.replay_from, 0, "minute 0 still feeds open sliding windows");
        assert_eq!(cp.closed, vec![(0, 2)]);
        let mut r: Task<u8> = Task::resume(CFG, t.position(), cp, 0);
        assert_eq!(r.start_offset(), 0);
        for (o, id, ts, v) in [(0, "a", 10_000, 1.0), (1, "b", 80_000, 2.0), (2, "c", 20_000, 4.0)]
        {
            assert_eq!(r.record(o, rec(id, ts, v), 0), Outcome::Replayed);
        }
        // Close everything: the sliding windows count offsets 0 and 1, never the late 2.
        r.set_caught_up(true, 3, 0);
        let out = r.tick(10 * MIN);
        let sums: Vec<(i64, u64)> = out
            .iter()
            .filter(|w| w.kind == WindowKind::Sliding)
            .map(|w| (w.end_ms, w.aggregate.count))
            .collect();
        assert_eq!(
            sums,
            vec![(2 * MIN, 2), (3 * MIN, 2), (4 * MIN, 2), (5 * MIN, 2), (6 * MIN, 1)]
        );
    }
}
