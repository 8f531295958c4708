//! Event time of one input partition: its watermark.
//!
//! A partition's watermark is the largest event time it has delivered minus the allowed
//! out-of-orderness: no record at or below it is expected any more. It moves only with the
//! partition's own records, so it is a function of the partition's contents in offset order —
//! which is what makes a replay after a crash reach the same decisions.
//!
//! The one exception is the idle rule. When the consumer has read everything the partition
//! holds (caught up) and nothing has arrived for `idle_ms`, the watermark follows the wall
//! clock (`now - out_of_orderness_ms`), so the last windows close even when traffic stops. A
//! partition that is merely slow or lagging is never caught up, so it never goes idle.

/// Watermark settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind the newest event time an event may arrive and still be on time, in ms.
    pub out_of_orderness_ms: i64,
    /// How long a caught-up partition must be quiet before its watermark follows the wall
    /// clock, in ms.
    pub idle_ms: i64,
}

/// One partition's event-time clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    config: WatermarkConfig,
    max_event_ms: Option<i64>,
    /// Where the idle rule last moved the watermark to.
    idle_floor_ms: Option<i64>,
    caught_up: bool,
    /// Processing time of the last record or caught-up report.
    last_activity_ms: i64,
}

impl Clock {
    /// A clock that continues from `max_event_ms` and `idle_floor_ms` (both `None` for a
    /// partition that delivered nothing yet).
    pub fn new(
        config: WatermarkConfig,
        max_event_ms: Option<i64>,
        idle_floor_ms: Option<i64>,
        now_ms: i64,
    ) -> Self {
        Self { config, max_event_ms, idle_floor_ms, caught_up: false, last_activity_ms: now_ms }
    }

    /// The watermark; `None` until the partition delivered a record or went idle.
    pub fn current(&self) -> Option<i64> {
        let by_events =
            self.max_event_ms.map(|m| m.saturating_sub(self.config.out_of_orderness_ms));
        by_events.max(self.idle_floor_ms)
    }

    pub fn max_event_ms(&self) -> Option<i64> {
        self.max_event_ms
    }

    pub fn idle_floor_ms(&self) -> Option<i64> {
        self.idle_floor_ms
    }

    /// A record with `event_ms` was read at processing time `now_ms`.
    pub fn observe(&mut self, event_ms: i64, now_ms: i64) {
        self.max_event_ms = Some(self.max_event_ms.map_or(event_ms, |m| m.max(event_ms)));
        self.caught_up = false;
        self.last_activity_ms = now_ms;
    }

    /// A record was read at `now_ms` that does not count for event time (it was rejected).
    pub fn touch(&mut self, now_ms: i64) {
        self.caught_up = false;
        self.last_activity_ms = now_ms;
    }

    /// Whether the consumer has read everything the partition holds, at `now_ms`.
    pub fn set_caught_up(&mut self, caught_up: bool, now_ms: i64) {
        if caught_up && !self.caught_up {
            self.last_activity_ms = now_ms;
        }
        self.caught_up = caught_up;
    }

    /// Applies the idle rule at `now_ms`; true when it moved the watermark.
    pub fn idle_tick(&mut self, now_ms: i64) -> bool {
        if !self.caught_up || now_ms - self.last_activity_ms < self.config.idle_ms {
            return false;
        }
        let floor = now_ms.saturating_sub(self.config.out_of_orderness_ms);
        if self.current().is_some_and(|wm| wm >= floor) {
            return false;
        }
        self.idle_floor_ms = Some(floor);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: WatermarkConfig = WatermarkConfig { out_of_orderness_ms: 1_000, idle_ms: 5_000 };

    #[test]
    fn follows_the_largest_event_time_and_never_goes_back() {
        let mut c = Clock::new(CFG, None, None, 0);
        assert_eq!(c.current(), None);
        c.observe(10_000, 0);
        assert_eq!(c.current(), Some(9_000));
        c.observe(4_000, 0);
        assert_eq!(c.current(), Some(9_000), "an older record does not move it back");
    }

    #[test]
    fn only_a_caught_up_quiet_partition_is_idle() {
        let mut c = Clock::new(CFG, None, None, 0);
        c.observe(10_000, 0);
        // Quiet for long, but not caught up (lagging or slow): time holds.
        assert!(!c.idle_tick(100_000));
        assert_eq!(c.current(), Some(9_000));
        // Caught up, but not yet quiet for idle_ms.
        c.set_caught_up(true, 100_000);
        assert!(!c.idle_tick(104_999));
        assert_eq!(c.current(), Some(9_000));
        // Caught up and quiet: the watermark follows the wall clock.
        assert!(c.idle_tick(105_000));
        assert_eq!(c.current(), Some(104_000));
        // A new record makes it active again; its event time only counts when it is ahead.
        c.observe(50_000, 106_000);
        assert_eq!(c.current(), Some(104_000));
        assert!(!c.idle_tick(200_000), "not caught up after the record");
    }

    #[test]
    fn restarts_where_it_left_off() {
        let c = Clock::new(CFG, Some(10_000), Some(20_000), 0);
        assert_eq!(c.current(), Some(20_000));
        assert_eq!((c.max_event_ms(), c.idle_floor_ms()), (Some(10_000), Some(20_000)));
    }
}
