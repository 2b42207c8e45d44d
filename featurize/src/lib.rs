//! Featurize: AlphaFold2 residue constants, static per-chain features, ground-truth
//! geometry and the seeded per-sample transforms. Pure computation: this crate does no IO.

pub mod geometry;
pub mod inputs;
pub mod residue_constants;
pub mod rigid;
