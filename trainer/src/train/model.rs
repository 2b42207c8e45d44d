//! What the training loop and evaluation need from a model: its parameter
//! table, initial weights, one training step's forward and backward, and
//! inference. [`crate::model::AlphaFold`] implements it; keeping the loop
//! behind this trait lets its tests drive a small model too.

use std::collections::BTreeMap;

use scalefold_featurize::Sample;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::Result;
use crate::layers::ParamTable;

/// The losses of one evaluation: the weighted total and every term by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepLosses {
    /// The weighted total (what the gradient is of).
    pub total: f64,
    /// Every unweighted term by name (e.g. `fape`, `distogram`).
    pub terms: BTreeMap<String, f64>,
}

/// A model's prediction for one sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prediction {
    /// Final atom14 positions, Å, per residue of the crop.
    pub atom14: Vec<[[f32; 3]; 14]>,
    /// Predicted lDDT per residue, 0..100.
    pub plddt: Vec<f32>,
    /// The losses against the sample's ground truth.
    pub losses: StepLosses,
}

/// A trainable model on backend `B`, declared (its tensors and parameters)
/// but not yet materialized when handed to the loop.
pub trait TrainModel<B: Backend> {
    /// Every parameter, in the order of the flat weight block.
    fn param_table(&self) -> &ParamTable;
    /// Writes the initial weights and constants, deterministic in `seed`
    /// (after `materialize`).
    fn init_weights(&self, be: &mut B, seed: u64) -> Result<()>;
    /// One training step's forward and backward with `num_recycles` extra
    /// recycling iterations: on return every parameter's gradient is in the
    /// gradient block (zeroed first). Returns the losses of the last iteration.
    fn train_step(
        &mut self,
        be: &mut B,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: u64,
    ) -> Result<StepLosses>;
    /// Seconds the last `train_step` or `predict` spent in host (CPU) work
    /// between the device passes; 0 for a model without such a part.
    fn host_seconds(&self) -> f64 {
        0.0
    }
    /// Inference without dropout or gradient.
    fn predict(&mut self, be: &mut B, sample: &Sample, num_recycles: usize) -> Result<Prediction>;
}
