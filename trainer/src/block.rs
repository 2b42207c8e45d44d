//! The Evoformer block (AF2 supplement Algorithm 6) and the extra-MSA block,
//! forward and backward, composed from the modules in [`crate::layers`].
//!
//! The residual streams are kept as separate tensors (`m0 -> m1 -> ...`), so
//! every LayerNorm input survives for the backward pass without copies. The
//! gradient of each stream is one tensor that the backward pass updates in place
//! (`dL/d out` on entry, `dL/d in` on exit): identity paths cost nothing.
//!
//! DAP seams: the ops that need the other axis of a tensor are the explicit
//! `transpose` calls below (MSA column attention, triangle attention around the
//! ending node) and the contractions over all rows (outer product mean,
//! triangle multiplication). Everything else works on whole rows.

use crate::backend::{AttnShape, Backend, Dropout, SharedAxis, TensorId};
use crate::config::BlockConfig;
use crate::error::{Result, TrainerError};
use crate::layers::{
    BiasKind, Builder, GatedAttention, GlobalColumnAttention, OpmMask, OuterProductMean,
    ParamTable, Transition, TriangleDirection, TriangleMultiplication, opm_inv_norm,
};

/// The column-wise MSA module of a block.
pub enum ColumnAttention {
    /// Full gated column attention (Evoformer).
    Full(GatedAttention),
    /// Global column attention (extra-MSA stack).
    Global(GlobalColumnAttention),
}

/// One Evoformer (or extra-MSA) block with its planned tensors.
pub struct EvoformerBlock {
    /// The configuration it was planned from.
    pub cfg: BlockConfig,
    /// Input MSA `[n_seq, n_res, c_m]` (the caller writes it).
    pub m_in: TensorId,
    /// Input pair `[n_res, n_res, c_z]` (the caller writes it).
    pub z_in: TensorId,
    /// Output MSA.
    pub m_out: TensorId,
    /// Output pair.
    pub z_out: TensorId,
    /// MSA gradient (f32, class Stat: the stream gradient is accumulated many
    /// times): `dL/d m_out` before backward, `dL/d m_in` after.
    pub d_m: TensorId,
    /// Pair gradient (f32): `dL/d z_out` before backward, `dL/d z_in` after.
    pub d_z: TensorId,
    /// Seed of this step's dropout masks; training mode when `Some`.
    pub dropout_seed: Option<u64>,
    /// MSA mask `[n_seq, n_res]` (Stat, 1 = real, 0 = padding): the keys of the
    /// row and column attentions, and the rows of the outer product mean. All ones
    /// after [`EvoformerBlock::init_constants`]; written by [`EvoformerBlock::set_masks`].
    pub msa_mask: TensorId,
    /// Pair mask `[n_res, n_res]` (Stat): the keys of both triangle attentions and
    /// the gate of both triangle multiplications.
    pub pair_mask: TensorId,
    /// The outer product mean's per-pair normalisation, derived from the MSA mask.
    opm_inv_norm: TensorId,
    t_msa_mask: TensorId,
    t_pair_mask: TensorId,
    row_attn: GatedAttention,
    col_attn: ColumnAttention,
    msa_trans: Transition,
    opm: OuterProductMean,
    tri_out: TriangleMultiplication,
    tri_in: TriangleMultiplication,
    tri_start: GatedAttention,
    tri_end: GatedAttention,
    pair_trans: Transition,
    m: [TensorId; 2],
    z: [TensorId; 5],
    proj_m: TensorId,
    proj_z: TensorId,
    t_m: TensorId,
    t_proj_m: TensorId,
    t_z: TensorId,
    t_proj_z: TensorId,
    d_proj_m: TensorId,
    d_proj_z: TensorId,
    d_t_m: TensorId,
    d_t_z: TensorId,
}

impl EvoformerBlock {
    /// Plans a block: declares its parameters into `params` and its tensors on the backend.
    pub fn new<B: Backend>(
        be: &mut B,
        params: &mut ParamTable,
        name: &str,
        cfg: &BlockConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut b = Builder::new(be, params);
        let c = cfg.clone();
        let (s, r, cm, cz) = (c.n_seq, c.n_res, c.c_m, c.c_z);
        let (msa_n, pair_n) = (s * r * cm, r * r * cz);
        Ok(b.scope(name, |b| {
            let msa_shape = |batch, len| AttnShape {
                batch,
                len,
                heads: c.msa_heads,
                head_dim: c.msa_head_dim,
            };
            let tri_shape = AttnShape {
                batch: r,
                len: r,
                heads: c.tri_heads,
                head_dim: c.tri_head_dim,
            };
            let row_attn =
                GatedAttention::new(b, "msa_row_attn", msa_shape(s, r), cm, BiasKind::Pair(cz));
            let col_attn = if c.global_column {
                ColumnAttention::Global(GlobalColumnAttention::new(
                    b,
                    "msa_col_global_attn",
                    r,
                    s,
                    cm,
                    c.msa_heads,
                    c.msa_head_dim,
                ))
            } else {
                ColumnAttention::Full(GatedAttention::new(
                    b,
                    "msa_col_attn",
                    msa_shape(r, s),
                    cm,
                    BiasKind::None,
                ))
            };
            Self {
                m_in: b.act("m_in", msa_n),
                z_in: b.act("z_in", pair_n),
                m_out: b.act("m_out", msa_n),
                z_out: b.act("z_out", pair_n),
                d_m: b.stat("d_m", msa_n),
                d_z: b.stat("d_z", pair_n),
                dropout_seed: None,
                msa_mask: b.stat("msa_mask", s * r),
                pair_mask: b.stat("pair_mask", r * r),
                opm_inv_norm: b.stat("opm_inv_norm", r * r),
                t_msa_mask: b.stat("t_msa_mask", s * r),
                t_pair_mask: b.stat("t_pair_mask", r * r),
                row_attn,
                col_attn,
                msa_trans: Transition::new(b, "msa_transition", s * r, cm, c.transition_factor),
                opm: OuterProductMean::new(b, "outer_product_mean", s, r, cm, c.opm_dim, cz),
                tri_out: TriangleMultiplication::new(
                    b,
                    "tri_mul_out",
                    TriangleDirection::Outgoing,
                    r,
                    cz,
                    c.tri_mul_dim,
                ),
                tri_in: TriangleMultiplication::new(
                    b,
                    "tri_mul_in",
                    TriangleDirection::Incoming,
                    r,
                    cz,
                    c.tri_mul_dim,
                ),
                tri_start: GatedAttention::new(
                    b,
                    "tri_attn_start",
                    tri_shape,
                    cz,
                    BiasKind::OwnInput,
                ),
                tri_end: GatedAttention::new(b, "tri_attn_end", tri_shape, cz, BiasKind::OwnInput),
                pair_trans: Transition::new(b, "pair_transition", r * r, cz, c.transition_factor),
                m: [b.act("m1", msa_n), b.act("m2", msa_n)],
                z: [
                    b.act("z1", pair_n),
                    b.act("z2", pair_n),
                    b.act("z3", pair_n),
                    b.act("z4", pair_n),
                    b.act("z5", pair_n),
                ],
                proj_m: b.act("proj_m", msa_n),
                proj_z: b.act("proj_z", pair_n),
                t_m: b.act("t_m", msa_n),
                t_proj_m: b.act("t_proj_m", msa_n),
                t_z: b.act("t_z", pair_n),
                t_proj_z: b.act("t_proj_z", pair_n),
                d_proj_m: b.act("d_proj_m", msa_n),
                d_proj_z: b.act("d_proj_z", pair_n),
                d_t_m: b.act("d_t_m", msa_n),
                d_t_z: b.act("d_t_z", pair_n),
                cfg: c,
            }
        }))
    }

    /// Writes constants and sets both masks to all ones; call once after `materialize`.
    pub fn init_constants<B: Backend>(&self, be: &mut B) -> Result<()> {
        let (s, r) = (self.cfg.n_seq, self.cfg.n_res);
        self.set_masks(be, &vec![1.0; s * r], &vec![1.0; r * r])?;
        match &self.col_attn {
            ColumnAttention::Global(g) => g.init_constants(be),
            ColumnAttention::Full(_) => Ok(()),
        }
    }

    /// Writes this example's masks (1 = real, 0 = padding): `msa [n_seq, n_res]`,
    /// `pair [n_res, n_res]`, and the outer product mean's normalisation derived
    /// from `msa` (an upload, like writing `m_in`; not for use inside a step).
    pub fn set_masks<B: Backend>(&self, be: &mut B, msa: &[f32], pair: &[f32]) -> Result<()> {
        let (s, r) = (self.cfg.n_seq, self.cfg.n_res);
        for (what, got, want) in [("msa", msa.len(), s * r), ("pair", pair.len(), r * r)] {
            if got != want {
                return Err(TrainerError::Shape {
                    op: "EvoformerBlock::set_masks",
                    detail: format!("{what} mask has {got} values, expected {want}"),
                });
            }
        }
        be.write(self.msa_mask, msa)?;
        be.write(self.pair_mask, pair)?;
        be.write(self.opm_inv_norm, &opm_inv_norm(msa, s, r))
    }

    fn opm_mask(&self) -> OpmMask {
        OpmMask {
            msa: self.msa_mask,
            inv_norm: self.opm_inv_norm,
        }
    }

    fn dropout(&self, p: f32, stage: u64, shape: [usize; 3], shared: SharedAxis) -> Dropout {
        match self.dropout_seed {
            Some(seed) if p > 0.0 => Dropout {
                p,
                seed: crate::backend::mix64(seed ^ stage),
                shape,
                shared,
            },
            _ => Dropout {
                p: 0.0,
                seed: 0,
                shape,
                shared: SharedAxis::None,
            },
        }
    }

    fn msa_dims(&self) -> [usize; 3] {
        [self.cfg.n_seq, self.cfg.n_res, self.cfg.c_m]
    }

    fn pair_dims(&self) -> [usize; 3] {
        [self.cfg.n_res, self.cfg.n_res, self.cfg.c_z]
    }

    fn stage_dropouts(&self) -> [Dropout; 5] {
        let (ms, ps) = (self.msa_dims(), self.pair_dims());
        let (pm, pp) = (self.cfg.msa_dropout, self.cfg.pair_dropout);
        [
            self.dropout(pm, 1, ms, SharedAxis::Axis0),
            self.dropout(pp, 2, ps, SharedAxis::Axis0),
            self.dropout(pp, 3, ps, SharedAxis::Axis0),
            self.dropout(pp, 4, ps, SharedAxis::Axis0),
            self.dropout(pp, 5, ps, SharedAxis::Axis1),
        ]
    }

    /// Forward: `(m_in, z_in) -> (m_out, z_out)`.
    pub fn forward<B: Backend>(&self, be: &mut B) -> Result<()> {
        let [s, r, cm] = self.msa_dims();
        let cz = self.cfg.c_z;
        let [dm_row, dz_out, dz_in, dz_start, dz_end] = self.stage_dropouts();
        let (ms, ps) = (Dropout::off(s * r * cm), Dropout::off(r * r * cz));
        let [m1, m2] = self.m;
        let [z1, z2, z3, z4, z5] = self.z;
        // The masks as keys of the column-wise attentions.
        be.transpose([1, s, r, 1], self.msa_mask, self.t_msa_mask, false)?;
        be.transpose([1, r, r, 1], self.pair_mask, self.t_pair_mask, false)?;
        // MSA stack.
        self.row_attn.forward(
            be,
            self.m_in,
            Some(self.z_in),
            Some(self.msa_mask),
            self.proj_m,
        )?;
        be.residual_dropout_fwd(&dm_row, self.m_in, self.proj_m, m1)?;
        be.transpose([1, s, r, cm], m1, self.t_m, false)?;
        match &self.col_attn {
            ColumnAttention::Full(a) => {
                a.forward(be, self.t_m, None, Some(self.t_msa_mask), self.t_proj_m)?
            }
            ColumnAttention::Global(a) => a.forward(be, self.t_m, self.t_proj_m)?,
        }
        be.transpose([1, r, s, cm], self.t_proj_m, self.proj_m, false)?;
        be.residual_dropout_fwd(&ms, m1, self.proj_m, m2)?;
        self.msa_trans.forward(be, m2, self.proj_m)?;
        be.residual_dropout_fwd(&ms, m2, self.proj_m, self.m_out)?;
        // Communication: MSA to pair.
        self.opm
            .forward(be, self.m_out, Some(self.opm_mask()), self.proj_z)?;
        be.residual_dropout_fwd(&ps, self.z_in, self.proj_z, z1)?;
        // Pair stack.
        let pm = Some(self.pair_mask);
        self.tri_out.forward(be, z1, pm, self.proj_z)?;
        be.residual_dropout_fwd(&dz_out, z1, self.proj_z, z2)?;
        self.tri_in.forward(be, z2, pm, self.proj_z)?;
        be.residual_dropout_fwd(&dz_in, z2, self.proj_z, z3)?;
        self.tri_start
            .forward(be, z3, None, Some(self.pair_mask), self.proj_z)?;
        be.residual_dropout_fwd(&dz_start, z3, self.proj_z, z4)?;
        be.transpose([1, r, r, cz], z4, self.t_z, false)?;
        self.tri_end
            .forward(be, self.t_z, None, Some(self.t_pair_mask), self.t_proj_z)?;
        be.transpose([1, r, r, cz], self.t_proj_z, self.proj_z, false)?;
        be.residual_dropout_fwd(&dz_end, z4, self.proj_z, z5)?;
        self.pair_trans.forward(be, z5, self.proj_z)?;
        be.residual_dropout_fwd(&ps, z5, self.proj_z, self.z_out)
    }

    /// Backward: `d_m`, `d_z` go from output to input gradients; parameter
    /// gradients are added to the gradient block. Needs the forward's tensors, so
    /// it follows the forward with the same dropout seed.
    pub fn backward<B: Backend>(&self, be: &mut B) -> Result<()> {
        let [s, r, cm] = self.msa_dims();
        let cz = self.cfg.c_z;
        let [dm_row, dz_out, dz_in, dz_start, dz_end] = self.stage_dropouts();
        let [_, m2] = self.m;
        let [z1, z2, z3, _, z5] = self.z;
        let (dm, dz) = (self.d_m, self.d_z);
        // Pair stack, in reverse. Identity paths of the residuals are free: d_z is shared.
        // GEMMs read bf16: consumers of the f32 stream gradient get a bf16 copy.
        be.transpose([1, 1, r * r * cz, 1], dz, self.d_proj_z, false)?;
        self.pair_trans
            .backward(be, z5, self.proj_z, self.d_proj_z, dz)?;
        be.dropout_bwd(&dz_end, dz, self.d_proj_z)?;
        be.transpose([1, r, r, cz], self.d_proj_z, self.d_t_z, false)?;
        self.tri_end.backward(
            be,
            self.t_z,
            None,
            Some(self.t_pair_mask),
            self.t_proj_z,
            self.d_t_z,
            self.d_proj_z,
            false,
            None,
        )?;
        be.transpose([1, r, r, cz], self.d_proj_z, dz, true)?;
        be.dropout_bwd(&dz_start, dz, self.d_proj_z)?;
        self.tri_start.backward(
            be,
            z3,
            None,
            Some(self.pair_mask),
            self.proj_z,
            self.d_proj_z,
            dz,
            true,
            None,
        )?;
        be.dropout_bwd(&dz_in, dz, self.d_proj_z)?;
        let pm = Some(self.pair_mask);
        self.tri_in.backward(be, z2, pm, self.d_proj_z, dz)?;
        be.dropout_bwd(&dz_out, dz, self.d_proj_z)?;
        self.tri_out.backward(be, z1, pm, self.d_proj_z, dz)?;
        // Outer product mean: its gradient flows into the MSA output.
        be.transpose([1, 1, r * r * cz, 1], dz, self.d_proj_z, false)?;
        self.opm.backward(
            be,
            self.m_out,
            Some(self.opm_mask()),
            self.proj_z,
            self.d_proj_z,
            dm,
        )?;
        // MSA stack, in reverse.
        be.transpose([1, 1, s * r * cm, 1], dm, self.d_proj_m, false)?;
        self.msa_trans
            .backward(be, m2, self.proj_m, self.d_proj_m, dm)?;
        be.transpose([1, s, r, cm], dm, self.d_proj_m, false)?;
        match &self.col_attn {
            ColumnAttention::Full(a) => a.backward(
                be,
                self.t_m,
                None,
                Some(self.t_msa_mask),
                self.t_proj_m,
                self.d_proj_m,
                self.d_t_m,
                false,
                None,
            )?,
            ColumnAttention::Global(a) => {
                a.backward(be, self.t_m, self.t_proj_m, self.d_proj_m, self.d_t_m)?
            }
        }
        be.transpose([1, r, s, cm], self.d_t_m, dm, true)?;
        be.dropout_bwd(&dm_row, dm, self.d_proj_m)?;
        self.row_attn.backward(
            be,
            self.m_in,
            Some(self.z_in),
            Some(self.msa_mask),
            self.proj_m,
            self.d_proj_m,
            dm,
            true,
            Some(dz),
        )?;
        Ok(())
    }
}
