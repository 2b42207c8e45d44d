//! [`AlphaFold`] as a [`TrainModel`]: the loop's and evaluation's view of the
//! whole model, and its construction from a [`TrainConfig`].

use scalefold_featurize::Sample;

use super::config::TrainConfig;
use super::model::{Prediction, StepLosses, TrainModel};
use crate::backend::Backend;
use crate::error::Result;
use crate::layers::ParamTable;
use crate::model::AlphaFold;
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

    fn predict(&mut self, be: &mut B, sample: &Sample, num_recycles: usize) -> Result<Prediction> {
        let out = AlphaFold::predict(self, be, sample, num_recycles)?;
        Ok(Prediction {
            losses: step_losses(&out.losses),
            atom14: out.atom14,
            plddt: out.plddt,
        })
    }
}
