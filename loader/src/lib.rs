//! A generic streaming loader: seeded plans, async fetch, a transform pool,
//! ready-first delivery in a bounded window, resume and replay.
//!
//! It knows nothing of proteins: a trainer hands it a source of row groups, a
//! plan and a transform `(row, seed) → sample`, and iterates over batches.
//!
//! ```
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
pub use source::{MemorySource, RowGroupInfo, RowGroupSource, compute_weights};
