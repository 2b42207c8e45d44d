//! Modules with explicit forward and backward passes, composed from backend ops.
//!
//! Each module declares its parameters (in the flat parameter block) and the
//! activations it saves (in the activation arena) when it is built, so a block's
//! whole memory is planned from its config before the first step.

use crate::backend::{Activation, AttnShape, Backend, Class, Gemm, MatRef, TensorId, View};
use crate::error::Result;
use rand::{Rng, SeedableRng};

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in ±1/sqrt(fan_in) (weights).
    FanIn(usize),
    /// All ones (LayerNorm gain).
    Ones,
    /// All zeros (biases, LayerNorm offset).
    Zeros,
}

/// A parameter: its compute-copy tensor and its gradient (views of the flat blocks).
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// The weight (class Weight).
    pub w: TensorId,
    /// Its gradient (class WeightGrad), accumulated by backward passes.
    pub g: TensorId,
}

/// One entry of the parameter table.
#[derive(Clone, Debug)]
pub struct ParamEntry {
    /// Dotted name, e.g. `msa_row.lin_qkvg.w`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Initialisation rule.
    pub init: Init,
    /// Tensors.
    pub param: Param,
}

/// Every parameter of a model, in declaration order (which is also their order
/// in the flat weight and gradient blocks).
#[derive(Clone, Debug, Default)]
pub struct ParamTable {
    /// The entries.
    pub entries: Vec<ParamEntry>,
}

impl ParamTable {
    /// Total number of parameter elements.
    pub fn numel(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }

    /// Initialises every parameter by its rule from a seed. With `perturb`, gains
    /// and biases get small random offsets too (tests, so no term is trivially zero).
    pub fn init<B: Backend>(&self, be: &mut B, seed: u64, perturb: bool) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for e in &self.entries {
            let n: usize = e.shape.iter().product();
            let v: Vec<f32> = match e.init {
                Init::FanIn(f) => {
                    let a = 1.0 / (f as f32).sqrt();
                    (0..n).map(|_| rng.random_range(-a..a)).collect()
                }
                Init::Ones => (0..n)
                    .map(|_| {
                        1.0 + if perturb {
                            rng.random_range(-0.2..0.2)
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                Init::Zeros => (0..n)
                    .map(|_| {
                        if perturb {
                            rng.random_range(-0.2..0.2)
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            };
            be.write(e.param.w, &v)?;
        }
        Ok(())
    }

    /// Sets every gradient to `value` (tests poison gradients with NaN).
    pub fn fill_grads<B: Backend>(&self, be: &mut B, value: f32) -> Result<()> {
        be.fill_class(Class::WeightGrad, value)
    }

    /// Zeroes the flat gradient block (one launch; every parameter of the backend).
    pub fn zero_grads<B: Backend>(&self, be: &mut B) -> Result<()> {
        be.fill_class(Class::WeightGrad, 0.0)
    }
}

/// Declares parameters and activations under a name prefix.
pub struct Builder<'a, B: Backend> {
    /// The backend tensors are declared on.
    pub be: &'a mut B,
    /// The parameter table being filled.
    pub params: &'a mut ParamTable,
    /// Current name prefix.
    pub prefix: String,
    /// While [`Builder::sharing`] runs: the parameters to hand out again, in
    /// declaration order, and how many were handed out so far.
    shared: Option<(Vec<ParamEntry>, usize)>,
    /// Activation and Stat tensors declared so far, in order, while recording
    /// ([`Builder::recording_tensors`]), or handed out again while reusing
    /// ([`Builder::reusing_tensors`]) with the count handed out.
    tensors: TensorMode,
}

/// What [`Builder::act`] and [`Builder::stat`] do.
#[derive(Default)]
enum TensorMode {
    /// Declare new tensors.
    #[default]
    Declare,
    /// Declare new tensors and remember them.
    Record(Vec<TensorId>),
    /// Hand out these tensors again, in order.
    Reuse(Vec<TensorId>, usize),
}

impl<'a, B: Backend> Builder<'a, B> {
    /// A builder with an empty prefix.
    pub fn new(be: &'a mut B, params: &'a mut ParamTable) -> Self {
        Self {
            be,
            params,
            prefix: String::new(),
            shared: None,
            tensors: TensorMode::Declare,
        }
    }

    /// Runs `f` and returns, besides its result, every Activation and Stat
    /// tensor it declared, in order (the workspace of a module, for
    /// [`Builder::reusing_tensors`]).
    pub fn recording_tensors<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> (R, Vec<TensorId>) {
        let saved = std::mem::replace(&mut self.tensors, TensorMode::Record(Vec::new()));
        let r = f(self);
        match std::mem::replace(&mut self.tensors, saved) {
            TensorMode::Record(list) => (r, list),
            _ => unreachable!("the recording mode is restored only here"),
        }
    }

    /// Runs `f` with tensor reuse: the Activation and Stat tensors `f` declares
    /// are, in order, those of `source` (recorded from an identical build), so
    /// two instances of a module share one workspace (activation
    /// recomputation: only one of them may hold live values at a time).
    /// Panics if `f` declares tensors that do not match `source` (a programming
    /// error: the two builds must be identical).
    pub fn reusing_tensors<R>(&mut self, source: &[TensorId], f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = std::mem::replace(&mut self.tensors, TensorMode::Reuse(source.to_vec(), 0));
        let r = f(self);
        match std::mem::replace(&mut self.tensors, saved) {
            TensorMode::Reuse(src, used) => assert_eq!(
                used,
                src.len(),
                "a reusing build declared {used} of {} tensors",
                src.len()
            ),
            _ => unreachable!("the reuse mode is restored only here"),
        }
        r
    }

    /// Declares (or, while reusing, hands out again) a tensor of a class.
    fn tensor(&mut self, name: &str, len: usize, class: Class) -> TensorId {
        let full = self.full(name);
        match &mut self.tensors {
            TensorMode::Declare => self.be.declare(&full, len, class),
            TensorMode::Record(list) => {
                let t = self.be.declare(&full, len, class);
                list.push(t);
                t
            }
            TensorMode::Reuse(src, used) => {
                let t = *src.get(*used).unwrap_or_else(|| {
                    panic!(
                        "reusing build declares {full} beyond its {} tensors",
                        src.len()
                    )
                });
                assert_eq!(
                    self.be.len(t),
                    len,
                    "reusing build: {full} has another length"
                );
                *used += 1;
                t
            }
        }
    }

    /// Runs `f` with parameter sharing: every parameter `f` declares is, in order,
    /// the parameter of `source` at the same position (same shape), instead of a
    /// new one. Building a second instance of a module from the entries the first
    /// one declared gives two instances with their own activations and one set of
    /// weights; their backward passes add into the same gradient tensors. Panics
    /// if `f` declares parameters that do not match `source` (a programming error:
    /// the two builds must be identical).
    pub fn sharing<R>(&mut self, source: &[ParamEntry], f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.shared.replace((source.to_vec(), 0));
        let r = f(self);
        let (src, used) = std::mem::replace(&mut self.shared, saved).expect("sharing state");
        assert_eq!(
            used,
            src.len(),
            "a shared build declared {used} of the {} source parameters",
            src.len()
        );
        r
    }

    /// Runs `f` with `name` appended to the prefix.
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.prefix.clone();
        self.prefix = if saved.is_empty() {
            name.to_string()
        } else {
            format!("{saved}.{name}")
        };
        let r = f(self);
        self.prefix = saved;
        r
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Declares a parameter and its gradient.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Param {
        let n = shape.iter().product();
        let full = self.full(name);
        if let Some((src, used)) = &mut self.shared {
            let e = src.get(*used).unwrap_or_else(|| {
                panic!(
                    "shared build declares {full} beyond its {} source parameters",
                    src.len()
                )
            });
            assert_eq!(
                e.shape, shape,
                "shared build: {full} has shape {shape:?}, its source {} has {:?}",
                e.name, e.shape
            );
            *used += 1;
            return e.param;
        }
        let w = self.be.declare(&full, n, Class::Weight);
        let g = self
            .be
            .declare(&format!("{full}.grad"), n, Class::WeightGrad);
        let param = Param { w, g };
        self.params.entries.push(ParamEntry {
            name: full,
            shape: shape.to_vec(),
            init,
            param,
        });
        param
    }

    /// Declares an activation (or activation-gradient) tensor.
    pub fn act(&mut self, name: &str, len: usize) -> TensorId {
        self.tensor(name, len, Class::Activation)
    }

    /// Declares an f32 statistics tensor.
    pub fn stat(&mut self, name: &str, len: usize) -> TensorId {
        self.tensor(name, len, Class::Stat)
    }
}

/// `y = act(x @ w + b)` with `w [d_in, d_out]`; the bias may cover only the
/// columns `bias_off .. bias_off + bias_width` (e.g. the gate part of a packed
/// q|k|v|g projection, where q, k and v have no bias).
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Weight `[d_in, d_out]`.
    pub w: Param,
    /// Bias and the output columns it covers.
    pub bias: Option<(Param, usize, usize)>,
    /// Fused activation.
    pub act: Activation,
}

impl Linear {
    /// Declares a linear layer with a full bias or none.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        act: Activation,
    ) -> Self {
        b.scope(name, |b| {
            let w = b.param("w", &[d_in, d_out], Init::FanIn(d_in));
            let bias = bias.then(|| (b.param("b", &[d_out], Init::Zeros), 0, d_out));
            Self {
                d_in,
                d_out,
                w,
                bias,
                act,
            }
        })
    }

    /// Declares a linear layer whose bias covers only some output columns.
    pub fn with_partial_bias<B: Backend>(
        b: &mut Builder<B>,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias_off: usize,
        bias_width: usize,
    ) -> Self {
        b.scope(name, |b| {
            let w = b.param("w", &[d_in, d_out], Init::FanIn(d_in));
            let bp = b.param("b", &[bias_width], Init::Zeros);
            Self {
                d_in,
                d_out,
                w,
                bias: Some((bp, bias_off, bias_width)),
                act: Activation::None,
            }
        })
    }

    /// Forward over `rows` rows: `y = act(x @ w + b)`.
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        rows: usize,
        x: TensorId,
        y: TensorId,
    ) -> Result<()> {
        let g = Gemm {
            m: rows,
            n: self.d_out,
            k: self.d_in,
            batch: 1,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            a: MatRef::new(x, self.d_in),
            b: MatRef::new(self.w.w, self.d_out),
            c: MatRef::new(y, self.d_out),
        };
        match self.bias {
            // A bias over every column fuses into the GEMM's epilogue.
            Some((bp, 0, width)) if width == self.d_out => be.gemm_bias_act(&g, bp.w, self.act),
            Some((bp, off, width)) => {
                be.gemm(&g)?;
                be.bias_act_fwd(rows, width, View::cols(y, self.d_out, off), bp.w, self.act)
            }
            None => {
                debug_assert!(
                    self.act == Activation::None,
                    "activation without bias is not fused"
                );
                be.gemm(&g)
            }
        }
    }

    /// Backward: turns `dy` into the pre-activation gradient (in place, only with
    /// an activation), adds `dW` and `db` to the gradients, and writes (or adds
    /// to, with `accumulate`) `dx`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        rows: usize,
        x: TensorId,
        y: TensorId,
        dy: TensorId,
        dx: Option<TensorId>,
        accumulate: bool,
    ) -> Result<()> {
        if let Some((bp, off, width)) = self.bias {
            be.bias_act_bwd(
                rows,
                width,
                View::cols(y, self.d_out, off),
                View::cols(dy, self.d_out, off),
                bp.g,
                self.act,
            )?;
        }
        be.gemm(&Gemm {
            m: self.d_in,
            n: self.d_out,
            k: rows,
            batch: 1,
            trans_a: true,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
            a: MatRef::new(x, self.d_in),
            b: MatRef::new(dy, self.d_out),
            c: MatRef::new(self.w.g, self.d_out),
        })?;
        if let Some(dx) = dx {
            be.gemm(&Gemm {
                m: rows,
                n: self.d_in,
                k: self.d_out,
                batch: 1,
                trans_a: false,
                trans_b: true,
                alpha: 1.0,
                beta: if accumulate { 1.0 } else { 0.0 },
                a: MatRef::new(dy, self.d_out),
                b: MatRef::new(self.w.w, self.d_out),
                c: MatRef::new(dx, self.d_in),
            })?;
        }
        Ok(())
    }
}

/// LayerNorm over the last axis with learned gain and offset; saves per-row statistics.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    /// Rows normalised per call.
    pub rows: usize,
    /// Normalised width.
    pub cols: usize,
    /// Gain.
    pub gamma: Param,
    /// Offset.
    pub beta: Param,
    /// Saved row means (Stat).
    pub mean: TensorId,
    /// Saved row 1/std (Stat).
    pub rstd: TensorId,
}

impl LayerNorm {
    /// Declares a LayerNorm over `rows` rows of `cols`.
    pub fn new<B: Backend>(b: &mut Builder<B>, name: &str, rows: usize, cols: usize) -> Self {
        b.scope(name, |b| Self {
            rows,
            cols,
            gamma: b.param("gamma", &[cols], Init::Ones),
            beta: b.param("beta", &[cols], Init::Zeros),
            mean: b.stat("mean", rows),
            rstd: b.stat("rstd", rows),
        })
    }

    /// `y = LN(x)`.
    pub fn forward<B: Backend>(&self, be: &mut B, x: TensorId, y: TensorId) -> Result<()> {
        be.layer_norm_fwd(
            self.rows,
            self.cols,
            x,
            self.gamma.w,
            self.beta.w,
            y,
            self.mean,
            self.rstd,
        )
    }

    /// Gradients from `dy`; `dx` written or accumulated.
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        x: TensorId,
        dy: TensorId,
        dx: TensorId,
        accumulate: bool,
    ) -> Result<()> {
        be.layer_norm_bwd(
            self.rows,
            self.cols,
            x,
            self.gamma.w,
            self.mean,
            self.rstd,
            dy,
            dx,
            accumulate,
            self.gamma.g,
            self.beta.g,
        )
    }
}

/// Where a gated attention's additive pair bias comes from.
#[derive(Clone, Copy, Debug)]
pub enum PairBias {
    /// No bias (MSA column attention).
    None,
    /// From the module's own normalised input (triangle attention).
    OwnInput {
        /// `c_in -> heads`, no bias.
        lin: Linear,
        /// `[len*len, heads]` projection output.
        lin_out: TensorId,
    },
    /// From a separate pair tensor with its own LayerNorm (MSA row attention).
    Pair {
        /// LayerNorm of the pair tensor.
        ln: LayerNorm,
        /// Normalised pair tensor.
        z_ln: TensorId,
        /// `c_z -> heads`, no bias.
        lin: Linear,
        /// `[len*len, heads]` projection output.
        lin_out: TensorId,
        /// Gradient of the normalised pair tensor.
        d_z_ln: TensorId,
    },
}

/// Gated multi-head attention over `batch` sequences of `len` positions, with
/// LayerNorm in front, a packed q|k|v|g projection (bias on g only), an optional
/// pair bias and an output projection with bias (AF2 Algorithms 7, 8, 13, 14).
pub struct GatedAttention {
    /// Shape of the attention.
    pub shape: AttnShape,
    /// Input width.
    pub c_in: usize,
    ln: LayerNorm,
    lin_qkvg: Linear,
    lin_o: Linear,
    bias_src: PairBias,
    x_ln: TensorId,
    qkvg: TensorId,
    bias: Option<TensorId>,
    attn: TensorId,
    out: TensorId,
    lse: TensorId,
    d_qkvg: TensorId,
    d_out: TensorId,
    d_x_ln: TensorId,
    d_bias: Option<TensorId>,
    d_bias_lin: Option<TensorId>,
}

/// Which pair bias a [`GatedAttention`] is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasKind {
    /// None.
    None,
    /// From its own input.
    OwnInput,
    /// From a pair tensor of the given width.
    Pair(usize),
}

impl GatedAttention {
    /// Declares the module.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        name: &str,
        shape: AttnShape,
        c_in: usize,
        bias: BiasKind,
    ) -> Self {
        b.scope(name, |b| {
            let (rows, w, l, h) = (shape.rows(), shape.width(), shape.len, shape.heads);
            let ln = LayerNorm::new(b, "ln", rows, c_in);
            let lin_qkvg = Linear::with_partial_bias(b, "lin_qkvg", c_in, 4 * w, 3 * w, w);
            let lin_o = Linear::new(b, "lin_o", w, c_in, true, Activation::None);
            let bias_src = match bias {
                BiasKind::None => PairBias::None,
                BiasKind::OwnInput => PairBias::OwnInput {
                    lin: Linear::new(b, "lin_bias", c_in, h, false, Activation::None),
                    lin_out: b.act("bias_lin", l * l * h),
                },
                BiasKind::Pair(c_z) => PairBias::Pair {
                    ln: LayerNorm::new(b, "ln_z", l * l, c_z),
                    z_ln: b.act("z_ln", l * l * c_z),
                    lin: Linear::new(b, "lin_bias", c_z, h, false, Activation::None),
                    lin_out: b.act("bias_lin", l * l * h),
                    d_z_ln: b.act("d_z_ln", l * l * c_z),
                },
            };
            let has_bias = bias != BiasKind::None;
            Self {
                shape,
                c_in,
                ln,
                lin_qkvg,
                lin_o,
                bias_src,
                x_ln: b.act("x_ln", rows * c_in),
                qkvg: b.act("qkvg", rows * 4 * w),
                bias: has_bias.then(|| b.act("bias", h * l * l)),
                attn: b.act("attn", rows * w),
                out: b.act("out", rows * w),
                lse: b.stat("lse", shape.batch * h * l),
                d_qkvg: b.act("d_qkvg", rows * 4 * w),
                d_out: b.act("d_out", rows * w),
                d_x_ln: b.act("d_x_ln", rows * c_in),
                d_bias: has_bias.then(|| b.stat("d_bias", h * l * l)),
                d_bias_lin: has_bias.then(|| b.act("d_bias_lin", l * l * h)),
            }
        })
    }

    /// `proj = attention(LN(x))`, `x [batch*len, c_in]`, `pair [len*len, c_z]` for a pair bias,
    /// `key_mask [batch, len]` (Stat, 0 = masked key) for masked attention.
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        x: TensorId,
        pair: Option<TensorId>,
        key_mask: Option<TensorId>,
        proj: TensorId,
    ) -> Result<()> {
        let (rows, l, h) = (self.shape.rows(), self.shape.len, self.shape.heads);
        self.ln.forward(be, x, self.x_ln)?;
        self.lin_qkvg.forward(be, rows, self.x_ln, self.qkvg)?;
        match (&self.bias_src, self.bias) {
            (PairBias::OwnInput { lin, lin_out }, Some(bias)) => {
                lin.forward(be, l * l, self.x_ln, *lin_out)?;
                be.transpose([1, l * l, h, 1], *lin_out, bias, false)?;
            }
            (
                PairBias::Pair {
                    ln,
                    z_ln,
                    lin,
                    lin_out,
                    ..
                },
                Some(bias),
            ) => {
                let pair = pair.expect("a pair-biased attention is given the pair tensor");
                ln.forward(be, pair, *z_ln)?;
                lin.forward(be, l * l, *z_ln, *lin_out)?;
                be.transpose([1, l * l, h, 1], *lin_out, bias, false)?;
            }
            _ => {}
        }
        be.attention_fwd(
            self.shape, self.qkvg, self.bias, key_mask, self.attn, self.out, self.lse,
        )?;
        self.lin_o.forward(be, rows, self.out, proj)
    }

    /// Backward from `d_proj` (read only): writes or accumulates `dx`, and adds
    /// the pair tensor's gradient into `d_pair`. `key_mask` as in the forward.
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        x: TensorId,
        pair: Option<TensorId>,
        key_mask: Option<TensorId>,
        proj: TensorId,
        d_proj: TensorId,
        dx: TensorId,
        accumulate: bool,
        d_pair: Option<TensorId>,
    ) -> Result<()> {
        let (rows, l, h) = (self.shape.rows(), self.shape.len, self.shape.heads);
        self.lin_o
            .backward(be, rows, self.out, proj, d_proj, Some(self.d_out), false)?;
        if let Some(db) = self.d_bias {
            be.fill(db, 0.0)?;
        }
        be.attention_bwd(
            self.shape,
            self.qkvg,
            self.bias,
            key_mask,
            self.attn,
            self.lse,
            self.d_out,
            self.d_qkvg,
            self.d_bias,
        )?;
        self.lin_qkvg.backward(
            be,
            rows,
            self.x_ln,
            self.qkvg,
            self.d_qkvg,
            Some(self.d_x_ln),
            false,
        )?;
        if let (Some(db), Some(dbl)) = (self.d_bias, self.d_bias_lin) {
            be.transpose([1, h, l * l, 1], db, dbl, false)?;
            match &self.bias_src {
                PairBias::OwnInput { lin, lin_out } => {
                    lin.backward(be, l * l, self.x_ln, *lin_out, dbl, Some(self.d_x_ln), true)?;
                }
                PairBias::Pair {
                    ln,
                    z_ln,
                    lin,
                    lin_out,
                    d_z_ln,
                } => {
                    lin.backward(be, l * l, *z_ln, *lin_out, dbl, Some(*d_z_ln), false)?;
                    let pair = pair.expect("a pair-biased attention is given the pair tensor");
                    let d_pair =
                        d_pair.expect("a pair-biased attention is given the pair gradient");
                    ln.backward(be, pair, *d_z_ln, d_pair, true)?;
                }
                PairBias::None => {}
            }
        }
        self.ln.backward(be, x, self.d_x_ln, dx, accumulate)
    }
}

/// LayerNorm, `c -> factor*c` with ReLU, `factor*c -> c` (AF2 Algorithms 9, 15).
pub struct Transition {
    rows: usize,
    ln: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    x_ln: TensorId,
    hidden: TensorId,
    d_hidden: TensorId,
    d_x_ln: TensorId,
}

impl Transition {
    /// Declares a transition over `rows` rows of width `c`.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        name: &str,
        rows: usize,
        c: usize,
        factor: usize,
    ) -> Self {
        b.scope(name, |b| Self {
            rows,
            ln: LayerNorm::new(b, "ln", rows, c),
            lin1: Linear::new(b, "lin1", c, factor * c, true, Activation::Relu),
            lin2: Linear::new(b, "lin2", factor * c, c, true, Activation::None),
            x_ln: b.act("x_ln", rows * c),
            hidden: b.act("hidden", rows * factor * c),
            d_hidden: b.act("d_hidden", rows * factor * c),
            d_x_ln: b.act("d_x_ln", rows * c),
        })
    }

    /// `proj = transition(x)`.
    pub fn forward<B: Backend>(&self, be: &mut B, x: TensorId, proj: TensorId) -> Result<()> {
        self.ln.forward(be, x, self.x_ln)?;
        self.lin1.forward(be, self.rows, self.x_ln, self.hidden)?;
        self.lin2.forward(be, self.rows, self.hidden, proj)
    }

    /// Backward from `d_proj`, adding into `dx`.
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        x: TensorId,
        proj: TensorId,
        d_proj: TensorId,
        dx: TensorId,
    ) -> Result<()> {
        self.lin2.backward(
            be,
            self.rows,
            self.hidden,
            proj,
            d_proj,
            Some(self.d_hidden),
            false,
        )?;
        self.lin1.backward(
            be,
            self.rows,
            self.x_ln,
            self.hidden,
            self.d_hidden,
            Some(self.d_x_ln),
            false,
        )?;
        self.ln.backward(be, x, self.d_x_ln, dx, true)
    }
}

/// The mask of an [`OuterProductMean`]: the MSA mask and the per-pair normalisation.
#[derive(Clone, Copy, Debug)]
pub struct OpmMask {
    /// MSA mask `[s * r]` (Stat, 0 or 1).
    pub msa: TensorId,
    /// `[r * r]` (Stat): `1 / (1e-3 + Σ_s mask_si mask_sj)`, see [`opm_inv_norm`].
    pub inv_norm: TensorId,
}

/// The outer product mean's per-pair normalisation from an MSA mask `[s, r]`:
/// `out[i * r + j] = 1 / (1e-3 + Σ_s mask[s, i] mask[s, j])`.
pub fn opm_inv_norm(msa_mask: &[f32], n_seq: usize, n_res: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n_res * n_res];
    for (ij, o) in out.iter_mut().enumerate() {
        let (i, j) = (ij / n_res, ij % n_res);
        let count: f64 = (0..n_seq)
            .map(|s| (msa_mask[s * n_res + i] * msa_mask[s * n_res + j]) as f64)
            .sum();
        *o = (1.0 / (1e-3 + count)) as f32;
    }
    out
}

/// Outer product mean (AF2 Algorithm 10): MSA `[s, r, c_m]` to a pair update `[r, r, c_z]`.
pub struct OuterProductMean {
    n_seq: usize,
    n_res: usize,
    c: usize,
    ln: LayerNorm,
    lin_a: Linear,
    lin_b: Linear,
    lin_o: Linear,
    x_ln: TensorId,
    a: TensorId,
    b: TensorId,
    outer: TensorId,
    outer_t: TensorId,
    d_outer_t: TensorId,
    d_outer: TensorId,
    d_a: TensorId,
    d_b: TensorId,
    d_x_ln: TensorId,
}

impl OuterProductMean {
    /// Declares the module.
    pub fn new<B: Backend>(
        bd: &mut Builder<B>,
        name: &str,
        n_seq: usize,
        n_res: usize,
        c_m: usize,
        c: usize,
        c_z: usize,
    ) -> Self {
        bd.scope(name, |bd| {
            let rows = n_seq * n_res;
            let outer = n_res * c * n_res * c;
            Self {
                n_seq,
                n_res,
                c,
                ln: LayerNorm::new(bd, "ln", rows, c_m),
                lin_a: Linear::new(bd, "lin_a", c_m, c, true, Activation::None),
                lin_b: Linear::new(bd, "lin_b", c_m, c, true, Activation::None),
                lin_o: Linear::new(bd, "lin_o", c * c, c_z, true, Activation::None),
                x_ln: bd.act("x_ln", rows * c_m),
                a: bd.act("a", rows * c),
                b: bd.act("b", rows * c),
                outer: bd.act("outer", outer),
                outer_t: bd.act("outer_t", outer),
                d_outer_t: bd.act("d_outer_t", outer),
                d_outer: bd.act("d_outer", outer),
                d_a: bd.act("d_a", rows * c),
                d_b: bd.act("d_b", rows * c),
                d_x_ln: bd.act("d_x_ln", rows * c_m),
            }
        })
    }

    /// The GEMM scale: the mean's 1/(s + 1e-3) without a mask; 1 with one (the
    /// per-pair normalisation follows as a row scale).
    fn alpha(&self, mask: Option<OpmMask>) -> f32 {
        match mask {
            Some(_) => 1.0,
            None => 1.0 / (self.n_seq as f32 + 1e-3),
        }
    }

    /// `proj [r*r, c_z] = Linear(mean_s a_s ⊗ b_s)`; with a mask, `a` and `b` are
    /// masked and pair (i, j) is divided by `1e-3 + Σ_s mask_si mask_sj` (Alg. 10).
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        m: TensorId,
        mask: Option<OpmMask>,
        proj: TensorId,
    ) -> Result<()> {
        let (s, r, c) = (self.n_seq, self.n_res, self.c);
        self.ln.forward(be, m, self.x_ln)?;
        self.lin_a.forward(be, s * r, self.x_ln, self.a)?;
        self.lin_b.forward(be, s * r, self.x_ln, self.b)?;
        if let Some(mk) = mask {
            be.scale_rows(s * r, c, self.a, mk.msa)?;
            be.scale_rows(s * r, c, self.b, mk.msa)?;
        }
        be.gemm(&Gemm {
            m: r * c,
            n: r * c,
            k: s,
            batch: 1,
            trans_a: true,
            trans_b: false,
            alpha: self.alpha(mask),
            beta: 0.0,
            a: MatRef::new(self.a, r * c),
            b: MatRef::new(self.b, r * c),
            c: MatRef::new(self.outer, r * c),
        })?;
        be.transpose([r, c, r, c], self.outer, self.outer_t, false)?;
        if let Some(mk) = mask {
            be.scale_rows(r * r, c * c, self.outer_t, mk.inv_norm)?;
        }
        self.lin_o.forward(be, r * r, self.outer_t, proj)
    }

    /// Backward from `d_proj`, adding into `dm`; `mask` as in the forward.
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        m: TensorId,
        mask: Option<OpmMask>,
        proj: TensorId,
        d_proj: TensorId,
        dm: TensorId,
    ) -> Result<()> {
        let (s, r, c) = (self.n_seq, self.n_res, self.c);
        self.lin_o.backward(
            be,
            r * r,
            self.outer_t,
            proj,
            d_proj,
            Some(self.d_outer_t),
            false,
        )?;
        if let Some(mk) = mask {
            be.scale_rows(r * r, c * c, self.d_outer_t, mk.inv_norm)?;
        }
        be.transpose([r, r, c, c], self.d_outer_t, self.d_outer, false)?;
        be.gemm(&Gemm {
            m: s,
            n: r * c,
            k: r * c,
            batch: 1,
            trans_a: false,
            trans_b: true,
            alpha: self.alpha(mask),
            beta: 0.0,
            a: MatRef::new(self.b, r * c),
            b: MatRef::new(self.d_outer, r * c),
            c: MatRef::new(self.d_a, r * c),
        })?;
        be.gemm(&Gemm {
            m: s,
            n: r * c,
            k: r * c,
            batch: 1,
            trans_a: false,
            trans_b: false,
            alpha: self.alpha(mask),
            beta: 0.0,
            a: MatRef::new(self.a, r * c),
            b: MatRef::new(self.d_outer, r * c),
            c: MatRef::new(self.d_b, r * c),
        })?;
        if let Some(mk) = mask {
            be.scale_rows(s * r, c, self.d_a, mk.msa)?;
            be.scale_rows(s * r, c, self.d_b, mk.msa)?;
        }
        self.lin_a.backward(
            be,
            s * r,
            self.x_ln,
            self.a,
            self.d_a,
            Some(self.d_x_ln),
            false,
        )?;
        self.lin_b.backward(
            be,
            s * r,
            self.x_ln,
            self.b,
            self.d_b,
            Some(self.d_x_ln),
            true,
        )?;
        self.ln.backward(be, m, self.d_x_ln, dm, true)
    }
}

/// Which edges a triangle multiplicative update combines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriangleDirection {
    /// `x_ij = sum_k a_ik b_jk` (AF2 Algorithm 11).
    Outgoing,
    /// `x_ij = sum_k a_ki b_kj` (AF2 Algorithm 12).
    Incoming,
}

/// Triangle multiplicative update. One packed projection `c_z -> [a_p|a_g|b_p|b_g|g]`,
/// the N³ contraction as one batched GEMM over channels.
pub struct TriangleMultiplication {
    dir: TriangleDirection,
    n: usize,
    c: usize,
    c_z: usize,
    ln_in: LayerNorm,
    lin_p: Linear,
    ln_out: LayerNorm,
    lin_o: Linear,
    z_ln: TensorId,
    p: TensorId,
    a: TensorId,
    b: TensorId,
    a_t: TensorId,
    b_t: TensorId,
    x_t: TensorId,
    x: TensorId,
    x_ln: TensorId,
    y: TensorId,
    d_y: TensorId,
    d_x_ln: TensorId,
    d_x: TensorId,
    d_x_t: TensorId,
    d_a_t: TensorId,
    d_b_t: TensorId,
    d_a: TensorId,
    d_b: TensorId,
    d_p: TensorId,
    d_z_ln: TensorId,
}

impl TriangleMultiplication {
    /// Declares the module over a `[n, n, c_z]` pair tensor with `c` hidden channels.
    pub fn new<B: Backend>(
        bd: &mut Builder<B>,
        name: &str,
        dir: TriangleDirection,
        n: usize,
        c_z: usize,
        c: usize,
    ) -> Self {
        bd.scope(name, |bd| {
            let (nn, pw) = (n * n, 4 * c + c_z);
            Self {
                dir,
                n,
                c,
                c_z,
                ln_in: LayerNorm::new(bd, "ln_in", nn, c_z),
                lin_p: Linear::new(bd, "lin_p", c_z, pw, true, Activation::None),
                ln_out: LayerNorm::new(bd, "ln_out", nn, c),
                lin_o: Linear::new(bd, "lin_o", c, c_z, true, Activation::None),
                z_ln: bd.act("z_ln", nn * c_z),
                p: bd.act("p", nn * pw),
                a: bd.act("a", nn * c),
                b: bd.act("b", nn * c),
                a_t: bd.act("a_t", nn * c),
                b_t: bd.act("b_t", nn * c),
                x_t: bd.act("x_t", nn * c),
                x: bd.act("x", nn * c),
                x_ln: bd.act("x_ln", nn * c),
                y: bd.act("y", nn * c_z),
                d_y: bd.act("d_y", nn * c_z),
                d_x_ln: bd.act("d_x_ln", nn * c),
                d_x: bd.act("d_x", nn * c),
                d_x_t: bd.act("d_x_t", nn * c),
                d_a_t: bd.act("d_a_t", nn * c),
                d_b_t: bd.act("d_b_t", nn * c),
                d_a: bd.act("d_a", nn * c),
                d_b: bd.act("d_b", nn * c),
                d_p: bd.act("d_p", nn * pw),
                d_z_ln: bd.act("d_z_ln", nn * c_z),
            }
        })
    }

    fn pw(&self) -> usize {
        4 * self.c + self.c_z
    }

    /// The per-channel `[n, n]` contraction `x_t = f(a_t, b_t)` as one batched GEMM.
    #[allow(clippy::too_many_arguments)]
    fn contract<B: Backend>(
        &self,
        be: &mut B,
        a: TensorId,
        ta: bool,
        b: TensorId,
        tb: bool,
        c: TensorId,
    ) -> Result<()> {
        let n = self.n;
        be.gemm(&Gemm {
            m: n,
            n,
            k: n,
            batch: self.c,
            trans_a: ta,
            trans_b: tb,
            alpha: 1.0,
            beta: 0.0,
            a: MatRef::new(a, n).batched(n * n),
            b: MatRef::new(b, n).batched(n * n),
            c: MatRef::new(c, n).batched(n * n),
        })
    }

    /// `proj [n*n, c_z]` from `z [n*n, c_z]`; `mask [n*n]` (Stat) zeroes the
    /// gated projections `a`, `b` of masked pairs (Alg. 11/12).
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        z: TensorId,
        mask: Option<TensorId>,
        proj: TensorId,
    ) -> Result<()> {
        let (nn, c, pw) = (self.n * self.n, self.c, self.pw());
        self.ln_in.forward(be, z, self.z_ln)?;
        self.lin_p.forward(be, nn, self.z_ln, self.p)?;
        be.sigmoid_mul_fwd(
            nn,
            c,
            View::cols(self.p, pw, 0),
            View::cols(self.p, pw, c),
            View::dense(self.a, c),
        )?;
        be.sigmoid_mul_fwd(
            nn,
            c,
            View::cols(self.p, pw, 2 * c),
            View::cols(self.p, pw, 3 * c),
            View::dense(self.b, c),
        )?;
        if let Some(mk) = mask {
            be.scale_rows(nn, c, self.a, mk)?;
            be.scale_rows(nn, c, self.b, mk)?;
        }
        be.transpose([1, nn, c, 1], self.a, self.a_t, false)?;
        be.transpose([1, nn, c, 1], self.b, self.b_t, false)?;
        match self.dir {
            TriangleDirection::Outgoing => {
                self.contract(be, self.a_t, false, self.b_t, true, self.x_t)?
            }
            TriangleDirection::Incoming => {
                self.contract(be, self.a_t, true, self.b_t, false, self.x_t)?
            }
        }
        be.transpose([1, c, nn, 1], self.x_t, self.x, false)?;
        self.ln_out.forward(be, self.x, self.x_ln)?;
        self.lin_o.forward(be, nn, self.x_ln, self.y)?;
        be.sigmoid_mul_fwd(
            nn,
            self.c_z,
            View::dense(self.y, self.c_z),
            View::cols(self.p, pw, 4 * c),
            View::dense(proj, self.c_z),
        )
    }

    /// Backward from `d_proj`, adding into `dz`; `mask` as in the forward.
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        z: TensorId,
        mask: Option<TensorId>,
        d_proj: TensorId,
        dz: TensorId,
    ) -> Result<()> {
        let (nn, c, pw, cz) = (self.n * self.n, self.c, self.pw(), self.c_z);
        be.sigmoid_mul_bwd(
            nn,
            cz,
            View::dense(self.y, cz),
            View::cols(self.p, pw, 4 * c),
            View::dense(d_proj, cz),
            View::dense(self.d_y, cz),
            View::cols(self.d_p, pw, 4 * c),
        )?;
        self.lin_o.backward(
            be,
            nn,
            self.x_ln,
            self.y,
            self.d_y,
            Some(self.d_x_ln),
            false,
        )?;
        self.ln_out
            .backward(be, self.x, self.d_x_ln, self.d_x, false)?;
        be.transpose([1, nn, c, 1], self.d_x, self.d_x_t, false)?;
        match self.dir {
            TriangleDirection::Outgoing => {
                self.contract(be, self.d_x_t, false, self.b_t, false, self.d_a_t)?;
                self.contract(be, self.d_x_t, true, self.a_t, false, self.d_b_t)?;
            }
            TriangleDirection::Incoming => {
                self.contract(be, self.b_t, false, self.d_x_t, true, self.d_a_t)?;
                self.contract(be, self.a_t, false, self.d_x_t, false, self.d_b_t)?;
            }
        }
        be.transpose([1, c, nn, 1], self.d_a_t, self.d_a, false)?;
        be.transpose([1, c, nn, 1], self.d_b_t, self.d_b, false)?;
        if let Some(mk) = mask {
            be.scale_rows(nn, c, self.d_a, mk)?;
            be.scale_rows(nn, c, self.d_b, mk)?;
        }
        be.sigmoid_mul_bwd(
            nn,
            c,
            View::cols(self.p, pw, 0),
            View::cols(self.p, pw, c),
            View::dense(self.d_a, c),
            View::cols(self.d_p, pw, 0),
            View::cols(self.d_p, pw, c),
        )?;
        be.sigmoid_mul_bwd(
            nn,
            c,
            View::cols(self.p, pw, 2 * c),
            View::cols(self.p, pw, 3 * c),
            View::dense(self.d_b, c),
            View::cols(self.d_p, pw, 2 * c),
            View::cols(self.d_p, pw, 3 * c),
        )?;
        self.lin_p.backward(
            be,
            nn,
            self.z_ln,
            self.p,
            self.d_p,
            Some(self.d_z_ln),
            false,
        )?;
        self.ln_in.backward(be, z, self.d_z_ln, dz, true)
    }
}

/// Global column attention (AF2 Algorithm 19) on the transposed extra MSA
/// `[r, s, c]`: one mean query per column and head, a single shared key/value head.
pub struct GlobalColumnAttention {
    r: usize,
    s: usize,
    c_in: usize,
    heads: usize,
    d: usize,
    ln: LayerNorm,
    lin_q: Linear,
    lin_kvg: Linear,
    lin_o: Linear,
    ones: TensorId,
    x_ln: TensorId,
    x_mean: TensorId,
    q: TensorId,
    kvg: TensorId,
    logits: TensorId,
    probs: TensorId,
    o: TensorId,
    gated: TensorId,
    d_gated: TensorId,
    d_full: TensorId,
    d_o: TensorId,
    d_probs: TensorId,
    d_logits: TensorId,
    d_q: TensorId,
    d_kvg: TensorId,
    d_x_mean: TensorId,
    d_x_ln: TensorId,
}

impl GlobalColumnAttention {
    /// Declares the module over `r` columns of `s` sequences of width `c_in`.
    pub fn new<B: Backend>(
        bd: &mut Builder<B>,
        name: &str,
        r: usize,
        s: usize,
        c_in: usize,
        heads: usize,
        d: usize,
    ) -> Self {
        bd.scope(name, |bd| {
            let (rows, w, kw) = (r * s, heads * d, 2 * d + heads * d);
            Self {
                r,
                s,
                c_in,
                heads,
                d,
                ln: LayerNorm::new(bd, "ln", rows, c_in),
                lin_q: Linear::new(bd, "lin_q", c_in, w, false, Activation::None),
                lin_kvg: Linear::with_partial_bias(bd, "lin_kvg", c_in, kw, 2 * d, w),
                lin_o: Linear::new(bd, "lin_o", w, c_in, true, Activation::None),
                ones: bd.act("ones", s),
                x_ln: bd.act("x_ln", rows * c_in),
                x_mean: bd.act("x_mean", r * c_in),
                q: bd.act("q", r * w),
                kvg: bd.act("kvg", rows * kw),
                logits: bd.act("logits", r * heads * s),
                probs: bd.act("probs", r * heads * s),
                o: bd.act("o", r * w),
                gated: bd.act("gated", rows * w),
                d_gated: bd.act("d_gated", rows * w),
                d_full: bd.act("d_full", rows * w),
                d_o: bd.act("d_o", r * w),
                d_probs: bd.act("d_probs", r * heads * s),
                d_logits: bd.act("d_logits", r * heads * s),
                d_q: bd.act("d_q", r * w),
                d_kvg: bd.act("d_kvg", rows * kw),
                d_x_mean: bd.act("d_x_mean", r * c_in),
                d_x_ln: bd.act("d_x_ln", rows * c_in),
            }
        })
    }

    /// Writes the module's constants (a vector of ones); call once after materialize.
    pub fn init_constants<B: Backend>(&self, be: &mut B) -> Result<()> {
        be.fill(self.ones, 1.0)
    }

    fn kw(&self) -> usize {
        2 * self.d + self.heads * self.d
    }

    #[allow(clippy::too_many_arguments)]
    fn bgemm<B: Backend>(
        &self,
        be: &mut B,
        m: usize,
        n: usize,
        k: usize,
        (ta, tb): (bool, bool),
        alpha: f32,
        beta: f32,
        a: MatRef,
        b: MatRef,
        c: MatRef,
    ) -> Result<()> {
        be.gemm(&Gemm {
            m,
            n,
            k,
            batch: self.r,
            trans_a: ta,
            trans_b: tb,
            alpha,
            beta,
            a,
            b,
            c,
        })
    }

    /// `proj [r*s, c_in]` from `x [r*s, c_in]`.
    pub fn forward<B: Backend>(&self, be: &mut B, x: TensorId, proj: TensorId) -> Result<()> {
        let (r, s, c, h, d, kw) = (self.r, self.s, self.c_in, self.heads, self.d, self.kw());
        let w = h * d;
        self.ln.forward(be, x, self.x_ln)?;
        // Column means as a batched GEMM with a row of ones.
        self.bgemm(
            be,
            1,
            c,
            s,
            (false, false),
            1.0 / s as f32,
            0.0,
            MatRef::new(self.ones, s),
            MatRef::new(self.x_ln, c).batched(s * c),
            MatRef::new(self.x_mean, c).batched(c),
        )?;
        self.lin_q.forward(be, r, self.x_mean, self.q)?;
        self.lin_kvg.forward(be, r * s, self.x_ln, self.kvg)?;
        self.bgemm(
            be,
            h,
            s,
            d,
            (false, true),
            1.0 / (d as f32).sqrt(),
            0.0,
            MatRef::new(self.q, d).batched(w),
            MatRef::new(self.kvg, kw).batched(s * kw),
            MatRef::new(self.logits, s).batched(h * s),
        )?;
        be.softmax_fwd(r * h, s, self.logits, self.probs)?;
        self.bgemm(
            be,
            h,
            d,
            s,
            (false, false),
            1.0,
            0.0,
            MatRef::new(self.probs, s).batched(h * s),
            MatRef::new(self.kvg, kw).at(d).batched(s * kw),
            MatRef::new(self.o, d).batched(w),
        )?;
        let o_b = View {
            t: self.o,
            off: 0,
            ld: w,
            row_div: s,
        };
        be.sigmoid_mul_fwd(
            r * s,
            w,
            o_b,
            View::cols(self.kvg, kw, 2 * d),
            View::dense(self.gated, w),
        )?;
        self.lin_o.forward(be, r * s, self.gated, proj)
    }

    /// Backward from `d_proj`; writes `dx` (overwrites).
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        x: TensorId,
        proj: TensorId,
        d_proj: TensorId,
        dx: TensorId,
    ) -> Result<()> {
        let (r, s, c, h, d, kw) = (self.r, self.s, self.c_in, self.heads, self.d, self.kw());
        let w = h * d;
        let alpha = 1.0 / (d as f32).sqrt();
        self.lin_o.backward(
            be,
            r * s,
            self.gated,
            proj,
            d_proj,
            Some(self.d_gated),
            false,
        )?;
        let o_b = View {
            t: self.o,
            off: 0,
            ld: w,
            row_div: s,
        };
        be.sigmoid_mul_bwd(
            r * s,
            w,
            o_b,
            View::cols(self.kvg, kw, 2 * d),
            View::dense(self.d_gated, w),
            View::dense(self.d_full, w),
            View::cols(self.d_kvg, kw, 2 * d),
        )?;
        // d_o[r] = sum over s of d_full[r, s].
        self.bgemm(
            be,
            1,
            w,
            s,
            (false, false),
            1.0,
            0.0,
            MatRef::new(self.ones, s),
            MatRef::new(self.d_full, w).batched(s * w),
            MatRef::new(self.d_o, w).batched(w),
        )?;
        // o = probs @ v
        self.bgemm(
            be,
            h,
            s,
            d,
            (false, true),
            1.0,
            0.0,
            MatRef::new(self.d_o, d).batched(w),
            MatRef::new(self.kvg, kw).at(d).batched(s * kw),
            MatRef::new(self.d_probs, s).batched(h * s),
        )?;
        self.bgemm(
            be,
            s,
            d,
            h,
            (true, false),
            1.0,
            0.0,
            MatRef::new(self.probs, s).batched(h * s),
            MatRef::new(self.d_o, d).batched(w),
            MatRef::new(self.d_kvg, kw).at(d).batched(s * kw),
        )?;
        be.softmax_bwd(r * h, s, self.probs, self.d_probs, self.d_logits)?;
        // logits = alpha * q @ k^T
        self.bgemm(
            be,
            h,
            d,
            s,
            (false, false),
            alpha,
            0.0,
            MatRef::new(self.d_logits, s).batched(h * s),
            MatRef::new(self.kvg, kw).batched(s * kw),
            MatRef::new(self.d_q, d).batched(w),
        )?;
        self.bgemm(
            be,
            s,
            d,
            h,
            (true, false),
            alpha,
            0.0,
            MatRef::new(self.d_logits, s).batched(h * s),
            MatRef::new(self.q, d).batched(w),
            MatRef::new(self.d_kvg, kw).batched(s * kw),
        )?;
        self.lin_q.backward(
            be,
            r,
            self.x_mean,
            self.q,
            self.d_q,
            Some(self.d_x_mean),
            false,
        )?;
        self.lin_kvg.backward(
            be,
            r * s,
            self.x_ln,
            self.kvg,
            self.d_kvg,
            Some(self.d_x_ln),
            false,
        )?;
        // x_mean = ones @ x_ln / s, so d_x_ln[r, s] += d_x_mean[r] / s.
        self.bgemm(
            be,
            s,
            c,
            1,
            (false, false),
            1.0 / s as f32,
            1.0,
            MatRef::new(self.ones, 1),
            MatRef::new(self.d_x_mean, c).batched(c),
            MatRef::new(self.d_x_ln, c).batched(s * c),
        )?;
        self.ln.backward(be, x, self.d_x_ln, dx, false)
    }
}
