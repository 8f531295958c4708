//! The window engine: records go into one-pane-wide buckets per key; when the watermark passes
//! a window's end plus the grace period, the window's result is emitted once and never again.
//!
//! Panes are `pane_ms` wide (one minute). The tumbling window of a pane is that pane; the
//! sliding windows are `sliding_panes` panes wide (five) and advance one pane at a time, each
//! built by merging its panes — one aggregate per key per pane is kept, not one per window.
//!
//! A record is late when the watermark has already passed its pane's end plus the grace period:
//! its tumbling window is closed. A late record is reported to the caller (who routes it to the
//! dead-letter topic with reason `late`) and counted in no window, so a window's result never
//! changes after it was emitted.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Width of a pane and of a tumbling window, and the slide of sliding windows, in ms.
    pub pane_ms: i64,
    /// Width of a sliding window, in panes.
    pub sliding_panes: i64,
    /// How long after the watermark passes a window's end it stays open for records, in ms.
    pub grace_ms: i64,
}

/// Count, sum, min and max of a measure, and counts per category (for example clickstream's
/// `event_type`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aggregate {
    /// Records, with or without a measure.
    pub count: u64,
    /// Records with a measure.
    pub measured: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Records per category, for sources that count by one.
    pub categories: BTreeMap<String, u64>,
}

impl Aggregate {
    pub fn add(&mut self, measure: Option<f64>, category: Option<&str>) {
        self.count += 1;
        if let Some(c) = category {
            match self.categories.get_mut(c) {
                Some(n) => *n += 1,
                None => {
                    self.categories.insert(c.to_owned(), 1);
                }
            }
        }
        if let Some(v) = measure {
            self.measured += 1;
            self.sum += v;
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        self.measured += other.measured;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (c, n) in &other.categories {
            *self.categories.entry(c.clone()).or_default() += n;
        }
    }

    /// Mean of the measure, when any record had one.
    pub fn avg(&self) -> Option<f64> {
        (self.measured > 0).then(|| self.sum / self.measured as f64)
    }
}

/// Which kind of window a result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowKind {
    Tumbling,
    Sliding,
}

/// One final result: a key's aggregate over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult<K> {
    pub kind: WindowKind,
    pub start_ms: i64,
    pub end_ms: i64,
    pub key: K,
    pub aggregate: Aggregate,
}

/// A record arrived after its window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    /// End of the record's tumbling window.
    pub window_end_ms: i64,
}

/// Panes of aggregates per key, and the next window end to emit.
#[derive(Debug, Clone)]
pub struct Engine<K> {
    config: WindowConfig,
    panes: BTreeMap<i64, HashMap<K, Aggregate>>,
    /// The smallest window end not emitted yet; `None` before the first record.
    next_end: Option<i64>,
    /// Every window ending at or before this was closed by the watermark of the last
    /// [`Engine::advance`].
    closed_through: Option<i64>,
}

impl<K: Clone + Eq + Hash + Ord> Engine<K> {
    pub fn new(config: WindowConfig) -> Self {
        Self { config, panes: BTreeMap::new(), next_end: None, closed_through: None }
    }

    /// An engine that continues after a restart at `watermark`: windows ending before
    /// `next_end` were emitted already. Its panes are refilled with [`Engine::restore`].
    pub fn resume(config: WindowConfig, next_end: Option<i64>, watermark: Option<i64>) -> Self {
        let mut e = Self { config, panes: BTreeMap::new(), next_end, closed_through: None };
        e.closed_through = watermark.map(|wm| e.closed_through_at(wm));
        e
    }

    /// The largest window end that `watermark` closes (window ends are multiples of a pane).
    fn closed_through_at(&self, watermark: i64) -> i64 {
        let p = self.config.pane_ms;
        (watermark - self.config.grace_ms).div_euclid(p) * p
    }

    pub fn config(&self) -> WindowConfig {
        self.config
    }

    /// Start of the pane a record with `event_ms` belongs to.
    pub fn pane_of(&self, event_ms: i64) -> i64 {
        event_ms.div_euclid(self.config.pane_ms) * self.config.pane_ms
    }

    /// The smallest window end not emitted yet; `None` before the first record.
    pub fn next_end(&self) -> Option<i64> {
        self.next_end
    }

    /// The oldest pane an open window still needs: the first pane of the sliding window that
    /// ends at [`Engine::next_end`]. Older panes are forgotten.
    pub fn retained_from(&self) -> Option<i64> {
        self.next_end.map(|end| end - self.config.sliding_panes * self.config.pane_ms)
    }

    /// Whether a record with `event_ms` is late at `watermark`: its tumbling window closed.
    pub fn late(&self, event_ms: i64, watermark: Option<i64>) -> Option<Late> {
        let end = self.pane_of(event_ms) + self.config.pane_ms;
        let closed = watermark.is_some_and(|wm| wm >= end + self.config.grace_ms)
            || self.closed_through.is_some_and(|c| end <= c);
        closed.then_some(Late { window_end_ms: end })
    }

    /// Adds a record to its pane, unless its tumbling window already closed at `watermark`.
    pub fn add(
        &mut self,
        key: K,
        event_ms: i64,
        measure: Option<f64>,
        category: Option<&str>,
        watermark: Option<i64>,
    ) -> Result<(), Late> {
        if let Some(late) = self.late(event_ms, watermark) {
            return Err(late);
        }
        let pane = self.pane_of(event_ms);
        let end = pane + self.config.pane_ms;
        self.panes.entry(pane).or_default().entry(key).or_default().add(measure, category);
        self.next_end = Some(self.next_end.map_or(end, |n| n.min(end)));
        Ok(())
    }

    /// Puts back a record that was accepted before a restart, without the lateness check (its
    /// tumbling window may have been emitted while sliding windows over its pane are still
    /// open). Records of panes no open window needs are ignored.
    pub fn restore(&mut self, key: K, event_ms: i64, measure: Option<f64>, category: Option<&str>) {
        let pane = self.pane_of(event_ms);
        if self.retained_from().is_some_and(|from| pane < from) {
            return;
        }
        self.panes.entry(pane).or_default().entry(key).or_default().add(measure, category);
        let end = pane + self.config.pane_ms;
        self.next_end = Some(self.next_end.unwrap_or(end));
    }

    /// Emits every window whose end plus grace the watermark has passed, oldest first, and
    /// forgets panes no open window needs.
    pub fn advance(&mut self, watermark: Option<i64>) -> Vec<WindowResult<K>> {
        let mut out = Vec::new();
        let Some(wm) = watermark else { return out };
        let closed_through =
            self.closed_through_at(wm).max(self.closed_through.unwrap_or(i64::MIN));
        self.closed_through = Some(closed_through);
        let Some(mut end) = self.next_end else { return out };
        let p = self.config.pane_ms;
        let width = self.config.sliding_panes * p;
        while end <= closed_through {
            if let Some(keys) = self.panes.get(&(end - p)) {
                let mut keys: Vec<(&K, &Aggregate)> = keys.iter().collect();
                keys.sort_by(|a, b| a.0.cmp(b.0));
                out.extend(keys.into_iter().map(|(k, a)| WindowResult {
                    kind: WindowKind::Tumbling,
                    start_ms: end - p,
                    end_ms: end,
                    key: k.clone(),
                    aggregate: a.clone(),
                }));
            }
            let mut merged: BTreeMap<K, Aggregate> = BTreeMap::new();
            for (_, keys) in self.panes.range(end - width..end) {
                for (k, a) in keys {
                    merged.entry(k.clone()).or_default().merge(a);
                }
            }
            out.extend(merged.into_iter().map(|(k, a)| WindowResult {
                kind: WindowKind::Sliding,
                start_ms: end - width,
                end_ms: end,
                key: k,
                aggregate: a,
            }));
            // The next sliding window starts one pane later: older panes are done.
            self.panes = self.panes.split_off(&(end + p - width));
            end += p;
            // Skip windows whose panes are all empty — but only closed ones: a window still
            // open may yet receive records.
            let skip_to = self.panes.keys().next().map_or(i64::MAX, |first| first + p);
            end = end.max(skip_to.min(closed_through + p));
        }
        self.next_end = Some(end);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watermark::{Clock, WatermarkConfig};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const MIN: i64 = 60_000;
    const CFG: WindowConfig = WindowConfig { pane_ms: MIN, sliding_panes: 5, grace_ms: 10_000 };

    fn agg(values: &[f64]) -> Aggregate {
        let mut a = Aggregate::default();
        for v in values {
            a.add(Some(*v), None);
        }
        a
    }

    #[test]
    fn tumbling_and_sliding_close_after_grace() {
        let mut e = Engine::new(CFG);
        e.add("k", 5_000, Some(1.0), None, None).expect("on time");
        e.add("k", 65_000, Some(3.0), None, None).expect("on time");
        // Watermark at the first window's end: still within grace.
        assert!(e.advance(Some(MIN + 9_999)).is_empty());
        let out = e.advance(Some(MIN + 10_000));
        assert_eq!(
            out,
            vec![
                WindowResult {
                    kind: WindowKind::Tumbling,
                    start_ms: 0,
                    end_ms: MIN,
                    key: "k",
                    aggregate: agg(&[1.0])
                },
                WindowResult {
                    kind: WindowKind::Sliding,
                    start_ms: MIN - 5 * MIN,
                    end_ms: MIN,
                    key: "k",
                    aggregate: agg(&[1.0])
                },
            ]
        );
        // Too late for the first minute now; fine for the second.
        assert_eq!(
            e.add("k", 59_000, Some(9.0), None, Some(MIN + 10_000)),
            Err(Late { window_end_ms: MIN })
        );
        e.add("k", 119_000, Some(5.0), None, Some(MIN + 10_000)).expect("second minute still open");
        let out = e.advance(Some(2 * MIN + 10_000));
        assert_eq!(out[0].aggregate, agg(&[3.0, 5.0]));
        assert_eq!(
            (out[1].kind, out[1].start_ms, out[1].end_ms),
            (WindowKind::Sliding, -3 * MIN, 2 * MIN)
        );
        assert_eq!(out[1].aggregate, agg(&[1.0, 3.0, 5.0]));
        let s = &out[1].aggregate;
        assert_eq!((s.min, s.max, s.avg()), (Some(1.0), Some(5.0), Some(3.0)));
    }

    #[test]
    fn sliding_windows_keep_emitting_while_their_panes_have_data() {
        let mut e = Engine::new(CFG);
        e.add("k", 0, None, None, None).expect("on time");
        let out = e.advance(Some(100 * MIN));
        let sliding: Vec<i64> =
            out.iter().filter(|r| r.kind == WindowKind::Sliding).map(|r| r.end_ms).collect();
        assert_eq!(
            sliding,
            vec![MIN, 2 * MIN, 3 * MIN, 4 * MIN, 5 * MIN],
            "five windows contain the pane"
        );
        assert_eq!(out.iter().filter(|r| r.kind == WindowKind::Tumbling).count(), 1);
        assert!(e.advance(Some(200 * MIN)).is_empty(), "each window once");
        assert!(e.panes.is_empty(), "nothing kept that no window needs");
    }

    #[test]
    fn skipping_empty_windows_never_passes_an_open_one() {
        let mut e = Engine::new(CFG);
        e.add("k", 10_000, Some(1.0), None, None).expect("on time");
        // A jump in event time: the watermark (345 s minus 10 s grace) closes windows up to
        // 300 s; the panes between are empty.
        e.add("k", 365_000, Some(2.0), None, Some(-5_000)).expect("on time");
        assert!(!e.advance(Some(345_000)).is_empty());
        // Minute 5 (300 s to 360 s) is still open, so this record counts...
        e.add("k", 330_000, Some(4.0), None, Some(345_000)).expect("still open");
        let out = e.advance(Some(10_000_000));
        let tumbling: Vec<(i64, f64)> = out
            .iter()
            .filter(|r| r.kind == WindowKind::Tumbling)
            .map(|r| (r.end_ms, r.aggregate.sum))
            .collect();
        // ... and its window is emitted.
        assert_eq!(tumbling, vec![(360_000, 4.0), (420_000, 2.0)]);
    }

    /// Brute force: every on-time record in every window that contains it.
    fn reference(records: &[(u8, i64, f64)]) -> BTreeSet<(WindowKind, i64, u8, u64, i64)> {
        let mut windows: BTreeMap<(WindowKind, i64, u8), Vec<f64>> = BTreeMap::new();
        for &(key, t, v) in records {
            let pane = t.div_euclid(MIN) * MIN;
            windows.entry((WindowKind::Tumbling, pane + MIN, key)).or_default().push(v);
            for i in 1..=5 {
                windows.entry((WindowKind::Sliding, pane + i * MIN, key)).or_default().push(v);
            }
        }
        windows
            .into_iter()
            .map(|((kind, end, key), vs)| {
                (kind, end, key, vs.len() as u64, vs.iter().sum::<f64>() as i64)
            })
            .collect()
    }

    proptest! {
        /// Random out-of-order input: every window is emitted once, with exactly the on-time
        /// records a brute-force grouping puts in it; late records are exactly those whose
        /// window had closed when they arrived.
        #[test]
        fn matches_a_brute_force_reference(
            input in proptest::collection::vec((0u8..4, prop_oneof![19 => 0i64..60_000, 1 => 150_000i64..400_000], 0i64..90_000, 1u8..100, 0u8..20), 1..300)
        ) {
            let wcfg = WatermarkConfig { out_of_orderness_ms: 20_000, idle_ms: 5_000 };
            let mut clock = Clock::new(wcfg, None, None, 0);
            let mut engine: Engine<u8> = Engine::new(CFG);
            let mut emitted = Vec::new();
            let mut on_time = Vec::new();
            // Start mid-stream, so that early records can fall into earlier panes too.
            let mut event_clock = 600_000i64;
            let mut now = 0;
            for (key, step, jitter, value, pause) in input {
                // Event time moves forward with some records arriving late; now and then the
                // partition is caught up and quiet long enough for the idle rule.
                event_clock += step;
                let t = event_clock - jitter;
                now += 100;
                if pause == 0 {
                    clock.set_caught_up(true, now);
                    now += 6_000;
                    clock.idle_tick(now);
                }
                let wm = clock.current();
                match engine.add(key, t, Some(f64::from(value)), None, wm) {
                    Ok(()) => {
                        let end = t.div_euclid(MIN) * MIN + MIN;
                        prop_assert!(wm.is_none_or(|w| w < end + CFG.grace_ms), "on time exactly when open");
                        on_time.push((key, t, f64::from(value)));
                    }
                    Err(late) => {
                        let end = t.div_euclid(MIN) * MIN + MIN;
                        prop_assert_eq!(late.window_end_ms, end);
                        prop_assert!(wm.is_some_and(|w| w >= end + CFG.grace_ms), "late only when closed");
                    }
                }
                clock.observe(t, now);
                emitted.extend(engine.advance(clock.current()));
            }
            // End of input: flush everything.
            emitted.extend(engine.advance(Some(i64::MAX / 4)));
            let got: Vec<(WindowKind, i64, u8, u64, i64)> = emitted
                .iter()
                .map(|r| (r.kind, r.end_ms, r.key, r.aggregate.count, r.aggregate.sum as i64))
                .collect();
            let unique: BTreeSet<_> = got.iter().copied().collect();
            prop_assert_eq!(unique.len(), got.len(), "no window emitted twice");
            prop_assert_eq!(unique, reference(&on_time));
        }
    }
}
