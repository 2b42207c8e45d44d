//! The whole AlphaFold2 model on one backend: the trunk ([`trunk`]: embedders,
//! template embedding, extra-MSA and Evoformer stacks, single projection) runs
//! on the [`Backend`]; the structure module, heads and losses run on the host
//! ([`crate::structure::objective`]) from the trunk's final single, pair and
//! MSA representations, and hand their gradients back.
//!
//! Every parameter, trunk and host, lives in the backend's flat parameter block
//! (one [`ParamTable`]): trunk parameters first, then the host's under `host.`
//! in [`host_param_layout`] order. A step reads the host weights from the
//! backend and writes the host gradients into the gradient block, so one
//! optimizer, one gradient norm and one checkpoint cover the model.
//!
//! Recycling (Algorithm 2, 32): iterations `0..num_recycles` run forward only
//! (dropout on in training), each passing its MSA row 0, pair representation
//! and predicted pseudo-beta positions to the next; the last iteration runs
//! forward and backward. No gradient reaches an earlier iteration: the
//! recycled tensors are copies the backward never writes into.

pub mod config;
pub mod embed;
pub mod features;
pub mod graph;
pub mod init;
pub mod trunk;

pub use config::ModelConfig;
pub use features::FeatureDims;
pub use trunk::Trunk;

use std::time::Instant;

use crate::backend::{Backend, mix64};
use crate::error::{Result, TrainerError};
use crate::layers::{Builder, Init, Param, ParamTable};
use crate::structure::{
    HostInputs, HostOutputs, LossTerms, host_atom14, host_forward, host_forward_backward,
    host_param_init, host_param_layout,
};
use rand::SeedableRng;
use scalefold_featurize::transform::{Sample, SampleConfig};

/// Name prefix of the host part's parameters in the table.
pub const HOST_PREFIX: &str = "host";

/// The whole model on one backend.
pub struct AlphaFold {
    /// Architecture.
    pub cfg: ModelConfig,
    /// Sample shapes the tensors are planned for.
    pub sample_cfg: SampleConfig,
    /// Every parameter (trunk, then host), in flat-block order.
    pub params: ParamTable,
    /// The trunk.
    pub trunk: Trunk,
    /// The host parameters, in [`host_param_layout`] order.
    host_params: Vec<Param>,
    /// Number of trunk entries at the front of `params`.
    trunk_params: usize,
    /// Seconds the last [`AlphaFold::train_step`] or [`AlphaFold::predict`]
    /// spent in the host part (structure module, heads, losses and their
    /// backward), i.e. on the CPU between the trunk's passes.
    host_seconds: f64,
}

impl AlphaFold {
    /// Declares every parameter and tensor (call `be.materialize()` after, then `init`).
    pub fn new<B: Backend>(
        be: &mut B,
        cfg: &ModelConfig,
        sample_cfg: &SampleConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let dims = FeatureDims::of(sample_cfg);
        if dims.n == 0 || dims.s == 0 {
            return Err(TrainerError::Config {
                field: "sample.crop_size / max_msa_clusters",
                detail: format!(
                    "{} residues and {} MSA rows; both must be positive",
                    dims.n, dims.s
                ),
            });
        }
        let mut params = ParamTable::default();
        let trunk = Trunk::new(be, &mut params, cfg, dims)?;
        let trunk_params = params.entries.len();
        let mut b = Builder::new(be, &mut params);
        let host_params = b.scope(HOST_PREFIX, |b| {
            host_param_layout(&cfg.host)
                .iter()
                .map(|(name, shape)| b.param(name, shape, Init::Zeros))
                .collect()
        });
        Ok(Self {
            cfg: cfg.clone(),
            sample_cfg: sample_cfg.clone(),
            params,
            trunk,
            host_params,
            trunk_params,
            host_seconds: 0.0,
        })
    }

    /// Seconds the last step or prediction spent in the host part (the
    /// structure module, heads, losses and their backward on the CPU).
    pub fn host_seconds(&self) -> f64 {
        self.host_seconds
    }

    /// Writes initial weights (AlphaFold2's rules, [`init`]; the host's from
    /// [`host_param_init`]), deterministic in `seed`, and the trunk's constants.
    pub fn init<B: Backend>(&self, be: &mut B, seed: u64) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for e in &self.params.entries[..self.trunk_params] {
            let v = init::initial_values(e, &self.cfg, &mut rng);
            be.write(e.param.w, &v)?;
        }
        for (p, v) in self
            .host_params
            .iter()
            .zip(host_param_init(&self.cfg.host, mix64(seed ^ 0x4057)))
        {
            be.write(p.w, &v)?;
        }
        self.trunk.init_constants(be)
    }

    /// The host parameters' current values (reads from the backend).
    fn host_values<B: Backend>(&self, be: &mut B) -> Result<Vec<Vec<f32>>> {
        self.host_params.iter().map(|p| be.read(p.w)).collect()
    }

    /// Runs the recycling iterations `0..=num_recycles`, the last through
    /// `last(self, be, inputs)`; earlier ones forward only. `dropout_seed`
    /// `None` is inference. Each iteration's trunk forward runs through
    /// `forward(trunk, be, dropout)` (eager, or a CUDA-graph replay: [`graph`])
    /// after the iteration's dropout seed is set on the backend.
    fn run<B: Backend, R>(
        &mut self,
        be: &mut B,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: Option<u64>,
        mut forward: impl FnMut(&mut Trunk, &mut B, bool) -> Result<()>,
        last: impl FnOnce(&mut Self, &mut B, &[Vec<f32>], &HostInputs) -> Result<R>,
    ) -> Result<R> {
        features::check_sample(sample, self.trunk.dims, num_recycles + 1)?;
        let host = self.host_values(be)?;
        let clamp = dropout_seed.is_none_or(|s| self.cfg.losses.clamp_backbone_fape(s));
        self.trunk.reset_recycling(be)?;
        self.host_seconds = 0.0;
        let mut prev_pb: Option<Vec<[f32; 3]>> = None;
        for it in 0..=num_recycles {
            self.trunk.set_inputs(be, sample, it, prev_pb.as_deref())?;
            if let Some(s) = dropout_seed {
                be.set_dropout_seed(mix64(s ^ mix64(0x4ec7_c1e0 + it as u64)))?;
            }
            forward(&mut self.trunk, be, dropout_seed.is_some())?;
            let single = be.read(self.trunk.single)?;
            let pair = be.read(self.trunk.pair)?;
            let msa = be.read(self.trunk.msa)?;
            let x = HostInputs {
                single: &single,
                pair: &pair,
                msa: &msa,
                sample,
                recycle: &sample.recycles[it],
                clamp_backbone_fape: clamp,
            };
            if it == num_recycles {
                return last(self, be, &host, &x);
            }
            // An earlier iteration only feeds its positions forward: the
            // structure module alone, no heads or losses.
            let atom14 = timed(&mut self.host_seconds, || {
                host_atom14(&self.cfg.host, &host, &x)
            })?;
            prev_pb = Some(features::pseudo_beta(&sample.aatype, &atom14));
            self.trunk.save_recycling(be)?;
        }
        unreachable!("the loop returns on its last iteration")
    }

    /// One training step's forward and backward: `num_recycles + 1` iterations
    /// (iteration `i` uses `sample.recycles[i]`; an error if the sample has
    /// fewer), all but the last without gradient. Zeroes the gradient block
    /// first; on return every parameter gradient is in the WeightGrad block.
    /// `dropout_seed` seeds every dropout mask of the step (and the draw of
    /// whether backbone FAPE is clamped). Returns the last iteration's losses.
    pub fn train_step<B: Backend>(
        &mut self,
        be: &mut B,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: u64,
    ) -> Result<LossTerms> {
        self.train_step_with(
            be,
            sample,
            num_recycles,
            dropout_seed,
            |t, be, dropout| t.forward(be, dropout),
            |t, be| t.backward(be),
        )
    }

    /// [`AlphaFold::train_step`] with the trunk's forward and backward run
    /// through `forward` and `backward` (eager, or CUDA-graph replays: [`graph`]).
    fn train_step_with<B: Backend>(
        &mut self,
        be: &mut B,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: u64,
        forward: impl FnMut(&mut Trunk, &mut B, bool) -> Result<()>,
        backward: impl FnOnce(&Trunk, &mut B) -> Result<()>,
    ) -> Result<LossTerms> {
        self.params.zero_grads(be)?;
        self.run(
            be,
            sample,
            num_recycles,
            Some(dropout_seed),
            forward,
            |m, be, host, x| {
                let (out, grads) = timed(&mut m.host_seconds, || {
                    host_forward_backward(&m.cfg.host, &m.cfg.losses, host, x)
                })?;
                m.trunk
                    .write_output_grads(be, &grads.single, &grads.pair, &grads.msa)?;
                for (p, g) in m.host_params.iter().zip(&grads.params) {
                    be.write(p.g, g)?;
                }
                backward(&m.trunk, be)?;
                Ok(out.losses)
            },
        )
    }

    /// The last iteration's host forward at inference, timed into `host_seconds`.
    fn timed_host_forward(&mut self, host: &[Vec<f32>], x: &HostInputs) -> Result<HostOutputs> {
        timed(&mut self.host_seconds, || {
            host_forward(&self.cfg.host, &self.cfg.losses, host, x)
        })
    }

    /// Inference (no dropout, no gradient): final atom14 positions and pLDDT,
    /// plus the losses against the sample's ground truth.
    pub fn predict<B: Backend>(
        &mut self,
        be: &mut B,
        sample: &Sample,
        num_recycles: usize,
    ) -> Result<HostOutputs> {
        self.run(
            be,
            sample,
            num_recycles,
            None,
            |t, be, dropout| t.forward(be, dropout),
            |m, _be, host, x| m.timed_host_forward(host, x),
        )
    }
}

/// Runs `f`, adding its wall time in seconds to `total`.
fn timed<R>(total: &mut f64, f: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let out = f();
    *total += started.elapsed().as_secs_f64();
    out
}

#[cfg(test)]
mod tests;
