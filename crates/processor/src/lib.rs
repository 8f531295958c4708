//! Tributary's stream processor: filter → enrich → key → window → aggregate, exactly once.
//!
//! - [`window::Engine`]: event-time panes, 1-minute tumbling and 5-minute sliding windows
//!   built from those panes, a grace period, late records reported rather than dropped.
//! - [`watermark::Clock`]: one partition's watermark, with the idle rule.
//! - [`task::Task`]: one input partition's state and how it is recovered by replay.

pub mod task;
pub mod watermark;
pub mod window;
