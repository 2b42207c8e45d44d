//! The optimizer: Adam with global gradient-norm clipping and a weight average
//! (EMA), over the flat parameter block.
//!
//! State lives next to the flat weight block (class `Weight`, the bf16 compute
//! copy on the GPU) and the flat gradient block (class `WeightGrad`, f32): f32
//! master weights, both Adam moments and the weight average, each one tensor
//! exactly as long as the weight block and in its element order (padding
//! included: the backend rounds each parameter to `Backend::param_align`
//! elements, the same in the weight and the gradient block). A step is two
//! passes over the blocks: the squared global gradient norm, then one fused
//! update ([`crate::backend::AdamStep`] has the formula) that also refreshes the
//! compute copy. No host synchronization: the clipping factor is read on the
//! device.

use crate::backend::{AdamStep, Backend, Class, OptimizerState};
use crate::error::{Result, TrainerError};
use crate::layers::ParamTable;

/// Optimizer settings. [`OptimizerConfig::af2`] is the AlphaFold2 recipe
/// (supplement 1.11.3): Adam, lr 1e-3, β = (0.9, 0.999), ε = 1e-6, global
/// gradient clipping at norm 0.1, weight average with decay 0.999, no weight decay.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Global gradient-norm clipping threshold (0 disables clipping).
    pub clip_norm: f32,
    /// Decay of the weight average.
    pub ema_decay: f32,
}

impl OptimizerConfig {
    /// The AlphaFold2 training recipe.
    pub fn af2() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            clip_norm: 0.1,
            ema_decay: 0.999,
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, detail: String| Err(TrainerError::Config { field, detail });
        for (field, v) in [
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("ema_decay", self.ema_decay),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(field, format!("{v}; expected a value in [0, 1)"));
            }
        }
        for (field, v) in [
            ("lr", self.lr),
            ("eps", self.eps),
            ("clip_norm", self.clip_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("{v}; expected a finite value >= 0"));
            }
        }
        Ok(())
    }

    /// The update of step `t` (1-based) at learning rate `lr`, with its bias
    /// corrections computed in f64.
    pub fn step(&self, t: u32, lr: f32) -> AdamStep {
        let corr = |beta: f32| (1.0 / (1.0 - (beta as f64).powi(t as i32))) as f32;
        AdamStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            bc1: corr(self.beta1),
            bc2: corr(self.beta2),
            ema_decay: self.ema_decay,
            clip_norm: self.clip_norm,
        }
    }
}

/// Length of the flat weight block of `table` when each parameter is rounded up
/// to `align` elements.
pub fn flat_len(table: &ParamTable, align: usize) -> usize {
    table
        .entries
        .iter()
        .map(|e| e.shape.iter().product::<usize>().next_multiple_of(align))
        .sum()
}

/// The optimizer of one model: its settings, its planned state and the step count.
pub struct Optimizer {
    /// Settings.
    pub cfg: OptimizerConfig,
    /// The state tensors (declared by [`Optimizer::new`]).
    pub state: OptimizerState,
    /// Steps taken so far.
    pub steps: u32,
    numel: usize,
}

impl Optimizer {
    /// Declares the state for every parameter of `table` (call before
    /// `materialize`, after every parameter is declared).
    pub fn new<B: Backend>(be: &mut B, table: &ParamTable, cfg: OptimizerConfig) -> Result<Self> {
        cfg.validate()?;
        let n = flat_len(table, be.param_align());
        let mut decl = |name: &str, len| be.declare(name, len, Class::Stat);
        let state = OptimizerState {
            master: decl("optim.master", n),
            m: decl("optim.adam_m", n),
            v: decl("optim.adam_v", n),
            ema: decl("optim.ema", n),
            norm_sq: decl("optim.grad_norm_sq", 1),
        };
        Ok(Self {
            cfg,
            state,
            steps: 0,
            numel: n,
        })
    }

    /// Starts from the current weights: master and weight average become the
    /// weights, both moments zero (not for use inside a step: reads to the host).
    pub fn init<B: Backend>(&mut self, be: &mut B, table: &ParamTable) -> Result<()> {
        let have = be.class_len(Class::Weight);
        if have != self.numel {
            return Err(TrainerError::Shape {
                op: "Optimizer::init",
                detail: format!(
                    "the weight block holds {have} elements, the parameter table needs {}: every \
                     Weight tensor must be a parameter of the table",
                    self.numel
                ),
            });
        }
        let align = be.param_align();
        let mut w = Vec::with_capacity(self.numel);
        for e in &table.entries {
            w.extend(be.read(e.param.w)?);
            w.resize(w.len().next_multiple_of(align), 0.0);
        }
        be.write(self.state.master, &w)?;
        be.write(self.state.ema, &w)?;
        be.fill(self.state.m, 0.0)?;
        be.fill(self.state.v, 0.0)?;
        self.steps = 0;
        Ok(())
    }

    /// One step at the configured learning rate: global gradient norm, then the
    /// fused Adam + EMA update. Queues device work only.
    pub fn step<B: Backend>(&mut self, be: &mut B) -> Result<()> {
        self.step_with_lr(be, self.cfg.lr)
    }

    /// One step at learning rate `lr` (for a schedule).
    pub fn step_with_lr<B: Backend>(&mut self, be: &mut B, lr: f32) -> Result<()> {
        self.steps += 1;
        be.grad_norm_sq(self.state.norm_sq)?;
        be.adam_ema_step(&self.cfg.step(self.steps, lr), &self.state)
    }

    /// The global gradient norm of the last step, before clipping (synchronizes).
    pub fn last_grad_norm<B: Backend>(&self, be: &mut B) -> Result<f32> {
        Ok(be.read(self.state.norm_sq)?[0].sqrt())
    }
}
