//! A generic streaming loader: seeded plans, async fetch, a transform pool,
//! ready-first delivery in a bounded window, resume and replay.
//!
//! It knows nothing of proteins: a trainer hands it a source of row groups, a
//! plan and a transform `(row, seed) → sample`, and iterates over batches. The
//! runnable version of this example, over a Parquet dataset written with the
//! storage crate, is `examples/loader_training.rs` (`cargo run --release --example
//! loader_training`); it also saves and resumes the loader state mid-epoch.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{AsArray, Float32Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Float32Type, Schema};
//! use scalefold_loader::{
//!     Loader, LoaderConfig, MemorySource, Plan, PlanConfig, RowGroupSource, RowRef, Sampling,
//!     TransformError, rng,
//! };
//!
//! // A table of numbers in 4 row groups (a real trainer opens a `DatasetSource`).
//! let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, false)]));
//! let groups = (0..4)
//!     .map(|g| {
//!         let x: Vec<f32> = (0..25).map(|i| (g * 25 + i) as f32).collect();
//!         RecordBatch::try_new(schema.clone(), vec![Arc::new(Float32Array::from(x))]).unwrap()
//!     })
//!     .collect();
//! let source = Arc::new(MemorySource::new("numbers", groups));
//!
//! // This rank's plan: a seeded shuffle, batches of 10, rank 0 of 1.
//! let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
//! let sampling = Sampling::Shuffle { block_row_groups: 2 };
//! let plan = Plan::new(PlanConfig { seed: 7, rank: 0, world_size: 1, batch_size: 10, sampling }, &rows)?;
//!
//! // The per-sample transform: the same (row, seed) always gives the same sample.
//! let transform = |row: RowRef<'_>, seed: u64| -> Result<f32, TransformError> {
//!     let x = row.batch.column(0).as_primitive::<Float32Type>().value(row.index);
//!     Ok(x + rng::unit(&mut rng::rng_from(&[seed])) as f32 * 1e-3)
//! };
//!
//! let config = LoaderConfig { window: 4, epochs: Some(2), ..LoaderConfig::default() };
//! let mut loader = Loader::new(source, plan, transform, config)?;
//! let mut seen = 0;
//! while let Some(batch) = loader.next_batch()? {
//!     seen += batch.samples.len(); // train on batch.samples here
//!     if batch.seq == 3 {
//!         let _checkpoint = serde_json::to_string(&loader.state()).unwrap(); // resume from this
//!     }
//! }
//! assert_eq!(seen, 200);
//! println!("{:?}", loader.metrics());
//! # Ok::<(), scalefold_loader::LoaderError>(())
//! ```
//!
//! # Guarantees
//!
//! - **Plan** ([`Plan`]): per epoch a global order of rows from (run seed, epoch),
//!   cut into equal per-rank batches; each sample's seed is (run seed, epoch,
//!   position). The global order does not depend on the number of ranks.
//! - **Window** ([`LoaderConfig::window`]): a batch is overtaken by at most W − 1
//!   later ones; W = 1 delivers in plan order exactly.
//! - **Log, state, replay**: [`Loader::delivery_log`] records the order delivered,
//!   [`Loader::state`] is O(W) and resumes exactly ([`LoaderConfig::resume`]);
//!   [`Delivery::Replay`] reproduces a recorded order.
//! - **Faults**: a row whose transform errors or panics is reported ([`Fault`])
//!   and skipped or replaced deterministically ([`FaultPolicy`]); slow rows are
//!   reported; failed reads are retried with backoff, then surface naming the object.
//! - **Binary columns**: a [`DatasetSource`] hands the transform binary columns as the
//!   schema says (`Binary`) unless built [`DatasetSource::with_binary_layout`]
//!   ([`BinaryLayout::Views`]): then they are `BinaryView` arrays pointing into the
//!   decompressed Parquet pages, one copy of every byte fewer per read. A transform
//!   that reads binary values with [`RowRef::bytes`] works with either.
//! - **Memory**: row groups held ahead of the transforms stay within
//!   [`LoaderConfig::prefetch_bytes`]; at most `in_flight_batches` batches are planned
//!   and undelivered.
//!
//! # Ranks and DAP groups
//!
//! Run one loader per data-parallel rank (`PlanConfig { rank, world_size, .. }`).
//! With Dynamic Axial Parallelism, the ranks of one DAP group train on the same
//! sample: only the group's first GPU runs a loader (its data-parallel rank is the
//! group index, its world size the number of groups), and the trainer broadcasts
//! each batch's tensors from that GPU to the rest of the group (an NCCL broadcast
//! of the fixed-shape buffers) before the step.

pub mod cache;
mod dataset;
mod error;
pub mod fetch;
mod loader;
pub mod plan;
mod pool;
pub mod rng;
pub mod source;

pub use cache::CachedSource;
pub use dataset::DatasetSource;
pub use error::{LoaderError, SourceError};
pub use fetch::RetryPolicy;
pub use loader::{Batch, Delivery, Loader, LoaderConfig, LoaderMetrics, LoaderState};
pub use plan::{Plan, PlanConfig, PlanEntry, Sampling};
pub use pool::{Fault, FaultAction, FaultKind, FaultPolicy, RowRef, TransformError, TransformFn};
pub use scalefold_storage::BinaryLayout;
pub use source::{MemorySource, RowGroupInfo, RowGroupSource, compute_weights};
