#![warn(missing_docs)]
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]
//! Trainer: AlphaFold2 with explicit forward and backward passes over a CPU
//! reference backend (f32, or f64 for gradient checks) and a CUDA backend
//! (bf16 compute, f32 accumulation, f32 gradients).
//!
//! Layout: [`backend`] (the op set, the CPU and CUDA implementations, a
//! profiling wrapper), [`layers`] (modules with forward and backward),
//! [`block`] (Evoformer and extra-MSA blocks), [`optim`] (fused Adam + weight
//! average over the flat parameter block), [`template`] (template pointwise
//! attention), [`config`], [`dist`]
//! (communicators for DAP and data parallelism), [`bench`] (the block
//! benchmark behind `scalefold bench evoformer`).
//!
//! Memory is planned, not allocated on demand: modules declare tensors
//! (activations, f32 statistics, weights, weight gradients) when they are
//! built, and `Backend::materialize` lays each class out in one block. The
//! weight gradients of all parameters are one contiguous block (one fill to
//! zero, one all-reduce later).

pub mod backend;
pub mod bench;
pub mod block;
pub mod config;
pub mod dist;
pub mod error;
pub mod layers;
pub mod model;
pub mod optim;
pub mod structure;
pub mod template;
pub mod train;

pub use backend::{Backend, Class, TensorId};
pub use block::EvoformerBlock;
pub use config::BlockConfig;
pub use error::{Result, TrainerError};

#[cfg(test)]
mod tests;
