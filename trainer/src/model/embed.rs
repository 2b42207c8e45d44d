//! The embedders of the trunk, forward and backward on the backend: the input
//! embedder with the recycling embedder (Algorithms 3, 4, 32), and the template
//! embedding (template pair stack, pointwise attention, template angle rows of
//! the MSA; Algorithm 2 lines 7-12, Algorithms 16, 17).
//!
//! Features come from [`super::features`] as host-concatenated arrays, so each
//! sum of linear maps of the supplement is one [`Linear`] here.

use super::features::{MSA_FEAT, PAIR_FEAT, TEMPLATE_ANGLE_FEAT, TEMPLATE_PAIR_FEAT};
use crate::backend::{Activation, Backend, Dropout, TensorId, mix64};
use crate::block::{PairStack, PairStackConfig, PairStackIo};
use crate::error::Result;
use crate::layers::{Builder, LayerNorm, Linear};
use crate::template::{TemplateAttnShape, TemplatePointwiseAttention};

/// `dst (=|+=) src` over `n` elements (also converts between classes).
pub(crate) fn copy<B: Backend>(
    be: &mut B,
    n: usize,
    src: TensorId,
    dst: TensorId,
    accumulate: bool,
) -> Result<()> {
    be.transpose([1, 1, n, 1], src, dst, accumulate)
}

/// `out = a + b` over `n` elements.
pub(crate) fn add<B: Backend>(
    be: &mut B,
    n: usize,
    a: TensorId,
    b: TensorId,
    out: TensorId,
) -> Result<()> {
    be.residual_dropout_fwd(&Dropout::off(n), a, b, out)
}

/// Input and recycling embedder: `z = Linear(pair features) + LN(z_prev)` and
/// MSA rows `0..S` `= Linear(MSA features)`, row 0 `+= LN(m_prev)`. The pair
/// features hold `target_feat_i`, `target_feat_j`, the relative positions and
/// the recycled distogram, so the one pair `Linear` is Algorithm 3's
/// `a_i + b_j + relpos_ij` plus Algorithm 32's distogram map.
pub struct InputEmbedder {
    n: usize,
    s: usize,
    c_m: usize,
    c_z: usize,
    /// Pair features `[N, N, PAIR_FEAT]` (host-written).
    pub pair_feat: TensorId,
    /// MSA features `[S, N, MSA_FEAT]` (host-written).
    pub msa_feat: TensorId,
    /// The previous iteration's MSA row 0 `[N, c_m]` (zeros on the first).
    pub m_prev: TensorId,
    /// The previous iteration's pair `[N, N, c_z]` (zeros on the first).
    pub z_prev: TensorId,
    /// The pair embedding `[N, N, c_z]`.
    pub z_out: TensorId,
    lin_pair: Linear,
    lin_msa: Linear,
    ln_m_prev: LayerNorm,
    ln_z_prev: LayerNorm,
    z_lin: TensorId,
    z_prev_ln: TensorId,
    m_prev_ln: TensorId,
    m_rows: TensorId,
    m_row0: TensorId,
    d_z_act: TensorId,
    d_m_act: TensorId,
    d_m_act_row0: TensorId,
    d_m_prev: TensorId,
    d_z_prev: TensorId,
}

impl InputEmbedder {
    /// Declares the embedder writing rows `0..s` of the trunk MSA `m [>= s, n, c_m]`.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        n: usize,
        s: usize,
        c_m: usize,
        c_z: usize,
        m: TensorId,
    ) -> Result<Self> {
        let (nn, sn) = (n * n, s * n);
        let m_rows = b.be.view(m, 0, sn * c_m)?;
        let m_row0 = b.be.view(m, 0, n * c_m)?;
        let d_m_act = b.scope("input_embedder", |b| b.act("d_m_act", sn * c_m));
        let d_m_act_row0 = b.be.view(d_m_act, 0, n * c_m)?;
        Ok(b.scope("input_embedder", |b| Self {
            n,
            s,
            c_m,
            c_z,
            pair_feat: b.act("pair_feat", nn * PAIR_FEAT),
            msa_feat: b.act("msa_feat", sn * MSA_FEAT),
            m_prev: b.act("m_prev", n * c_m),
            z_prev: b.act("z_prev", nn * c_z),
            z_out: b.act("z_out", nn * c_z),
            lin_pair: Linear::new(b, "lin_pair", PAIR_FEAT, c_z, true, Activation::None),
            lin_msa: Linear::new(b, "lin_msa", MSA_FEAT, c_m, true, Activation::None),
            ln_m_prev: LayerNorm::new(b, "recycle_ln_m", n, c_m),
            ln_z_prev: LayerNorm::new(b, "recycle_ln_z", nn, c_z),
            z_lin: b.act("z_lin", nn * c_z),
            z_prev_ln: b.act("z_prev_ln", nn * c_z),
            m_prev_ln: b.act("m_prev_ln", n * c_m),
            m_rows,
            m_row0,
            d_z_act: b.act("d_z_act", nn * c_z),
            d_m_act,
            d_m_act_row0,
            d_m_prev: b.act("d_m_prev", n * c_m),
            d_z_prev: b.act("d_z_prev", nn * c_z),
        }))
    }

    /// Forward: writes `z_out` and MSA rows `0..S`.
    pub fn forward<B: Backend>(&self, be: &mut B) -> Result<()> {
        let (n, nn) = (self.n, self.n * self.n);
        self.lin_pair.forward(be, nn, self.pair_feat, self.z_lin)?;
        self.ln_z_prev.forward(be, self.z_prev, self.z_prev_ln)?;
        add(be, nn * self.c_z, self.z_lin, self.z_prev_ln, self.z_out)?;
        self.lin_msa
            .forward(be, self.s * n, self.msa_feat, self.m_rows)?;
        self.ln_m_prev.forward(be, self.m_prev, self.m_prev_ln)?;
        // In place on row 0: the linear's backward (no activation) never reads
        // its output, so overwriting it is safe.
        add(be, n * self.c_m, self.m_row0, self.m_prev_ln, self.m_row0)
    }

    /// Backward from `d_z` (Stat, dL/d z_out) and `d_m` (Stat, the trunk MSA's
    /// gradient; rows `0..S` are read). The recycled inputs get no gradient
    /// (stopped, as AlphaFold2): their LayerNorms' input gradients are discarded.
    pub fn backward<B: Backend>(&self, be: &mut B, d_z: TensorId, d_m: TensorId) -> Result<()> {
        let (n, nn) = (self.n, self.n * self.n);
        copy(be, nn * self.c_z, d_z, self.d_z_act, false)?;
        self.lin_pair.backward(
            be,
            nn,
            self.pair_feat,
            self.z_lin,
            self.d_z_act,
            None,
            false,
        )?;
        self.ln_z_prev
            .backward(be, self.z_prev, self.d_z_act, self.d_z_prev, false)?;
        copy(be, self.s * n * self.c_m, d_m, self.d_m_act, false)?;
        self.lin_msa.backward(
            be,
            self.s * n,
            self.msa_feat,
            self.m_rows,
            self.d_m_act,
            None,
            false,
        )?;
        self.ln_m_prev
            .backward(be, self.m_prev, self.d_m_act_row0, self.d_m_prev, false)
    }
}

/// Sizes of the template embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateDims {
    /// Residues.
    pub n: usize,
    /// Sample MSA rows (the template rows follow them).
    pub s: usize,
    /// Template slots.
    pub t: usize,
    /// MSA channels.
    pub c_m: usize,
    /// Pair channels.
    pub c_z: usize,
    /// One template pair stack block.
    pub block: PairStackConfig,
    /// Template pair stack blocks.
    pub blocks: usize,
    /// Pointwise attention heads.
    pub attn_heads: usize,
    /// Pointwise attention head width.
    pub attn_head_dim: usize,
}

/// The template embedding: pair features -> `Linear` -> template pair stack
/// (each template on its own, one set of weights) -> LayerNorm -> pointwise
/// attention from the pair representation, added to it; and template angle
/// features -> `Linear`-ReLU-`Linear` as MSA rows `S..S+T`.
pub struct TemplateEmbedder {
    d: TemplateDims,
    /// Template pair features `[T, N, N, TEMPLATE_PAIR_FEAT]` (host-written).
    pub pair_feat: TensorId,
    /// Template angle features `[T, N, TEMPLATE_ANGLE_FEAT]` (host-written).
    pub angle_feat: TensorId,
    /// Pointwise attention key bias `[T]` (host-written: 0 present, -1e9 empty).
    pub key_bias: TensorId,
    /// `[N * N]` (Stat): 1 when the sample has any template, else 0 (the
    /// embedding is then dropped, as AlphaFold2).
    pub any_template: TensorId,
    /// The pair representation with the templates added `[N, N, c_z]`.
    pub z_out: TensorId,
    lin_pair: Linear,
    /// The stream of the template stack before each block and after the last.
    zs: Vec<TensorId>,
    stacks: Vec<Vec<PairStack>>,
    d_zt: TensorId,
    d_zt_act: TensorId,
    ln: LayerNorm,
    t_ln: TensorId,
    d_t_ln: TensorId,
    attn: TemplatePointwiseAttention,
    attn_out: TensorId,
    d_attn_out: TensorId,
    lin_angle1: Linear,
    lin_angle2: Linear,
    angle_hidden: TensorId,
    d_angle: TensorId,
    d_angle_hidden: TensorId,
    m_rows: TensorId,
    d_m_rows: TensorId,
}

impl TemplateEmbedder {
    /// Declares the embedding; `m`/`d_m` are the trunk MSA and its gradient
    /// (`[S + T, N, c_m]`), `pair_mask` the `[N, N]` mask (Stat) of the pair stack.
    pub fn new<B: Backend>(
        b: &mut Builder<B>,
        d: &TemplateDims,
        m: TensorId,
        d_m: TensorId,
        pair_mask: TensorId,
    ) -> Result<Self> {
        let (n, t, c_t) = (d.n, d.t, d.block.c_z);
        let (nn, tnn) = (n * n, d.t * n * n);
        let rows = (d.s * n * d.c_m, t * n * d.c_m);
        let m_rows = b.be.view(m, rows.0, rows.1)?;
        let d_m_rows = b.be.view(d_m, rows.0, rows.1)?;
        b.scope("template", |b| {
            let zs: Vec<TensorId> = (0..=d.blocks)
                .map(|l| b.act(&format!("z{l}"), tnn * c_t))
                .collect();
            let d_zt = b.stat("d_zt", tnn * c_t);
            let lin_pair = Linear::new(
                b,
                "lin_pair",
                TEMPLATE_PAIR_FEAT,
                c_t,
                true,
                Activation::None,
            );
            let mut stacks = Vec::with_capacity(d.blocks);
            for l in 0..d.blocks {
                let mut per_template = Vec::with_capacity(t);
                let first = b.params.entries.len();
                for k in 0..t {
                    let view =
                        |b: &mut Builder<B>, x: TensorId| b.be.view(x, k * nn * c_t, nn * c_t);
                    let io = PairStackIo {
                        z_in: view(b, zs[l])?,
                        z_out: view(b, zs[l + 1])?,
                        d_z: view(b, d_zt)?,
                        pair_mask,
                    };
                    let name = format!("pair_stack.block{l}");
                    let stack = if k == 0 {
                        b.scope(&name, |b| PairStack::new(b, &d.block, io))
                    } else {
                        let source = b.params.entries[first..].to_vec();
                        b.scope(&format!("{name}.template{k}"), |b| {
                            b.sharing(&source, |b| PairStack::new(b, &d.block, io))
                        })
                    };
                    per_template.push(stack);
                }
                stacks.push(per_template);
            }
            let shape = TemplateAttnShape {
                pairs: nn,
                n_templ: t,
                c_z: d.c_z,
                c_t,
                heads: d.attn_heads,
                head_dim: d.attn_head_dim,
            };
            Ok(Self {
                pair_feat: b.act("pair_feat", tnn * TEMPLATE_PAIR_FEAT),
                angle_feat: b.act("angle_feat", t * n * TEMPLATE_ANGLE_FEAT),
                key_bias: b.act("key_bias", t),
                any_template: b.stat("any_template", nn),
                z_out: b.act("z_out", nn * d.c_z),
                lin_pair,
                zs,
                stacks,
                d_zt,
                d_zt_act: b.act("d_zt_act", tnn * c_t),
                ln: LayerNorm::new(b, "ln", tnn, c_t),
                t_ln: b.act("t_ln", tnn * c_t),
                d_t_ln: b.act("d_t_ln", tnn * c_t),
                attn: TemplatePointwiseAttention::new(b, "pointwise_attn", shape),
                attn_out: b.act("attn_out", nn * d.c_z),
                d_attn_out: b.act("d_attn_out", nn * d.c_z),
                lin_angle1: Linear::new(
                    b,
                    "lin_angle1",
                    TEMPLATE_ANGLE_FEAT,
                    d.c_m,
                    true,
                    Activation::Relu,
                ),
                lin_angle2: Linear::new(b, "lin_angle2", d.c_m, d.c_m, true, Activation::None),
                angle_hidden: b.act("angle_hidden", t * n * d.c_m),
                d_angle: b.act("d_angle", t * n * d.c_m),
                d_angle_hidden: b.act("d_angle_hidden", t * n * d.c_m),
                m_rows,
                d_m_rows,
                d: d.clone(),
            })
        })
    }

    /// The dropout seed of template `k`'s stack in block `l`.
    fn seed(seed: Option<u64>, l: usize, k: usize) -> Option<u64> {
        seed.map(|s| mix64(s ^ mix64(((l as u64) << 32) | k as u64 | 0x7e_0000_0000_0000)))
    }

    /// Forward from the pair representation `z_in`: writes `z_out` and the
    /// template rows of the trunk MSA.
    pub fn forward<B: Backend>(&self, be: &mut B, z_in: TensorId, seed: Option<u64>) -> Result<()> {
        let d = &self.d;
        let (n, t) = (d.n, d.t);
        let nn = n * n;
        self.lin_pair
            .forward(be, t * nn, self.pair_feat, self.zs[0])?;
        for (l, per_template) in self.stacks.iter().enumerate() {
            for (k, stack) in per_template.iter().enumerate() {
                stack.forward(be, Self::seed(seed, l, k))?;
            }
        }
        self.ln.forward(be, self.zs[d.blocks], self.t_ln)?;
        self.attn
            .forward_masked(be, z_in, self.t_ln, Some(self.key_bias), self.attn_out)?;
        be.scale_rows(nn, d.c_z, self.attn_out, self.any_template)?;
        add(be, nn * d.c_z, z_in, self.attn_out, self.z_out)?;
        self.lin_angle1
            .forward(be, t * n, self.angle_feat, self.angle_hidden)?;
        self.lin_angle2
            .forward(be, t * n, self.angle_hidden, self.m_rows)
    }

    /// Backward: `d_z` (Stat) holds dL/d z_out and becomes dL/d z_in; the
    /// template rows of the trunk MSA gradient are read.
    pub fn backward<B: Backend>(
        &self,
        be: &mut B,
        z_in: TensorId,
        d_z: TensorId,
        seed: Option<u64>,
    ) -> Result<()> {
        let d = &self.d;
        let (n, t, c_t) = (d.n, d.t, d.block.c_z);
        let nn = n * n;
        copy(be, nn * d.c_z, d_z, self.d_attn_out, false)?;
        be.scale_rows(nn, d.c_z, self.d_attn_out, self.any_template)?;
        self.attn.backward(
            be,
            z_in,
            self.t_ln,
            self.attn_out,
            self.d_attn_out,
            d_z,
            true,
            self.d_t_ln,
        )?;
        self.ln
            .backward(be, self.zs[d.blocks], self.d_t_ln, self.d_zt, false)?;
        for (l, per_template) in self.stacks.iter().enumerate().rev() {
            for (k, stack) in per_template.iter().enumerate() {
                stack.backward(be, Self::seed(seed, l, k))?;
            }
        }
        copy(be, t * nn * c_t, self.d_zt, self.d_zt_act, false)?;
        self.lin_pair.backward(
            be,
            t * nn,
            self.pair_feat,
            self.zs[0],
            self.d_zt_act,
            None,
            false,
        )?;
        copy(be, t * n * d.c_m, self.d_m_rows, self.d_angle, false)?;
        self.lin_angle2.backward(
            be,
            t * n,
            self.angle_hidden,
            self.m_rows,
            self.d_angle,
            Some(self.d_angle_hidden),
            false,
        )?;
        self.lin_angle1.backward(
            be,
            t * n,
            self.angle_feat,
            self.angle_hidden,
            self.d_angle_hidden,
            None,
            false,
        )
    }
}
