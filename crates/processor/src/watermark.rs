//! Event time of one input partition: its watermark.
//!
//! A partition's watermark is the largest event time it has delivered minus the allowed
//! out-of-orderness: no record at or below it is expected any more. It moves only with the
//! partition's own records, so it is a function of the partition's contents in offset order —
//! which is what makes a replay after a crash reach the same decisions.
//!
//! The one exception is the idle rule. When the consumer has read everything the partition
//! holds (caught up) and nothing has arrived for `idle_ms`, the watermark moves on without
//! records, so the last windows close even when traffic stops. It moves by what the partition
//! has seen, not to the processor's clock: the largest event time plus the wall time elapsed
//! since the record that carried it was read, minus `out_of_orderness_ms`. The producers'
//! clock was at least that event time when the record was read, so it is at least that much
//! later now, whatever its offset from the processor's clock: a producer whose clock is 30 s
//! behind stays 30 s behind, and its next records are on time. Only differences of the
//! processor's clock are used, with one bound: the watermark is never left more than
//! `max_lag_ms` (the filter's `max_past_ms`) plus the out-of-orderness behind the wall clock, so
//! the last windows of a backfill of old events close at once, as a producer clock further
//! behind is not accepted anyway (`timestamp_out_of_bounds` against the ingest time). A partition that never delivered an event gets no watermark
//! from the idle rule (it has no window to close). A partition that is merely slow or lagging
//! is never caught up, so it never goes idle.

/// Watermark settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind the newest event time an event may arrive and still be on time, in ms.
    pub out_of_orderness_ms: i64,
    /// How long a caught-up partition must be quiet before the idle rule moves its watermark,
    /// in ms.
    pub idle_ms: i64,
    /// How far behind the wall clock a producer's clock may be (the filter's `max_past_ms`):
    /// the idle rule never leaves the watermark further behind than this plus the
    /// out-of-orderness, so that the last windows of a backfill of old events close too.
    pub max_lag_ms: i64,
}

/// What a checkpoint keeps of a [`Clock`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockState {
    /// Largest event time delivered.
    pub max_event_ms: Option<i64>,
    /// Processing time at which the record with that event time was read.
    pub max_read_at_ms: Option<i64>,
    /// Where the idle rule last moved the watermark.
    pub idle_floor_ms: Option<i64>,
}

/// One partition's event-time clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    config: WatermarkConfig,
    max_event_ms: Option<i64>,
    /// Processing time at which the record with `max_event_ms` was read: the idle rule
    /// advances from there.
    max_read_at_ms: Option<i64>,
    /// Where the idle rule last moved the watermark to.
    idle_floor_ms: Option<i64>,
    caught_up: bool,
    /// Processing time of the last record or caught-up report.
    last_activity_ms: i64,
}

impl Clock {
    /// A clock that continues from `state` (all `None` for a partition that delivered nothing
    /// yet). Without the time the largest event was read (a checkpoint written before it was
    /// recorded), the idle rule counts from `now_ms`: later than the truth, so it can only
    /// close windows later, never make a record late.
    pub fn new(config: WatermarkConfig, state: ClockState, now_ms: i64) -> Self {
        let max_read_at_ms = state.max_event_ms.map(|_| state.max_read_at_ms.unwrap_or(now_ms));
        Self {
            config,
            max_event_ms: state.max_event_ms,
            max_read_at_ms,
            idle_floor_ms: state.idle_floor_ms,
            caught_up: false,
            last_activity_ms: now_ms,
        }
    }

    /// What a checkpoint keeps of this clock.
    pub fn state(&self) -> ClockState {
        ClockState {
            max_event_ms: self.max_event_ms,
            max_read_at_ms: self.max_read_at_ms,
            idle_floor_ms: self.idle_floor_ms,
        }
    }

    /// The watermark; `None` until the partition delivered a record or went idle.
    pub fn current(&self) -> Option<i64> {
        let by_events =
            self.max_event_ms.map(|m| m.saturating_sub(self.config.out_of_orderness_ms));
        by_events.max(self.idle_floor_ms)
    }

    /// A record with `event_ms` was read at processing time `now_ms`.
    pub fn observe(&mut self, event_ms: i64, now_ms: i64) {
        if self.max_event_ms.is_none_or(|m| event_ms > m) {
            self.max_event_ms = Some(event_ms);
            self.max_read_at_ms = Some(now_ms);
        }
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
        let (Some(max), Some(read_at)) = (self.max_event_ms, self.max_read_at_ms) else {
            return false;
        };
        let by_stream = max.saturating_add(now_ms.saturating_sub(read_at).max(0));
        let by_wall = now_ms.saturating_sub(self.config.max_lag_ms);
        let floor = by_stream.max(by_wall).saturating_sub(self.config.out_of_orderness_ms);
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
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;
    const CFG: WatermarkConfig =
        WatermarkConfig { out_of_orderness_ms: 1_000, idle_ms: 5_000, max_lag_ms: 2 * HOUR };

    #[test]
    fn follows_the_largest_event_time_and_never_goes_back() {
        let mut c = Clock::new(CFG, ClockState::default(), 0);
        assert_eq!(c.current(), None);
        c.observe(10_000, 0);
        assert_eq!(c.current(), Some(9_000));
        c.observe(4_000, 0);
        assert_eq!(c.current(), Some(9_000), "an older record does not move it back");
    }

    #[test]
    fn only_a_caught_up_quiet_partition_is_idle() {
        let mut c = Clock::new(CFG, ClockState::default(), 0);
        c.observe(10_000, 10_000);
        // Quiet for long, but not caught up (lagging or slow): time holds.
        assert!(!c.idle_tick(100_000));
        assert_eq!(c.current(), Some(9_000));
        // Caught up, but not yet quiet for idle_ms.
        c.set_caught_up(true, 100_000);
        assert!(!c.idle_tick(104_999));
        assert_eq!(c.current(), Some(9_000));
        // Caught up and quiet: the watermark moves on by the wall time since the newest
        // event was read.
        assert!(c.idle_tick(105_000));
        assert_eq!(c.current(), Some(104_000));
        // A new record makes it active again; its event time only counts when it is ahead.
        c.observe(50_000, 106_000);
        assert_eq!(c.current(), Some(104_000));
        assert!(!c.idle_tick(200_000), "not caught up after the record");
    }

    #[test]
    fn a_producer_clock_behind_the_processor_stays_behind() {
        // The producer's clock is 30 s behind the processor's: an event read at 100 s carries
        // 70 s. After an idle gap the watermark is 30 s behind the wall clock too.
        let mut c = Clock::new(CFG, ClockState::default(), 0);
        c.observe(70_000, 100_000);
        c.set_caught_up(true, 100_000);
        assert!(c.idle_tick(106_000));
        assert_eq!(c.current(), Some(75_000), "70 s + 6 s elapsed - 1 s out-of-orderness");
        // The next burst, 10 s later by both clocks, is well ahead of the watermark.
        let wm = c.current().expect("a watermark");
        assert!(80_000 > wm);
        c.observe(80_000, 110_000);
        assert_eq!(c.current(), Some(79_000));
    }

    #[test]
    fn a_backfill_of_old_events_closes_by_the_wall_clock_less_the_allowed_lag() {
        // Events from a year ago, read now: the watermark goes no further back than the
        // largest lag a producer clock may have (max_lag_ms), so their windows all close.
        let now = 400 * 24 * HOUR;
        let mut c = Clock::new(CFG, ClockState::default(), 0);
        c.observe(now - 365 * 24 * HOUR, now);
        c.set_caught_up(true, now);
        assert!(c.idle_tick(now + 5_000));
        assert_eq!(c.current(), Some(now + 5_000 - 2 * HOUR - 1_000));
    }

    #[test]
    fn a_partition_without_events_gets_no_floor() {
        let mut c = Clock::new(CFG, ClockState::default(), 0);
        c.touch(1_000);
        c.set_caught_up(true, 1_000);
        assert!(!c.idle_tick(1_000_000));
        assert_eq!(c.current(), None);
        assert_eq!(c.state(), ClockState::default());
    }

    #[test]
    fn restarts_where_it_left_off() {
        let state = ClockState {
            max_event_ms: Some(10_000),
            max_read_at_ms: Some(40_000),
            idle_floor_ms: Some(20_000),
        };
        let mut c = Clock::new(CFG, state, 90_000);
        assert_eq!(c.current(), Some(20_000));
        assert_eq!(c.state(), state);
        // The idle rule goes on from the time the newest event was read, before the restart.
        c.set_caught_up(true, 90_000);
        assert!(c.idle_tick(95_000));
        assert_eq!(c.current(), Some(10_000 + 55_000 - 1_000));
        // A checkpoint that does not say when its newest event was read: counted from the
        // restart, so the watermark is later to move, never ahead of the truth.
        let old = ClockState { max_read_at_ms: None, ..state };
        let mut c = Clock::new(CFG, old, 90_000);
        assert_eq!(c.state().max_read_at_ms, Some(90_000));
        c.set_caught_up(true, 90_000);
        assert!(!c.idle_tick(95_000), "10 s + 5 s - 1 s is below the 20 s floor kept");
        assert!(c.idle_tick(102_000));
        assert_eq!(c.current(), Some(21_000));
    }

    proptest! {
        /// Whatever the producer's clock offset, records delivered with a delay that varies
        /// by no more than the out-of-orderness are never behind the watermark, however the
        /// idle rule fires between bursts.
        #[test]
        fn a_skewed_producer_is_never_behind_the_watermark(
            offset_ms in -HOUR..HOUR,
            bursts in proptest::collection::vec((1usize..20, 0i64..30_000, 0i64..1_000), 1..30),
        ) {
            let mut c = Clock::new(CFG, ClockState::default(), 0);
            let mut wall = 1_000_000i64;
            for (records, gap_ms, delay_ms) in bursts {
                wall += gap_ms;
                // Idle ticks during the gap, as the worker runs them.
                c.set_caught_up(true, wall - gap_ms);
                let mut t = wall - gap_ms;
                while t < wall {
                    c.idle_tick(t);
                    t += 700;
                }
                for i in 0..records as i64 {
                    let produced = wall + i * 10;
                    let event = produced + offset_ms;
                    let read = produced + delay_ms;
                    c.idle_tick(read);
                    prop_assert!(c.current().is_none_or(|wm| event >= wm), "event {event} behind {:?}", c.current());
                    c.observe(event, read);
                }
                wall += records as i64 * 10;
            }
        }
    }
}
