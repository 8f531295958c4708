//! One module per subcommand: each has its clap arguments (the flag layer of the
//! configuration) and a `run` that does the work with the loaded configuration.

pub mod config;
pub mod dlq;
pub mod gateway;
pub mod gen;
pub mod openapi;
pub mod platform;
pub mod processor;
pub mod registry;
pub mod service;
pub mod sink;
pub mod topics;
pub mod warehouse;
