//! Template pointwise attention (AF2 supplement Algorithm 17): every pair
//! `(i, j)` of the pair representation attends over the `n_templ` template pair
//! embeddings of the same pair. Queries come from `z_ij`, keys and values from
//! `t^s_ij`; no gate, output projection with bias.
//!
//! Per pair and head the attention is tiny (one query, `n_templ` keys), so it is
//! written as batched GEMMs over `pairs × heads` plus the softmax op, with the
//! keys and values transposed to `[pair, head, template, c]` once.

use crate::backend::{Activation, Backend, Gemm, MatRef, TensorId, View};
use crate::error::Result;
use crate::layers::{Builder, Linear};

/// Sizes of a [`TemplatePointwiseAttention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateAttnShape {
    /// Pairs of the pair representation (`n_res²`, or a row range of them).
    pub pairs: usize,
    /// Templates.
    pub n_templ: usize,
    /// Pair width `c_z` (queries, output).
    pub c_z: usize,
    /// Template pair width `c_t` (keys, values).
    pub c_t: usize,
    /// Heads (AF2: 4).
    pub heads: usize,
    /// Head width (AF2: 16).
    pub head_dim: usize,
}

/// The module with its planned tensors.
pub struct TemplatePointwiseAttention {
    /// Its sizes.
    pub shape: TemplateAttnShape,
    lin_q: Linear,
    lin_k: Linear,
    lin_v: Linear,
    lin_o: Linear,
    q: TensorId,
    k: TensorId,
    v: TensorId,
    k_ps: TensorId,
    v_ps: TensorId,
    k_h: TensorId,
    v_h: TensorId,
    logits: TensorId,
    probs: TensorId,
    o: TensorId,
    d_o: TensorId,
    d_probs: TensorId,
    d_logits: TensorId,
    d_q: TensorId,
    d_k_h: TensorId,
    d_v_h: TensorId,
    d_ps: TensorId,
    d_k: TensorId,
    d_v: TensorId,
}

impl TemplatePointwiseAttention {
    /// Declares the module.
    pub fn new<B: Backend>(b: &mut Builder<B>, name: &str, shape: TemplateAttnShape) -> Self {
        b.scope(name, |b| {
            let s = shape;
            let w = s.heads * s.head_dim;
            let (p, ps) = (s.pairs, s.pairs * s.n_templ);
            let lin = |b: &mut Builder<B>, n: &str, i, o, bias| {
                Linear::new(b, n, i, o, bias, Activation::None)
            };
            Self {
                shape,
                lin_q: lin(b, "lin_q", s.c_z, w, false),
                lin_k: lin(b, "lin_k", s.c_t, w, false),
                lin_v: lin(b, "lin_v", s.c_t, w, false),
                lin_o: lin(b, "lin_o", w, s.c_z, true),
                q: b.act("q", p * w),
                k: b.act("k", ps * w),
                v: b.act("v", ps * w),
                k_ps: b.act("k_ps", ps * w),
                v_ps: b.act("v_ps", ps * w),
                k_h: b.act("k_h", ps * w),
                v_h: b.act("v_h", ps * w),
                logits: b.act("logits", ps * s.heads),
                probs: b.act("probs", ps * s.heads),
                o: b.act("o", p * w),
                d_o: b.act("d_o", p * w),
                d_probs: b.act("d_probs", ps * s.heads),
                d_logits: b.act("d_logits", ps * s.heads),
                d_q: b.act("d_q", p * w),
                d_k_h: b.act("d_k_h", ps * w),
                d_v_h: b.act("d_v_h", ps * w),
                d_ps: b.act("d_ps", ps * w),
                d_k: b.act("d_k", ps * w),
                d_v: b.act("d_v", ps * w),
            }
        })
    }

    fn alpha(&self) -> f32 {
        1.0 / (self.shape.head_dim as f32).sqrt()
    }

    /// One small GEMM per (pair, head): `c[b] = alpha op(a[b]) op(b[b])`, where a
    /// `[m, k]` operand of the batch is dense with row pitch = its width.
    #[allow(clippy::too_many_arguments)]
    fn per_head<B: Backend>(
        &self,
        be: &mut B,
        (m, n, k): (usize, usize, usize),
        (a, ta): (TensorId, bool),
        (b, tb): (TensorId, bool),
        c: TensorId,
        alpha: f32,
    ) -> Result<()> {
        let cols = |t: bool, r: usize, c: usize| if t { r } else { c };
        be.gemm(&Gemm {
            m,
            n,
            k,
            batch: self.shape.pairs * self.shape.heads,
            trans_a: ta,
            trans_b: tb,
            alpha,
            beta: 0.0,
            a: MatRef::new(a, cols(ta, m, k)).batched(m * k),
            b: MatRef::new(b, cols(tb, k, n)).batched(k * n),
            c: MatRef::new(c, n).batched(m * n),
        })
    }

    /// `out [pairs, c_z]` from `z [pairs, c_z]` and the templates `t [n_templ, pairs, c_t]`.
    pub fn forward<B: Backend>(
        &self,
        be: &mut B,
        z: TensorId,
        t: TensorId,
        out: TensorId,
    ) -> Result<()> {
        self.forward_masked(be, z, t, None, out)
    }

    /// [`Self::forward`] with a key bias `[n_templ]` (Activation, e.g. 0 for a
    /// present template and -1e9 for an empty slot) added to every logit row: an
    /// empty slot leaves the softmax. The bias is a constant, so the backward is
    /// the same ([`Self::backward`]).
    pub fn forward_masked<B: Backend>(
        &self,
        be: &mut B,
        z: TensorId,
        t: TensorId,
        key_bias: Option<TensorId>,
        out: TensorId,
    ) -> Result<()> {
        let s = self.shape;
        let (p, n, c, h) = (s.pairs, s.n_templ, s.head_dim, s.heads);
        self.lin_q.forward(be, p, z, self.q)?;
        self.lin_k.forward(be, n * p, t, self.k)?;
        self.lin_v.forward(be, n * p, t, self.v)?;
        // [n, p, h*c] -> [p, n, h, c] -> [p, h, n, c].
        for (x, x_ps, x_h) in [(self.k, self.k_ps, self.k_h), (self.v, self.v_ps, self.v_h)] {
            be.transpose([1, n, p, h * c], x, x_ps, false)?;
            be.transpose([p, n, h, c], x_ps, x_h, false)?;
        }
        // logits[ph, 1, n] = q[ph, 1, c] k[ph, n, c]^T / sqrt(c).
        self.per_head(
            be,
            (1, n, c),
            (self.q, false),
            (self.k_h, true),
            self.logits,
            self.alpha(),
        )?;
        if let Some(bias) = key_bias {
            be.bias_act_fwd(
                p * h,
                n,
                View::dense(self.logits, n),
                bias,
                Activation::None,
            )?;
        }
        be.softmax_fwd(p * h, n, self.logits, self.probs)?;
        // o[ph, 1, c] = probs[ph, 1, n] v[ph, n, c].
        self.per_head(
            be,
            (1, c, n),
            (self.probs, false),
            (self.v_h, false),
            self.o,
            1.0,
        )?;
        self.lin_o.forward(be, p, self.o, out)
    }

    /// Backward from `d_out` (modified in place): writes (or adds to, with
    /// `accumulate`) `dz`, and writes `dt`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        z: TensorId,
        t: TensorId,
        out: TensorId,
        d_out: TensorId,
        dz: TensorId,
        accumulate: bool,
        dt: TensorId,
    ) -> Result<()> {
        let s = self.shape;
        let (p, n, c, h) = (s.pairs, s.n_templ, s.head_dim, s.heads);
        self.lin_o
            .backward(be, p, self.o, out, d_out, Some(self.d_o), false)?;
        // d_probs = d_o v^T; d_v = probs^T d_o.
        self.per_head(
            be,
            (1, n, c),
            (self.d_o, false),
            (self.v_h, true),
            self.d_probs,
            1.0,
        )?;
        self.per_head(
            be,
            (n, c, 1),
            (self.probs, true),
            (self.d_o, false),
            self.d_v_h,
            1.0,
        )?;
        be.softmax_bwd(p * h, n, self.probs, self.d_probs, self.d_logits)?;
        // d_q = d_logits k / sqrt(c); d_k = d_logits^T q / sqrt(c).
        self.per_head(
            be,
            (1, c, n),
            (self.d_logits, false),
            (self.k_h, false),
            self.d_q,
            self.alpha(),
        )?;
        self.per_head(
            be,
            (n, c, 1),
            (self.d_logits, true),
            (self.q, false),
            self.d_k_h,
            self.alpha(),
        )?;
        // [p, h, n, c] -> [p, n, h, c] -> [n, p, h*c].
        for (d_h, d) in [(self.d_k_h, self.d_k), (self.d_v_h, self.d_v)] {
            be.transpose([p, h, n, c], d_h, self.d_ps, false)?;
            be.transpose([1, p, n, h * c], self.d_ps, d, false)?;
        }
        self.lin_k
            .backward(be, n * p, t, self.k, self.d_k, Some(dt), false)?;
        self.lin_v
            .backward(be, n * p, t, self.v, self.d_v, Some(dt), true)?;
        self.lin_q
            .backward(be, p, z, self.q, self.d_q, Some(dz), accumulate)
    }
}
