//! A Confluent-compatible schema registry whose only storage is the compacted topic
//! `_schemas`. Start with [`state`] (the rules every instance applies to the log).

pub mod state;
