//! Writing events (single and batch) and reading the newest ones.
//!
//! Start at [`publish`] (one event) or [`publish_batch`] (many); both check and encode events
//! in `encode` and write them through the shared path in `write` (dedupe window, producer,
//! settling). [`latest`] reads the newest records, shown as a [`RecordView`].

mod batch;
mod encode;
mod latest;
mod publish;
mod view;
mod write;

pub use batch::{BatchItem, BatchResponse};
pub use encode::{AVRO_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE};
pub use latest::{LatestQuery, LatestResponse};
pub use publish::EventResponse;
pub use view::RecordView;

// The handlers, with the OpenAPI path items `#[utoipa::path]` generates beside them.
pub use batch::{__path_publish_batch, publish_batch};
pub use latest::{__path_latest, latest};
pub use publish::{__path_publish, publish};
