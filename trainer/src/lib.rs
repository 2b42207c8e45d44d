//! Trainer: AlphaFold2 with explicit forward and backward passes over a CPU
//! reference backend (f32) and a CUDA backend (bf16 compute, f32 master weights).
//!
//! Not built yet: backends, kernels and the model arrive with their own issues.
