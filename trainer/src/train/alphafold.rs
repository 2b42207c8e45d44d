//! [`AlphaFold`] as a [`TrainModel`]: the loop's and evaluation's view of the
//! whole model, and its construction from a [`TrainConfig`].

use scalefold_featurize::Sample;

use super::config::TrainConfig;
use super::model::{Prediction, StepLosses, TrainModel};
use crate::backend::Backend;
use crate::backend::cuda::CudaBackend;
use crate::error::Result;
use crate::layers::ParamTable;
use crate::model::AlphaFold;
use crate::model::graph::TrunkGraphs;
use crate::structure::HostOutputs;
use crate::structure::LossTerms;

/// Declares the model of `cfg` on `be` (not materialized).
pub fn build_alphafold<B: Backend>(be: &mut B, cfg: &TrainConfig) -> Result<AlphaFold> {
    AlphaFold::new(be, &cfg.model, &cfg.sample)
}

/// The loss terms by name (the struct's field names), total apart.
pub fn step_losses(t: &LossTerms) -> StepLosses {
    let LossTerms {
        total,
        fape,
        sidechain_fape,
        torsion,
        angle_norm,
        distogram,
        masked_msa,
        plddt,
        experimentally_resolved,
        violation,
    } = t.clone();
    StepLosses {
        total,
        terms: [
            ("fape", fape),
            ("sidechain_fape", sidechain_fape),
            ("torsion", torsion),
            ("angle_norm", angle_norm),
            ("distogram", distogram),
            ("masked_msa", masked_msa),
            ("plddt", plddt),
            ("experimentally_resolved", experimentally_resolved),
            ("violation", violation),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// The loop's view of the model's inference output.
fn prediction(out: HostOutputs) -> Prediction {
    Prediction {
        losses: step_losses(&out.losses),
        atom14: out.atom14,
        plddt: out.plddt,
    }
}

impl<B: Backend> TrainModel<B> for AlphaFold {
    fn param_table(&self) -> &ParamTable {
        &self.params
    }

    fn init_weights(&self, be: &mut B, seed: u64) -> Result<()> {
        self.init(be, seed)
    }

    fn train_step(
        &mut self,
        be: &mut B,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: u64,
    ) -> Result<StepLosses> {
        Ok(step_losses(&AlphaFold::train_step(
            self,
            be,
            sample,
            num_recycles,
            dropout_seed,
        )?))
    }

    fn host_seconds(&self) -> f64 {
        AlphaFold::host_seconds(self)
    }

    fn predict(&mut self, be: &mut B, sample: &Sample, num_recycles: usize) -> Result<Prediction> {
        Ok(prediction(AlphaFold::predict(
            self,
            be,
            sample,
            num_recycles,
        )?))
    }
}

/// [`AlphaFold`] whose trunk forward and backward run as CUDA-graph replays
/// (`run.cuda_graphs`): the graphs are captured on their second use and then
/// replayed for every recycling count (see [`crate::model::graph`]).
pub struct GraphedAlphaFold {
    /// The model.
    pub model: AlphaFold,
    /// Its trunk graphs on the one backend it trains on.
    pub graphs: TrunkGraphs,
}

impl GraphedAlphaFold {
    /// Wraps `model` with empty graphs.
    pub fn new(model: AlphaFold) -> Self {
        Self {
            model,
            graphs: TrunkGraphs::default(),
        }
    }
}

impl TrainModel<CudaBackend> for GraphedAlphaFold {
    fn param_table(&self) -> &ParamTable {
        &self.model.params
    }

    fn init_weights(&self, be: &mut CudaBackend, seed: u64) -> Result<()> {
        self.model.init(be, seed)
    }

    fn train_step(
        &mut self,
        be: &mut CudaBackend,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: u64,
    ) -> Result<StepLosses> {
        let t = self.model.train_step_graphed(
            be,
            &mut self.graphs,
            sample,
            num_recycles,
            dropout_seed,
        )?;
        Ok(step_losses(&t))
    }

    fn host_seconds(&self) -> f64 {
        self.model.host_seconds()
    }

    fn predict(
        &mut self,
        be: &mut CudaBackend,
        sample: &Sample,
        num_recycles: usize,
    ) -> Result<Prediction> {
        Ok(prediction(self.model.predict_graphed(
            be,
            &mut self.graphs,
            sample,
            num_recycles,
        )?))
    }
}
