//! Storage: datasets of sharded, zstd-compressed Parquet with a manifest, on any object store.
//!
//! A dataset is a prefix (a local folder, or `s3://`, `gs://`, `az://`, `memory://` URL)
//! holding `shards/*.parquet` and `manifest.json`. Shards are written first and the manifest
//! last, in one atomic PUT: a reader never sees a half-written dataset.
//!
//! ```no_run
//! # async fn demo(batch: arrow::record_batch::RecordBatch) -> Result<(), scalefold_storage::StorageError> {
//! use scalefold_storage::{Dataset, DatasetWriter, WriterOptions};
//! let mut writer = DatasetWriter::create("/tmp/ds", batch.schema(), WriterOptions::default()).await?;
//! if !writer.is_finished("input-1") {
//!     writer.write_source("input-1", &batch).await?;
//! }
//! writer.finish_and_commit().await?;
//! let dataset = Dataset::open("/tmp/ds").await?;
//! let first = dataset.read_row_group(0, 0, Some(&["id".to_string()])).await?;
//! # Ok(()) }
//! ```

pub mod cpu_clock;
mod encode;
pub mod error;
pub mod location;
pub mod manifest;
pub mod reader;
#[cfg(test)]
mod test_batches;
pub mod writer;

pub use error::StorageError;
pub use location::Location;
pub use manifest::{LengthStats, Manifest, PartManifest, ShardInfo};
pub use reader::{BinaryLayout, Dataset, OpenOptions, ShardVerdict, VerifyReport};
pub use writer::{CommitSummary, DatasetWriter, WriterOptions, commit};
