//! Training: configs, schedules, data, checkpoints, the loop and evaluation.
//!
//! - [`config`]: the TOML training config, presets and `--set` overrides.
//! - [`schedule`]: the learning rate and the recycling count of each step (pure
//!   functions of the step and the seed).
//! - [`data`]: a dataset streamed through the loader with the AlphaFold transform.
//! - [`model`]: what the loop needs from a model; [`alphafold`] wires in
//!   [`crate::model::AlphaFold`].
//! - [`run`]: the loop (metrics, skip of non-finite steps, checkpoints, resume).
//! - [`checkpoint`]: safetensors + JSON checkpoints, written atomically.
//! - [`eval`]: lDDT-Cα of checkpoints on a validation set, watch mode.
//! - [`plot`]: the loss-curve PNG.

pub mod alphafold;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod model;
pub mod plot;
pub mod run;
pub mod schedule;

#[cfg(test)]
mod tests;
