#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]
//! Trainer: AlphaFold2 with explicit forward and backward passes over a CPU
//! reference backend (f32, or f64 for gradient checks) and a CUDA backend
//! (bf16 compute, f32 accumulation, f32 gradients).
//!
//! Layout: [`backend`] (the op set and its implementations), [`layers`]
//! (modules with forward and backward), [`block`] (Evoformer and extra-MSA
//! blocks), [`config`], [`dist`] (communicators for DAP and data parallelism).

pub mod backend;
pub mod bench;
pub mod block;
pub mod config;
pub mod dist;
pub mod error;
pub mod layers;

pub use backend::{Backend, Class, TensorId};
pub use block::EvoformerBlock;
pub use config::BlockConfig;
pub use error::{Result, TrainerError};

#[cfg(test)]
mod tests;
