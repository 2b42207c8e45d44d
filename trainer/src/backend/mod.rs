//! The compute backend abstraction: a closed set of tensor operations, each with
//! the forward and backward pieces the model needs, over flat buffers with
//! explicit shapes.
//!
//! Tensors are declared first (name, length, [`Class`]) and get storage in one
//! `materialize` call, which lays every declared tensor of a class out in one
//! contiguous allocation (the activation arena, the flat parameter block, the
//! flat gradient block). After that, the step allocates nothing.
//!
//! Row-major everywhere. An op never allocates, compiles or synchronizes, so a
//! sequence of ops can be captured as a CUDA graph on the GPU backend.

pub mod cpu;
pub mod cuda;
pub mod profile;
mod tensors;

use crate::error::Result;

/// Handle to a declared tensor (a range of one class's arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(pub(crate) usize);

/// Storage class of a tensor; decides its arena and, on the GPU, its element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Activations and activation gradients (bf16 on the GPU).
    Activation,
    /// The compute copy of the weights (bf16 on the GPU); one flat block.
    Weight,
    /// Weight gradients (f32 everywhere); one flat block, ready for one all-reduce.
    WeightGrad,
    /// Small per-row statistics and reduction buffers kept in f32 (LayerNorm mean
    /// and 1/std, attention log-sum-exp, attention pair-bias gradients).
    Stat,
}

/// All classes, in arena order.
pub const CLASSES: [Class; 4] = [
    Class::Activation,
    Class::Weight,
    Class::WeightGrad,
    Class::Stat,
];

/// An activation function fused into a bias add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// max(0, x).
    Relu,
}

/// A strided 2-D view of a tensor: element (r, c) lives at
/// `off + (r / row_div) * ld + c`. `row_div > 1` broadcasts one stored row over
/// `row_div` consecutive logical rows (read-only uses).
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// The tensor.
    pub t: TensorId,
    /// Offset of element (0, 0).
    pub off: usize,
    /// Distance between stored rows.
    pub ld: usize,
    /// Logical rows per stored row (1 = no broadcast).
    pub row_div: usize,
}

impl View {
    /// The whole tensor as a dense `[rows, cols]` matrix.
    pub fn dense(t: TensorId, cols: usize) -> Self {
        Self {
            t,
            off: 0,
            ld: cols,
            row_div: 1,
        }
    }
    /// Columns `off .. off + width` of a dense matrix with `ld` columns.
    pub fn cols(t: TensorId, ld: usize, off: usize) -> Self {
        Self {
            t,
            off,
            ld,
            row_div: 1,
        }
    }
    /// Element offset of (r, c).
    #[inline]
    pub fn at(&self, r: usize, c: usize) -> usize {
        self.off + (r / self.row_div) * self.ld + c
    }
}

/// One operand of a batched GEMM: matrix `b` of the batch starts at `off + b * stride`,
/// rows are `ld` apart.
#[derive(Clone, Copy, Debug)]
pub struct MatRef {
    /// The tensor.
    pub t: TensorId,
    /// Offset of the first matrix.
    pub off: usize,
    /// Leading dimension (row pitch) in elements.
    pub ld: usize,
    /// Distance between consecutive matrices of the batch (0 = shared).
    pub stride: usize,
}

impl MatRef {
    /// A single dense row-major matrix with `ld` columns.
    pub fn new(t: TensorId, ld: usize) -> Self {
        Self {
            t,
            off: 0,
            ld,
            stride: 0,
        }
    }
    /// Same matrix with an element offset.
    pub fn at(self, off: usize) -> Self {
        Self { off, ..self }
    }
    /// Same matrix as a batch with the given stride.
    pub fn batched(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
}

/// A strided batched GEMM in row-major terms:
/// `C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]`, with `op(A)` of shape
/// `[m, k]` and `op(B)` of shape `[k, n]`; `trans_a` means A is stored `[k, m]`.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Contraction length.
    pub k: usize,
    /// Number of matrices.
    pub batch: usize,
    /// A is stored transposed (`[k, m]`).
    pub trans_a: bool,
    /// B is stored transposed (`[n, k]`).
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the existing C (0 overwrites, 1 accumulates).
    pub beta: f32,
    /// Left operand.
    pub a: MatRef,
    /// Right operand.
    pub b: MatRef,
    /// Output.
    pub c: MatRef,
}

/// Shape of a fused attention: `batch` independent problems of `len` queries and
/// keys, `heads` heads of width `head_dim`. The packed projection tensor holds,
/// per (batch, position), `[q | k | v | g]`, each `heads * head_dim` wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Independent attention problems (MSA rows, pair rows, ...).
    pub batch: usize,
    /// Sequence length (queries = keys).
    pub len: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttnShape {
    /// Width of one of q, k, v, g: `heads * head_dim`.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Rows of the packed projection: `batch * len`.
    pub fn rows(&self) -> usize {
        self.batch * self.len
    }
}

/// Which axis of a `[d0, d1, c]` tensor shares one dropout mask value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedAxis {
    /// Independent mask per element.
    None,
    /// One mask over axis 0 ("row-wise" dropout of AlphaFold2: mask `[1, d1, c]`).
    Axis0,
    /// One mask over axis 1 ("column-wise" dropout: mask `[d0, 1, c]`).
    Axis1,
}

/// A seeded dropout applied to a `[d0, d1, c]` tensor. Its mask depends on the
/// op's fixed `seed` (its site: which block, which stage) and on the backend's
/// step seed ([`Backend::set_dropout_seed`]), mixed by [`mask_seed`]; the same two
/// seeds give the same mask on every backend (a counter-based hash, [`dropout_keep`]).
/// Keeping the per-step part out of the launch arguments lets a captured CUDA
/// graph draw fresh masks on every replay.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// Dropout probability (0 disables dropout).
    pub p: f32,
    /// The op's site seed: the same in every step.
    pub seed: u64,
    /// Tensor shape `[d0, d1, c]`.
    pub shape: [usize; 3],
    /// The shared axis.
    pub shared: SharedAxis,
}

impl Dropout {
    /// No dropout on a tensor of `n` elements.
    pub fn off(n: usize) -> Self {
        Self {
            p: 0.0,
            seed: 0,
            shape: [1, 1, n],
            shared: SharedAxis::None,
        }
    }
    /// The mask index of element `i` of the tensor.
    #[inline]
    pub fn mask_index(&self, i: usize) -> u64 {
        let [_, d1, c] = self.shape;
        let (i0, rest) = (i / (d1 * c), i % (d1 * c));
        let (i1, ic) = (rest / c, rest % c);
        (match self.shared {
            SharedAxis::None => i,
            SharedAxis::Axis0 => i1 * c + ic,
            SharedAxis::Axis1 => i0 * c + ic,
        }) as u64
    }
    /// The factor element `i` is multiplied by under the backend's step seed
    /// `step_seed`: 0 or 1/(1-p).
    #[inline]
    pub fn factor(&self, step_seed: u64, i: usize) -> f32 {
        if self.p <= 0.0 {
            1.0
        } else if dropout_keep(mask_seed(step_seed, self.seed), self.mask_index(i), self.p) {
            1.0 / (1.0 - self.p)
        } else {
            0.0
        }
    }
}

/// One fused Adam + weight-average update of the whole flat parameter block,
/// element `i` of every block:
///
/// ```text
/// clip  = clip_norm > 0 && |g| > clip_norm ? clip_norm / |g| : 1   (|g| = sqrt(norm_sq[0]))
/// g     = grad[i] * clip
/// m     = beta1 m + (1 - beta1) g;    v = beta2 v + (1 - beta2) g^2
/// p     = master[i] - lr * (m * bc1) / (sqrt(v * bc2) + eps)
/// master[i] = p;   weight[i] = p (bf16 on the GPU);   ema = ema_decay ema + (1 - ema_decay) p
/// ```
///
/// `bc1 = 1 / (1 - beta1^t)`, `bc2 = 1 / (1 - beta2^t)` are the bias corrections of
/// step `t` (1-based), computed once on the host. No weight decay (the AlphaFold2
/// recipe uses plain Adam).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate of this step.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// First-moment bias correction `1 / (1 - beta1^t)`.
    pub bc1: f32,
    /// Second-moment bias correction `1 / (1 - beta2^t)`.
    pub bc2: f32,
    /// Decay of the weight average (EMA).
    pub ema_decay: f32,
    /// Global gradient-norm clipping threshold (0 disables clipping).
    pub clip_norm: f32,
}

/// The optimizer's f32 state (class Stat), each exactly as long as the flat
/// weight block, in the same element order; and the squared global gradient
/// norm (one element).
#[derive(Clone, Copy, Debug)]
pub struct OptimizerState {
    /// f32 master weights.
    pub master: TensorId,
    /// Adam first moment.
    pub m: TensorId,
    /// Adam second moment.
    pub v: TensorId,
    /// Weight average (EMA of the master weights).
    pub ema: TensorId,
    /// `[1]`: sum of squares of the whole gradient block.
    pub norm_sq: TensorId,
}

/// splitmix64 finaliser: the counter-based hash behind dropout masks.
/// `kernels/common.cuh` holds the identical device version.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The seed of one op's mask in one step: the step seed mixed with the op's
/// site seed. `kernels/common.cuh` holds the identical device version.
#[inline]
pub fn mask_seed(step_seed: u64, site_seed: u64) -> u64 {
    mix64(step_seed ^ mix64(site_seed.wrapping_add(0xD1B5_4A32_D192_ED03)))
}

/// Whether mask element `idx` survives dropout with probability `p` under `seed`.
#[inline]
pub fn dropout_keep(seed: u64, idx: u64, p: f32) -> bool {
    let h = mix64(seed ^ mix64(idx.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    let u = (h >> 40) as f32 * (1.0 / 16_777_216.0);
    u >= p
}

/// The closed set of operations the model is built from. Every op works on
/// whole rows of its operands, so a caller holding a row range (DAP) calls the
/// same op on views of its shard.
pub trait Backend {
    /// A short name ("cpu-f32", "cuda-bf16 on NVIDIA H100 ...").
    fn name(&self) -> String;
    /// Declares a tensor of `len` elements; storage comes with [`Backend::materialize`].
    fn declare(&mut self, name: &str, len: usize, class: Class) -> TensorId;
    /// Declares a view of `len` elements at `offset` inside `parent` (a row range).
    fn view(&mut self, parent: TensorId, offset: usize, len: usize) -> Result<TensorId>;
    /// Gives every declared tensor storage: one contiguous block per class.
    fn materialize(&mut self) -> Result<()>;
    /// Number of elements of a tensor.
    fn len(&self, t: TensorId) -> usize;
    /// The declared name of a tensor.
    fn tensor_name(&self, t: TensorId) -> &str;
    /// Bytes held by each class's storage.
    fn arena_bytes(&self) -> Vec<(Class, usize)>;
    /// Copies host data into a tensor (not for use inside a step).
    fn write(&mut self, t: TensorId, data: &[f32]) -> Result<()>;
    /// Copies a tensor to the host (synchronizes).
    fn read(&mut self, t: TensorId) -> Result<Vec<f32>>;
    /// Sets every element of a tensor.
    fn fill(&mut self, t: TensorId, value: f32) -> Result<()>;
    /// Sets every element of every tensor of a class (one launch per arena): zeroing
    /// the flat gradient block costs one kernel, not one per parameter.
    fn fill_class(&mut self, class: Class, value: f32) -> Result<()>;
    /// Waits for all queued work.
    fn sync(&mut self) -> Result<()>;

    /// Strided batched GEMM, see [`Gemm`].
    fn gemm(&mut self, g: &Gemm) -> Result<()>;
    /// `C = act(A @ B + bias)`: a single GEMM (batch 1, beta 0) with the bias
    /// (length `n`) broadcast over rows. The CUDA backend fuses bias and
    /// activation into the cuBLASLt epilogue; the result equals
    /// [`Backend::gemm`] followed by [`Backend::bias_act_fwd`].
    fn gemm_bias_act(&mut self, g: &Gemm, bias: TensorId, act: Activation) -> Result<()> {
        self.gemm(g)?;
        let y = View {
            t: g.c.t,
            off: g.c.off,
            ld: g.c.ld,
            row_div: 1,
        };
        self.bias_act_fwd(g.m, g.n, y, bias, act)
    }
    /// LayerNorm over the last axis of `x [rows, cols]` (eps 1e-5): writes `y`,
    /// and per row `mean` and `rstd` (Stat).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        y: TensorId,
        mean: TensorId,
        rstd: TensorId,
    ) -> Result<()>;
    /// LayerNorm backward: writes (or adds to, with `accumulate`) `dx` (Activation,
    /// or Stat for f32 residual-stream gradients), adds to `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        x: TensorId,
        gamma: TensorId,
        mean: TensorId,
        rstd: TensorId,
        dy: TensorId,
        dx: TensorId,
        accumulate: bool,
        dgamma: TensorId,
        dbeta: TensorId,
    ) -> Result<()>;
    /// `y = act(y + bias)` in place on a `[rows, cols]` view.
    fn bias_act_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        bias: TensorId,
        act: Activation,
    ) -> Result<()>;
    /// Backward of [`Backend::bias_act_fwd`]: `dy` becomes the pre-activation gradient
    /// (in place; `y` is the saved output), and its column sums are added to `dbias`.
    fn bias_act_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        dy: View,
        dbias: TensorId,
        act: Activation,
    ) -> Result<()>;
    /// `out = a * sigmoid(g)` on `[rows, cols]` views.
    fn sigmoid_mul_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        out: View,
    ) -> Result<()>;
    /// Backward of [`Backend::sigmoid_mul_fwd`]: writes `da = dout * sigmoid(g)` (full
    /// rows, even where `a` broadcasts) and `dg = dout * a * s * (1 - s)`.
    #[allow(clippy::too_many_arguments)]
    fn sigmoid_mul_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        dout: View,
        da: View,
        dg: View,
    ) -> Result<()>;
    /// Fused gated attention with optional additive bias `[heads, len, len]` shared
    /// over the batch: `attn = softmax(q k^T / sqrt(d) + bias) v`, `out = attn * sigmoid(g)`,
    /// `lse [batch, heads, len]` (Stat) saved for the backward.
    ///
    /// `key_mask [batch, len]` (Stat, f32; 0 = masked) removes keys from the softmax, as
    /// a bias of −∞ would. A query whose keys are all masked gets `attn = out = 0` and
    /// `lse = 0` (never NaN), and its gradients are zero.
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        &mut self,
        s: AttnShape,
        qkvg: TensorId,
        bias: Option<TensorId>,
        key_mask: Option<TensorId>,
        attn: TensorId,
        out: TensorId,
        lse: TensorId,
    ) -> Result<()>;
    /// Attention backward: writes `dqkvg` (packed like `qkvg`), adds the bias
    /// gradient into `dbias` (Stat, summed over the batch). `key_mask` as in the forward.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &mut self,
        s: AttnShape,
        qkvg: TensorId,
        bias: Option<TensorId>,
        key_mask: Option<TensorId>,
        attn: TensorId,
        lse: TensorId,
        dout: TensorId,
        dqkvg: TensorId,
        dbias: Option<TensorId>,
    ) -> Result<()>;
    /// Softmax over the last axis of `[rows, cols]`.
    fn softmax_fwd(&mut self, rows: usize, cols: usize, x: TensorId, y: TensorId) -> Result<()>;
    /// Softmax backward from the saved output `y`.
    fn softmax_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: TensorId,
        dy: TensorId,
        dx: TensorId,
    ) -> Result<()>;
    /// Swaps the two middle axes: `y[a, c, b, d] (=|+=) x[a, b, c, d]`. Converts
    /// between classes (e.g. a Stat gradient into an Activation).
    fn transpose(
        &mut self,
        dims: [usize; 4],
        x: TensorId,
        y: TensorId,
        accumulate: bool,
    ) -> Result<()>;
    /// Sets the step seed every later dropout mask mixes with its op's site seed
    /// (see [`Dropout`]); 0 until set. On CUDA it lives in device memory, written
    /// in stream order: call it between launches or graph replays, never while
    /// capturing.
    fn set_dropout_seed(&mut self, seed: u64) -> Result<()>;
    /// `out = resid + dropout(x)`, all `[d0, d1, c]`.
    fn residual_dropout_fwd(
        &mut self,
        d: &Dropout,
        resid: TensorId,
        x: TensorId,
        out: TensorId,
    ) -> Result<()>;
    /// `dx = dropout(dout)` with the forward's mask (`dout` may be an f32 Stat tensor).
    fn dropout_bwd(&mut self, d: &Dropout, dout: TensorId, dx: TensorId) -> Result<()>;

    /// `x[r, c] *= scale[r]` in place on a dense `[rows, cols]` tensor, `scale` f32
    /// (Stat). Applies masks and per-row normalisations; it is its own backward
    /// (the gradient is scaled by the same rows).
    fn scale_rows(&mut self, rows: usize, cols: usize, x: TensorId, scale: TensorId) -> Result<()>;
    /// Elements each parameter is rounded up to in the flat weight and gradient
    /// blocks (padding is zero in the gradient block). The two blocks share one
    /// element layout: element `i` of one is element `i` of the other.
    fn param_align(&self) -> usize;
    /// Elements of a class's block (the flat weight block: [`Class::Weight`]).
    fn class_len(&self, class: Class) -> usize;
    /// `out[0] = Σ g²` over the whole flat gradient block, in one pass (f32 accumulation).
    fn grad_norm_sq(&mut self, out: TensorId) -> Result<()>;
    /// One fused Adam + weight-average step over the flat weight and gradient
    /// blocks (see [`AdamStep`]); reads the clipping norm from `st.norm_sq`, which
    /// [`Backend::grad_norm_sq`] wrote.
    fn adam_ema_step(&mut self, step: &AdamStep, st: &OptimizerState) -> Result<()>;
}
