//! Tributary's stream processor. So far: the window engine, pure logic with no I/O — event-time
//! panes, 1-minute tumbling and 5-minute sliding windows built from those panes, per-partition
//! watermarks with bounded out-of-orderness and an idle rule, a grace period, and late records
//! reported rather than dropped. The Kafka-native exactly-once driver comes next (issue 4).
//!
//! Start with [`window::Engine`] (what happens to a record and when a window closes), then
//! [`watermark::Watermarks`] (how event time advances across partitions).

pub mod watermark;
pub mod window;
