//! Event-time watermarks across partitions.
//!
//! Each partition's watermark is the largest event time it has delivered minus the allowed
//! out-of-orderness. The processor's watermark is the smallest watermark of the partitions
//! that still matter: a partition stops holding time back only when it is idle, which needs
//! both that the consumer has caught up with it (nothing left to read) and that it has been
//! quiet for `idle_ms` — a partition that is merely slow or lagging keeps holding it.

use std::collections::BTreeMap;

/// Watermark settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind the newest event time an event may arrive and still be on time, in ms.
    pub out_of_orderness_ms: i64,
    /// How long a caught-up partition must be quiet before it stops holding time back, in ms.
    pub idle_ms: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    max_event_ms: Option<i64>,
    caught_up: bool,
    /// Processing time of the last record or caught-up report.
    last_activity_ms: i64,
}

/// Per-partition event-time clocks.
#[derive(Debug, Clone)]
pub struct Watermarks {
    config: WatermarkConfig,
    partitions: BTreeMap<i32, Clock>,
}

impl Watermarks {
    /// Clocks for `partitions`; none has delivered anything yet, so time does not advance until
    /// each has delivered a record or gone idle.
    pub fn new(config: WatermarkConfig, partitions: impl IntoIterator<Item = i32>) -> Self {
        Self { config, partitions: partitions.into_iter().map(|p| (p, Clock::default())).collect() }
    }

    /// A record with `event_ms` was read from `partition` at processing time `now_ms`.
    pub fn observe(&mut self, partition: i32, event_ms: i64, now_ms: i64) {
        let c = self.partitions.entry(partition).or_default();
        c.max_event_ms = Some(c.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        c.caught_up = false;
        c.last_activity_ms = now_ms;
    }

    /// Whether the consumer has read everything `partition` has (at processing time `now_ms`).
    pub fn caught_up(&mut self, partition: i32, caught_up: bool, now_ms: i64) {
        let c = self.partitions.entry(partition).or_default();
        if caught_up && !c.caught_up {
            c.last_activity_ms = now_ms;
        }
        c.caught_up = caught_up;
    }

    fn idle(&self, c: &Clock, now_ms: i64) -> bool {
        c.caught_up && now_ms - c.last_activity_ms >= self.config.idle_ms
    }

    /// The watermark at processing time `now_ms`: no event time at or below it is expected any
    /// more. `None` while some partition that is not idle has delivered nothing.
    pub fn current(&self, now_ms: i64) -> Option<i64> {
        let mut active = None::<i64>;
        let mut idle_max = None::<i64>;
        for c in self.partitions.values() {
            let wm = c.max_event_ms.map(|m| m.saturating_sub(self.config.out_of_orderness_ms));
            if self.idle(c, now_ms) {
                idle_max = idle_max.max(wm);
            } else {
                let wm = wm?;
                active = Some(active.map_or(wm, |a| a.min(wm)));
            }
        }
        // When every partition is idle, time is what the most advanced one has seen.
        active.or(idle_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: WatermarkConfig = WatermarkConfig { out_of_orderness_ms: 1_000, idle_ms: 5_000 };

    #[test]
    fn the_slowest_partition_holds_time() {
        let mut w = Watermarks::new(CFG, [0, 1]);
        w.observe(0, 10_000, 0);
        assert_eq!(w.current(0), None, "partition 1 has said nothing");
        w.observe(1, 4_000, 0);
        assert_eq!(w.current(0), Some(3_000));
        w.observe(1, 2_000, 0);
        assert_eq!(w.current(0), Some(3_000), "never goes back");
    }

    #[test]
    fn only_a_caught_up_quiet_partition_is_idle() {
        let mut w = Watermarks::new(CFG, [0, 1]);
        w.observe(0, 60_000, 0);
        w.observe(1, 10_000, 0);
        // Quiet for long, but not caught up (lagging): still holds time back.
        assert_eq!(w.current(100_000), Some(9_000));
        // Caught up, but not yet quiet for idle_ms.
        w.caught_up(1, true, 100_000);
        assert_eq!(w.current(102_000), Some(9_000));
        // Caught up and quiet: time follows partition 0.
        assert_eq!(w.current(105_000), Some(59_000));
        // A new record makes it active again.
        w.observe(1, 11_000, 106_000);
        assert_eq!(w.current(106_000), Some(10_000));
    }

    #[test]
    fn all_idle_follows_the_most_advanced() {
        let mut w = Watermarks::new(CFG, [0, 1, 2]);
        w.observe(0, 30_000, 0);
        w.caught_up(0, true, 0);
        w.caught_up(1, true, 0);
        w.caught_up(2, true, 0);
        assert_eq!(w.current(1_000), None, "partitions 1 and 2 are not idle yet and have nothing");
        assert_eq!(w.current(5_000), Some(29_000));
    }
}
