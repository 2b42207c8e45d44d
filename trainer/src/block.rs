//! The Evoformer block (AF2 supplement Algorithm 6), the extra-MSA block, and
//! the pair stack they share with the template pair stack (Algorithm 16),
//! forward and backward, composed from the modules in [`crate::layers`].
//!
//! The residual streams are kept as separate tensors (`m0 -> m1 -> ...`), so
//! every LayerNorm input survives for the backward pass without copies. The
//! gradient of each stream is one tensor that the backward pass updates in place
//! (`dL/d out` on entry, `dL/d in` on exit): identity paths cost nothing, and the
//! blocks of a stack share one gradient tensor per stream ([`BlockIo`]).
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

/// The order of the four triangle updates of a [`PairStack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairStackOrder {
    /// Multiplications (outgoing, incoming), then attentions (starting, ending
    /// node): the Evoformer block (Algorithm 6).
    MultiplicationFirst,
    /// Attentions first, then multiplications: the template pair stack of the
    /// AlphaFold2 monomer (Algorithm 16).
    AttentionFirst,
}

/// Sizes and rates of a [`PairStack`].
#[derive(Clone, Debug, PartialEq)]
pub struct PairStackConfig {
    /// Residues.
    pub n_res: usize,
    /// Pair channels (c_z, or c_t in the template stack).
    pub c_z: usize,
    /// Channels of the triangle multiplications.
    pub tri_mul_dim: usize,
    /// Heads of the triangle attentions.
    pub tri_heads: usize,
    /// Head width of the triangle attentions.
    pub tri_head_dim: usize,
    /// Hidden width factor of the pair transition.
    pub transition_factor: usize,
    /// Dropout on the four triangle updates.
    pub pair_dropout: f32,
    /// Order of the updates.
    pub order: PairStackOrder,
}

impl PairStackConfig {
    /// The pair half of an Evoformer block.
    pub fn of_block(c: &BlockConfig) -> Self {
        Self {
            n_res: c.n_res,
            c_z: c.c_z,
            tri_mul_dim: c.tri_mul_dim,
            tri_heads: c.tri_heads,
            tri_head_dim: c.tri_head_dim,
            transition_factor: c.transition_factor,
            pair_dropout: c.pair_dropout,
            order: PairStackOrder::MultiplicationFirst,
        }
    }
}

/// The tensors a [`PairStack`] reads and writes that its owner holds.
#[derive(Clone, Copy, Debug)]
pub struct PairStackIo {
    /// Input pair `[n, n, c]`.
    pub z_in: TensorId,
    /// Output pair `[n, n, c]`.
    pub z_out: TensorId,
    /// Stream gradient (f32, Stat): `dL/d z_out` before backward, `dL/d z_in` after.
    pub d_z: TensorId,
    /// Pair mask `[n, n]` (Stat, 1 = real): keys of both triangle attentions and
    /// the gate of both triangle multiplications.
    pub pair_mask: TensorId,
}

/// One stage of the pair stack (the number seeds its dropout mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PairStage {
    MulOut = 2,
    MulIn = 3,
    AttnStart = 4,
    AttnEnd = 5,
}

/// Triangle multiplications, triangle attentions and the pair transition, each
/// a residual update of the pair representation (Algorithms 11-15).
pub struct PairStack {
    /// The configuration it was planned from.
    pub cfg: PairStackConfig,
    /// Its input, output, stream gradient and mask.
    pub io: PairStackIo,
    t_pair_mask: TensorId,
    tri_out: TriangleMultiplication,
    tri_in: TriangleMultiplication,
    tri_start: GatedAttention,
    tri_end: GatedAttention,
    pair_trans: Transition,
    /// The streams after each of the four triangle updates.
    z: [TensorId; 4],
    proj_z: TensorId,
    t_z: TensorId,
    t_proj_z: TensorId,
    d_proj_z: TensorId,
    d_t_z: TensorId,
}

impl PairStack {
    /// Declares the stack's parameters (in the builder's current scope) and tensors.
    pub fn new<B: Backend>(b: &mut Builder<B>, cfg: &PairStackConfig, io: PairStackIo) -> Self {
        let c = cfg.clone();
        let (r, cz) = (c.n_res, c.c_z);
        let pair_n = r * r * cz;
        let tri_shape = AttnShape {
            batch: r,
            len: r,
            heads: c.tri_heads,
            head_dim: c.tri_head_dim,
        };
        let mul = |b: &mut Builder<B>, name, dir| {
            TriangleMultiplication::new(b, name, dir, r, cz, c.tri_mul_dim)
        };
        let attn = |b: &mut Builder<B>, name| {
            GatedAttention::new(b, name, tri_shape, cz, BiasKind::OwnInput)
        };
        // Parameters in the order of the stages, so that names and the flat block
        // follow the computation.
        let (tri_out, tri_in, tri_start, tri_end) = match c.order {
            PairStackOrder::MultiplicationFirst => {
                let o = mul(b, "tri_mul_out", TriangleDirection::Outgoing);
                let i = mul(b, "tri_mul_in", TriangleDirection::Incoming);
                let s = attn(b, "tri_attn_start");
                let e = attn(b, "tri_attn_end");
                (o, i, s, e)
            }
            PairStackOrder::AttentionFirst => {
                let s = attn(b, "tri_attn_start");
                let e = attn(b, "tri_attn_end");
                let o = mul(b, "tri_mul_out", TriangleDirection::Outgoing);
                let i = mul(b, "tri_mul_in", TriangleDirection::Incoming);
                (o, i, s, e)
            }
        };
        Self {
            io,
            t_pair_mask: b.stat("t_pair_mask", r * r),
            tri_out,
            tri_in,
            tri_start,
            tri_end,
            pair_trans: Transition::new(b, "pair_transition", r * r, cz, c.transition_factor),
            z: [
                b.act("z1", pair_n),
                b.act("z2", pair_n),
                b.act("z3", pair_n),
                b.act("z4", pair_n),
            ],
            proj_z: b.act("proj_z", pair_n),
            t_z: b.act("t_z", pair_n),
            t_proj_z: b.act("t_proj_z", pair_n),
            d_proj_z: b.act("d_proj_z", pair_n),
            d_t_z: b.act("d_t_z", pair_n),
            cfg: c,
        }
    }

    fn stages(&self) -> [PairStage; 4] {
        use PairStage::*;
        match self.cfg.order {
            PairStackOrder::MultiplicationFirst => [MulOut, MulIn, AttnStart, AttnEnd],
            PairStackOrder::AttentionFirst => [AttnStart, AttnEnd, MulOut, MulIn],
        }
    }

    /// The dropout of a stage: row-wise, except column-wise around the ending node.
    fn dropout(&self, seed: Option<u64>, stage: PairStage) -> Dropout {
        let r = self.cfg.n_res;
        let shape = [r, r, self.cfg.c_z];
        let p = self.cfg.pair_dropout;
        match seed {
            Some(seed) if p > 0.0 => Dropout {
                p,
                seed: crate::backend::mix64(seed ^ stage as u64),
                shape,
                shared: if stage == PairStage::AttnEnd {
                    SharedAxis::Axis1
                } else {
                    SharedAxis::Axis0
                },
            },
            _ => Dropout {
                p: 0.0,
                seed: 0,
                shape,
                shared: SharedAxis::None,
            },
        }
    }

    /// The input of stage `k` (0..4) and of the transition (`k = 4`).
    fn stream(&self, k: usize) -> TensorId {
        if k == 0 { self.io.z_in } else { self.z[k - 1] }
    }

    /// Forward `z_in -> z_out`; `seed` seeds the dropout masks (training when `Some`).
    pub fn forward<B: Backend>(&self, be: &mut B, seed: Option<u64>) -> Result<()> {
        let (r, cz) = (self.cfg.n_res, self.cfg.c_z);
        let pm = self.io.pair_mask;
        be.transpose([1, r, r, 1], pm, self.t_pair_mask, false)?;
        for (k, stage) in self.stages().into_iter().enumerate() {
            let x = self.stream(k);
            match stage {
                PairStage::MulOut => self.tri_out.forward(be, x, Some(pm), self.proj_z)?,
                PairStage::MulIn => self.tri_in.forward(be, x, Some(pm), self.proj_z)?,
                PairStage::AttnStart => {
                    self.tri_start.forward(be, x, None, Some(pm), self.proj_z)?
                }
                PairStage::AttnEnd => {
                    be.transpose([1, r, r, cz], x, self.t_z, false)?;
                    self.tri_end.forward(
                        be,
                        self.t_z,
                        None,
                        Some(self.t_pair_mask),
                        self.t_proj_z,
                    )?;
                    be.transpose([1, r, r, cz], self.t_proj_z, self.proj_z, false)?;
                }
            }
            be.residual_dropout_fwd(&self.dropout(seed, stage), x, self.proj_z, self.z[k])?;
        }
        let x = self.stream(4);
        self.pair_trans.forward(be, x, self.proj_z)?;
        be.residual_dropout_fwd(&Dropout::off(r * r * cz), x, self.proj_z, self.io.z_out)
    }

    /// Backward: `io.d_z` goes from the output to the input gradient; parameter
    /// gradients are added. Follows the forward with the same seed.
    pub fn backward<B: Backend>(&self, be: &mut B, seed: Option<u64>) -> Result<()> {
        let (r, cz) = (self.cfg.n_res, self.cfg.c_z);
        let (dz, pm) = (self.io.d_z, self.io.pair_mask);
        // GEMMs read bf16: consumers of the f32 stream gradient get a bf16 copy.
        be.transpose([1, 1, r * r * cz, 1], dz, self.d_proj_z, false)?;
        self.pair_trans
            .backward(be, self.stream(4), self.proj_z, self.d_proj_z, dz)?;
        for (k, stage) in self.stages().into_iter().enumerate().rev() {
            let x = self.stream(k);
            be.dropout_bwd(&self.dropout(seed, stage), dz, self.d_proj_z)?;
            match stage {
                PairStage::MulOut => self.tri_out.backward(be, x, Some(pm), self.d_proj_z, dz)?,
                PairStage::MulIn => self.tri_in.backward(be, x, Some(pm), self.d_proj_z, dz)?,
                PairStage::AttnStart => self.tri_start.backward(
                    be,
                    x,
                    None,
                    Some(pm),
                    self.proj_z,
                    self.d_proj_z,
                    dz,
                    true,
                    None,
                )?,
                PairStage::AttnEnd => {
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
                }
            }
        }
        Ok(())
    }
}

/// Tensors an [`EvoformerBlock`] takes from its stack instead of declaring its
/// own: the inputs (the previous block's outputs), the stream gradients and the
/// masks (one set for the whole stack). [`EvoformerBlock::next_io`] gives the
/// next block's.
#[derive(Clone, Copy, Debug)]
pub struct BlockIo {
    /// Input MSA `[n_seq, n_res, c_m]`.
    pub m_in: TensorId,
    /// Input pair `[n_res, n_res, c_z]`.
    pub z_in: TensorId,
    /// MSA stream gradient (Stat, `[n_seq, n_res, c_m]`).
    pub d_m: TensorId,
    /// Pair stream gradient (Stat, `[n_res, n_res, c_z]`).
    pub d_z: TensorId,
    /// MSA mask `[n_seq, n_res]` (Stat).
    pub msa_mask: TensorId,
    /// Pair mask `[n_res, n_res]` (Stat).
    pub pair_mask: TensorId,
    /// The outer product mean's normalisation `[n_res, n_res]` (Stat), see [`opm_inv_norm`].
    pub opm_inv_norm: TensorId,
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
    row_attn: GatedAttention,
    col_attn: ColumnAttention,
    msa_trans: Transition,
    opm: OuterProductMean,
    pair: PairStack,
    m: [TensorId; 2],
    proj_m: TensorId,
    t_m: TensorId,
    t_proj_m: TensorId,
    d_proj_m: TensorId,
    d_t_m: TensorId,
}

impl EvoformerBlock {
    /// Plans a block: declares its parameters into `params` and its tensors on the backend.
    pub fn new<B: Backend>(
        be: &mut B,
        params: &mut ParamTable,
        name: &str,
        cfg: &BlockConfig,
    ) -> Result<Self> {
        Self::new_with_io(be, params, name, cfg, None)
    }

    /// Plans a block of a stack: with `io`, its inputs, stream gradients and masks
    /// are the given tensors (declared by the caller, of the block's sizes).
    pub fn new_with_io<B: Backend>(
        be: &mut B,
        params: &mut ParamTable,
        name: &str,
        cfg: &BlockConfig,
        io: Option<BlockIo>,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut b = Builder::new(be, params);
        Ok(Self::build(&mut b, name, cfg, io, None))
    }

    /// Plans a block of a stack that recomputes its activations: inputs,
    /// stream gradients and masks from `io`, outputs given (`(m_out, z_out)`,
    /// the next block's inputs), and every other tensor from `workspace` (the
    /// list this function returned for an identical block; `None` declares and
    /// returns it). Blocks sharing a workspace hold their internal activations
    /// only until the next one runs: [`EvoformerBlock::backward`] of such a
    /// block must follow its own [`EvoformerBlock::forward`] (run it again).
    pub fn new_in_stack<B: Backend>(
        be: &mut B,
        params: &mut ParamTable,
        name: &str,
        cfg: &BlockConfig,
        io: BlockIo,
        outputs: (TensorId, TensorId),
        workspace: Option<&[TensorId]>,
    ) -> Result<(Self, Vec<TensorId>)> {
        cfg.validate()?;
        let mut b = Builder::new(be, params);
        let build = |b: &mut Builder<B>| Self::build(b, name, cfg, Some(io), Some(outputs));
        Ok(match workspace {
            None => b.recording_tensors(build),
            Some(ws) => (b.reusing_tensors(ws, build), ws.to_vec()),
        })
    }

    /// Declares the block's parameters and tensors with a builder.
    fn build<B: Backend>(
        b: &mut Builder<B>,
        name: &str,
        cfg: &BlockConfig,
        io: Option<BlockIo>,
        outputs: Option<(TensorId, TensorId)>,
    ) -> Self {
        let c = cfg.clone();
        let (s, r, cm, cz) = (c.n_seq, c.n_res, c.c_m, c.c_z);
        let (msa_n, pair_n) = (s * r * cm, r * r * cz);
        b.scope(name, |b| {
            let io = io.unwrap_or_else(|| BlockIo {
                m_in: b.act("m_in", msa_n),
                z_in: b.act("z_in", pair_n),
                d_m: b.stat("d_m", msa_n),
                d_z: b.stat("d_z", pair_n),
                msa_mask: b.stat("msa_mask", s * r),
                pair_mask: b.stat("pair_mask", r * r),
                opm_inv_norm: b.stat("opm_inv_norm", r * r),
            });
            let msa_shape = |batch, len| AttnShape {
                batch,
                len,
                heads: c.msa_heads,
                head_dim: c.msa_head_dim,
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
            let msa_trans = Transition::new(b, "msa_transition", s * r, cm, c.transition_factor);
            let opm = OuterProductMean::new(b, "outer_product_mean", s, r, cm, c.opm_dim, cz);
            let z_opm = b.act("z_opm", pair_n);
            let (m_out, z_out) =
                outputs.unwrap_or_else(|| (b.act("m_out", msa_n), b.act("z_out", pair_n)));
            let pair = PairStack::new(
                b,
                &PairStackConfig::of_block(&c),
                PairStackIo {
                    z_in: z_opm,
                    z_out,
                    d_z: io.d_z,
                    pair_mask: io.pair_mask,
                },
            );
            Self {
                m_in: io.m_in,
                z_in: io.z_in,
                m_out,
                z_out,
                d_m: io.d_m,
                d_z: io.d_z,
                dropout_seed: None,
                msa_mask: io.msa_mask,
                pair_mask: io.pair_mask,
                opm_inv_norm: io.opm_inv_norm,
                t_msa_mask: b.stat("t_msa_mask", s * r),
                row_attn,
                col_attn,
                msa_trans,
                opm,
                pair,
                m: [b.act("m1", msa_n), b.act("m2", msa_n)],
                proj_m: b.act("proj_m", msa_n),
                t_m: b.act("t_m", msa_n),
                t_proj_m: b.act("t_proj_m", msa_n),
                d_proj_m: b.act("d_proj_m", msa_n),
                d_t_m: b.act("d_t_m", msa_n),
                cfg: c,
            }
        })
    }

    /// The tensors the next block of a stack takes: this block's outputs as its
    /// inputs, the same stream gradients and masks.
    pub fn next_io(&self) -> BlockIo {
        BlockIo {
            m_in: self.m_out,
            z_in: self.z_out,
            d_m: self.d_m,
            d_z: self.d_z,
            msa_mask: self.msa_mask,
            pair_mask: self.pair_mask,
            opm_inv_norm: self.opm_inv_norm,
        }
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
    /// Blocks chained with [`EvoformerBlock::next_io`] share their masks: setting
    /// them on one block sets them for the stack.
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

    /// The row-wise dropout of the MSA row attention.
    fn row_dropout(&self) -> Dropout {
        let shape = self.msa_dims();
        match self.dropout_seed {
            Some(seed) if self.cfg.msa_dropout > 0.0 => Dropout {
                p: self.cfg.msa_dropout,
                seed: crate::backend::mix64(seed ^ 1),
                shape,
                shared: SharedAxis::Axis0,
            },
            _ => Dropout::off(shape.iter().product()),
        }
    }

    fn msa_dims(&self) -> [usize; 3] {
        [self.cfg.n_seq, self.cfg.n_res, self.cfg.c_m]
    }

    /// Forward: `(m_in, z_in) -> (m_out, z_out)`.
    pub fn forward<B: Backend>(&self, be: &mut B) -> Result<()> {
        let [s, r, cm] = self.msa_dims();
        let cz = self.cfg.c_z;
        let (ms, ps) = (Dropout::off(s * r * cm), Dropout::off(r * r * cz));
        let [m1, m2] = self.m;
        let (proj_z, _) = self.pair_scratch();
        // The mask as keys of the column attention.
        be.transpose([1, s, r, 1], self.msa_mask, self.t_msa_mask, false)?;
        // MSA stack.
        self.row_attn.forward(
            be,
            self.m_in,
            Some(self.z_in),
            Some(self.msa_mask),
            self.proj_m,
        )?;
        be.residual_dropout_fwd(&self.row_dropout(), self.m_in, self.proj_m, m1)?;
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
            .forward(be, self.m_out, Some(self.opm_mask()), proj_z)?;
        be.residual_dropout_fwd(&ps, self.z_in, proj_z, self.pair.io.z_in)?;
        // Pair stack.
        self.pair.forward(be, self.dropout_seed)
    }

    /// The pair stack's projection and projection-gradient tensors, which the
    /// outer product mean borrows (it runs before and after the pair stack).
    fn pair_scratch(&self) -> (TensorId, TensorId) {
        (self.pair.proj_z, self.pair.d_proj_z)
    }

    /// Backward: `d_m`, `d_z` go from output to input gradients; parameter
    /// gradients are added to the gradient block. Needs the forward's tensors, so
    /// it follows the forward with the same dropout seed.
    pub fn backward<B: Backend>(&self, be: &mut B) -> Result<()> {
        let [s, r, cm] = self.msa_dims();
        let cz = self.cfg.c_z;
        let [_, m2] = self.m;
        let (dm, dz) = (self.d_m, self.d_z);
        let (proj_z, d_proj_z) = self.pair_scratch();
        // Pair stack, in reverse. Identity paths of the residuals are free: d_z is shared.
        self.pair.backward(be, self.dropout_seed)?;
        // Outer product mean: its gradient flows into the MSA output.
        be.transpose([1, 1, r * r * cz, 1], dz, d_proj_z, false)?;
        self.opm
            .backward(be, self.m_out, Some(self.opm_mask()), proj_z, d_proj_z, dm)?;
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
        be.dropout_bwd(&self.row_dropout(), dm, self.d_proj_m)?;
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
