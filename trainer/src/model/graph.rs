//! CUDA-graph mode for the model's step on the CUDA backend.
//!
//! A training step cannot be one graph: between the trunk's forward and its
//! backward the host runs the structure module, heads and losses
//! ([`crate::structure::objective`]) on values read back from the GPU. What is
//! one fixed sequence of backend ops with static shapes is (a) one recycling
//! iteration's trunk forward, once the host has written that iteration's
//! features into the fixed input tensors, and (b) the trunk backward, once the
//! host has written the output gradients. [`TrunkGraphs`] captures each on its
//! second use (the first runs eagerly: cuBLASLt picks algorithms and kernels
//! compile on first use, neither of which may happen inside a capture) and
//! replays it afterwards. The recycling count only changes how often the
//! forward graph runs, so one forward graph serves every step variant.
//!
//! Dropout: a graph bakes kernel launch arguments in, so no per-step value
//! may be one. Each dropout op's launch carries only its fixed site seed
//! ([`crate::backend::Dropout::seed`]: which block, which stage); the step's
//! (and iteration's) seed lives in device memory, written by
//! [`crate::backend::Backend::set_dropout_seed`] before each replay, and the
//! kernels mix the two. A replay therefore draws the same masks as the eager
//! step with the same seed. Training (dropout on) and inference (dropout off)
//! launch different argument values, so each has its own forward graph.

use super::{AlphaFold, HostOutputs, LossTerms, Sample, Trunk};
use crate::backend::cuda::CudaBackend;
use crate::error::Result;
use cudarc::driver::CudaGraph;

/// One op sequence's lifecycle: eager once, captured on the next use, replayed after.
#[derive(Default)]
enum Stage {
    /// Never run: the next run is the eager warm-up.
    #[default]
    Cold,
    /// Warmed up: the next run captures.
    Warm,
    /// Captured: every run replays.
    Captured(CudaGraph),
}

impl Stage {
    /// Runs `ops` on `gpu` eagerly, or captures them and replays the graph,
    /// or replays the graph, by the stage. The capture is always ended, even
    /// when `ops` fails, so the stream is never left capturing.
    fn run(
        &mut self,
        gpu: &mut CudaBackend,
        ops: impl FnOnce(&mut CudaBackend) -> Result<()>,
    ) -> Result<()> {
        match self {
            Stage::Cold => {
                ops(gpu)?;
                *self = Stage::Warm;
            }
            Stage::Warm => {
                gpu.begin_capture()?;
                let queued = ops(gpu);
                let graph = gpu.end_capture();
                queued?;
                let graph = graph?;
                // Capturing queued nothing: this run's work is the first replay.
                gpu.replay(&graph)?;
                *self = Stage::Captured(graph);
            }
            Stage::Captured(graph) => gpu.replay(graph)?,
        }
        Ok(())
    }

    /// Whether the sequence is captured.
    fn captured(&self) -> bool {
        matches!(self, Stage::Captured(_))
    }
}

/// The trunk's forward graphs (training with dropout, inference without) and
/// backward graph of one [`AlphaFold`] on one
/// [`CudaBackend`] (the graphs hold that model's tensor addresses: use them
/// with no other model or backend).
#[derive(Default)]
pub struct TrunkGraphs {
    forward_train: Stage,
    forward_infer: Stage,
    backward: Stage,
}

impl TrunkGraphs {
    /// Whether the training forward and the backward graphs are both captured.
    pub fn captured(&self) -> (bool, bool) {
        (self.forward_train.captured(), self.backward.captured())
    }

    /// One trunk forward (inputs and, with `dropout`, the step's dropout seed
    /// already written) through the training or the inference forward graph.
    pub fn forward(
        &mut self,
        trunk: &mut Trunk,
        gpu: &mut CudaBackend,
        dropout: bool,
    ) -> Result<()> {
        let stage = if dropout {
            &mut self.forward_train
        } else {
            &mut self.forward_infer
        };
        stage.run(gpu, |gpu| trunk.forward(gpu, dropout))
    }

    /// One trunk backward (output gradients already written) through the backward graph.
    pub fn backward(&mut self, trunk: &Trunk, gpu: &mut CudaBackend) -> Result<()> {
        self.backward.run(gpu, |gpu| trunk.backward(gpu))
    }
}

impl AlphaFold {
    /// [`AlphaFold::train_step`] with the trunk's forward (every recycling
    /// iteration) and backward run as CUDA graphs from `graphs` (made by
    /// `TrunkGraphs::default()` for this model). Same result as the eager step up
    /// to bf16 rounding.
    pub fn train_step_graphed(
        &mut self,
        gpu: &mut CudaBackend,
        graphs: &mut TrunkGraphs,
        sample: &Sample,
        num_recycles: usize,
        dropout_seed: u64,
    ) -> Result<LossTerms> {
        let TrunkGraphs {
            forward_train,
            backward,
            ..
        } = graphs;
        self.train_step_with(
            gpu,
            sample,
            num_recycles,
            dropout_seed,
            |t, gpu, dropout| forward_train.run(gpu, |gpu| t.forward(gpu, dropout)),
            |t, gpu| backward.run(gpu, |gpu| t.backward(gpu)),
        )
    }

    /// [`AlphaFold::predict`] with every trunk forward a CUDA-graph replay.
    pub fn predict_graphed(
        &mut self,
        gpu: &mut CudaBackend,
        graphs: &mut TrunkGraphs,
        sample: &Sample,
        num_recycles: usize,
    ) -> Result<HostOutputs> {
        self.run(
            gpu,
            sample,
            num_recycles,
            None,
            |t, gpu, dropout| graphs.forward(t, gpu, dropout),
            |m, _gpu, host, x| m.timed_host_forward(host, x),
        )
    }
}
