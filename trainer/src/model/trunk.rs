//! The trunk on the backend: embedders, template embedding, extra-MSA stack,
//! Evoformer stack and the single projection (AF2 Algorithm 2 lines 1-17),
//! with forward and backward.
//!
//! Tensors chain without copies: each block's inputs are the previous block's
//! outputs, the extra-MSA stack's pair output is the Evoformer's pair input,
//! and one f32 pair gradient (`d_z`) and one MSA gradient (`d_m`) run through
//! every block of both stacks in reverse. Masks are one set per stack.

use super::config::ModelConfig;
use super::embed::{InputEmbedder, TemplateDims, TemplateEmbedder, copy};
use super::features::{self, EXTRA_MSA_FEAT, FeatureDims};
use crate::backend::{Activation, Backend, TensorId, mix64};
use crate::block::{BlockIo, EvoformerBlock};
use crate::config::BlockConfig;
use crate::error::{Result, TrainerError};
use crate::layers::{Builder, Linear, ParamTable};
use scalefold_featurize::transform::Sample;

/// Host buffers the feature builders reuse from step to step.
#[derive(Default)]
struct HostBuffers {
    feat: Vec<f32>,
    mask: Vec<f32>,
    pair_mask: Vec<f32>,
}

/// The trunk with its planned tensors.
pub struct Trunk {
    /// Padded sample sizes.
    pub dims: FeatureDims,
    /// MSA rows of the Evoformer: sample rows plus template rows.
    pub rows: usize,
    cfg: ModelConfig,
    /// Input and recycling embedder.
    pub input: InputEmbedder,
    /// Template embedding (absent when templates are off).
    pub templates: Option<TemplateEmbedder>,
    /// Extra-MSA features `[E, N, 25]` (host-written).
    pub extra_feat: TensorId,
    lin_extra: Linear,
    /// The embedded extra MSA `[E, N, c_e]` (the extra stack's input).
    pub(crate) extra_in: TensorId,
    d_e: TensorId,
    d_e_act: TensorId,
    /// Extra-MSA blocks.
    pub extra: Vec<EvoformerBlock>,
    /// Evoformer blocks.
    pub evoformer: Vec<EvoformerBlock>,
    /// The Evoformer's input MSA `[rows, N, c_m]`.
    pub m: TensorId,
    /// MSA stream gradient (Stat `[rows, N, c_m]`).
    pub d_m: TensorId,
    /// Pair stream gradient (Stat `[N, N, c_z]`), shared by every block.
    pub d_z: TensorId,
    lin_single: Linear,
    m_out_row0: TensorId,
    d_m_row0: TensorId,
    /// Single representation `[N, c_s]`.
    pub single: TensorId,
    /// Its gradient (Activation, host-written before backward).
    pub d_single: TensorId,
    /// The final pair representation `[N, N, c_z]`.
    pub pair: TensorId,
    /// The final MSA representation's sample rows `[S, N, c_m]`.
    pub msa: TensorId,
    seeds: Option<u64>,
    buf: HostBuffers,
}

/// Plans `count` chained blocks starting from `io` (updated to the next
/// block's). With `recompute`, the blocks share one workspace and each keeps
/// only its output streams.
fn plan_stack<B: Backend>(
    b: &mut Builder<B>,
    name: &str,
    cfg: &BlockConfig,
    count: usize,
    recompute: bool,
    io: &mut BlockIo,
) -> Result<Vec<EvoformerBlock>> {
    let (msa_n, pair_n) = (
        cfg.n_seq * cfg.n_res * cfg.c_m,
        cfg.n_res * cfg.n_res * cfg.c_z,
    );
    let mut blocks = Vec::with_capacity(count);
    let mut workspace: Option<Vec<TensorId>> = None;
    for l in 0..count {
        let block_name = format!("{name}.block{l}");
        let blk = if recompute {
            let outputs = (
                b.act(&format!("{block_name}.m_out"), msa_n),
                b.act(&format!("{block_name}.z_out"), pair_n),
            );
            let (blk, ws) = EvoformerBlock::new_in_stack(
                &mut *b.be,
                &mut *b.params,
                &block_name,
                cfg,
                *io,
                outputs,
                workspace.as_deref(),
            )?;
            workspace = Some(ws);
            blk
        } else {
            EvoformerBlock::new_with_io(&mut *b.be, &mut *b.params, &block_name, cfg, Some(*io))?
        };
        *io = blk.next_io();
        blocks.push(blk);
    }
    Ok(blocks)
}

/// Backward of a stack, last block first. With a shared workspace each block
/// but the last one run (whose activations are still there) runs its forward
/// again first.
fn stack_backward<B: Backend>(
    be: &mut B,
    blocks: &[EvoformerBlock],
    recompute: bool,
) -> Result<()> {
    for (k, blk) in blocks.iter().enumerate().rev() {
        if recompute && k + 1 < blocks.len() {
            blk.forward(be)?;
        }
        blk.backward(be)?;
    }
    Ok(())
}

/// The root of the trunk's dropout site seeds (each block and stage derives its
/// own from it); the per-step part of every mask is the backend's seed.
const TRUNK_DROPOUT_SITE: u64 = 0x5ca1_ef01_d000_0001;

impl Trunk {
    /// Plans the trunk: declares every parameter into `params` and every tensor.
    pub fn new<B: Backend>(
        be: &mut B,
        params: &mut ParamTable,
        cfg: &ModelConfig,
        dims: FeatureDims,
    ) -> Result<Self> {
        cfg.validate()?;
        let FeatureDims { n, s, e, t } = dims;
        let use_templates = cfg.templates && t > 0;
        let rows = s + if use_templates { t } else { 0 };
        let (c_m, c_z) = (cfg.c_m, cfg.c_z);
        let evo_cfg = cfg.evoformer_block(rows, n);
        let extra_cfg = cfg.extra_msa_block(e, n);
        evo_cfg.validate()?;
        extra_cfg.validate()?;
        let mut b = Builder::new(be, params);
        let m = b.act("trunk.m", rows * n * c_m);
        let d_m = b.stat("trunk.d_m", rows * n * c_m);
        let d_z = b.stat("trunk.d_z", n * n * c_z);
        let pair_mask = b.stat("trunk.pair_mask", n * n);
        let input = InputEmbedder::new(&mut b, n, s, c_m, c_z, m)?;
        let templates = if use_templates {
            let td = TemplateDims {
                n,
                s,
                t,
                c_m,
                c_z,
                block: cfg.template_pair_block(n),
                blocks: cfg.template_blocks,
                attn_heads: cfg.template_attn_heads,
                attn_head_dim: cfg.template_attn_head_dim,
            };
            Some(TemplateEmbedder::new(&mut b, &td, m, d_m, pair_mask)?)
        } else {
            None
        };
        let z_embedded = templates.as_ref().map_or(input.z_out, |t| t.z_out);
        let c_e = cfg.c_e;
        let (extra_feat, lin_extra, extra_in, d_e, d_e_act, extra_mask, extra_opm) =
            b.scope("extra_msa", |b| {
                (
                    b.act("feat", e * n * EXTRA_MSA_FEAT),
                    Linear::new(b, "lin_embed", EXTRA_MSA_FEAT, c_e, true, Activation::None),
                    b.act("embedded", e * n * c_e),
                    b.stat("d_e", e * n * c_e),
                    b.act("d_e_act", e * n * c_e),
                    b.stat("msa_mask", e * n),
                    b.stat("opm_inv_norm", n * n),
                )
            });
        let (evo_mask, evo_opm) = (
            b.stat("trunk.msa_mask", rows * n),
            b.stat("trunk.opm_inv_norm", n * n),
        );
        let mut io = BlockIo {
            m_in: extra_in,
            z_in: z_embedded,
            d_m: d_e,
            d_z,
            msa_mask: extra_mask,
            pair_mask,
            opm_inv_norm: extra_opm,
        };
        let recompute = cfg.recompute_blocks;
        let extra = plan_stack(
            &mut b,
            "extra_msa",
            &extra_cfg,
            cfg.extra_msa_blocks,
            recompute,
            &mut io,
        )?;
        io = BlockIo {
            m_in: m,
            z_in: io.z_in,
            d_m,
            d_z,
            msa_mask: evo_mask,
            pair_mask,
            opm_inv_norm: evo_opm,
        };
        let evoformer = plan_stack(
            &mut b,
            "evoformer",
            &evo_cfg,
            cfg.evoformer_blocks,
            recompute,
            &mut io,
        )?;
        let (m_out, pair) = (io.m_in, io.z_in);
        let m_out_row0 = b.be.view(m_out, 0, n * c_m)?;
        let msa = b.be.view(m_out, 0, s * n * c_m)?;
        let d_m_row0 = b.be.view(d_m, 0, n * c_m)?;
        let (lin_single, single, d_single) = b.scope("single", |b| {
            (
                Linear::new(b, "lin", c_m, cfg.c_s, true, Activation::None),
                b.act("out", n * cfg.c_s),
                b.act("d_out", n * cfg.c_s),
            )
        });
        Ok(Self {
            dims,
            rows,
            cfg: cfg.clone(),
            input,
            templates,
            extra_feat,
            lin_extra,
            extra_in,
            d_e,
            d_e_act,
            extra,
            evoformer,
            m,
            d_m,
            d_z,
            lin_single,
            m_out_row0,
            d_m_row0,
            single,
            d_single,
            pair,
            msa,
            seeds: None,
            buf: HostBuffers::default(),
        })
    }

    /// Writes constants (after `materialize`) and clears the recycled inputs.
    pub fn init_constants<B: Backend>(&self, be: &mut B) -> Result<()> {
        for blk in self.extra.iter().chain(&self.evoformer) {
            blk.init_constants(be)?;
        }
        self.reset_recycling(be)
    }

    /// Zeroes the recycled inputs (the first iteration of a step).
    pub fn reset_recycling<B: Backend>(&self, be: &mut B) -> Result<()> {
        be.fill(self.input.m_prev, 0.0)?;
        be.fill(self.input.z_prev, 0.0)
    }

    /// Uploads one iteration's features and masks: recycling iteration `iter`
    /// of `sample`, with the previous iteration's predicted pseudo-beta positions.
    pub fn set_inputs<B: Backend>(
        &mut self,
        be: &mut B,
        sample: &Sample,
        iter: usize,
        prev_pseudo_beta: Option<&[[f32; 3]]>,
    ) -> Result<()> {
        let d = self.dims;
        features::check_sample(sample, d, iter + 1)?;
        if let Some(pb) = prev_pseudo_beta
            && pb.len() != d.n
        {
            return Err(TrainerError::Shape {
                op: "Trunk::set_inputs",
                detail: format!("{} recycled positions for {} residues", pb.len(), d.n),
            });
        }
        let rec = &sample.recycles[iter];
        let buf = &mut self.buf;
        features::pair_features(sample, prev_pseudo_beta, &mut buf.feat);
        be.write(self.input.pair_feat, &buf.feat)?;
        features::msa_features(sample, rec, d.s, &mut buf.feat);
        be.write(self.input.msa_feat, &buf.feat)?;
        features::extra_msa_features(rec, &mut buf.feat);
        be.write(self.extra_feat, &buf.feat)?;
        features::pair_mask(sample, &mut buf.pair_mask);
        let t_rows = if let Some(te) = &self.templates {
            features::template_pair_features(
                sample,
                d.t,
                self.cfg.template_unit_vectors,
                &mut buf.feat,
            );
            be.write(te.pair_feat, &buf.feat)?;
            features::template_angle_features(sample, d.t, &mut buf.feat);
            be.write(te.angle_feat, &buf.feat)?;
            be.write(te.key_bias, &features::template_key_bias(sample))?;
            let any = sample.template_mask.iter().any(|&m| m > 0.0);
            be.fill(te.any_template, if any { 1.0 } else { 0.0 })?;
            d.t
        } else {
            0
        };
        features::msa_mask(sample, rec, t_rows, &mut buf.mask);
        self.evoformer[0].set_masks(be, &buf.mask, &buf.pair_mask)?;
        self.extra[0].set_masks(be, &rec.extra_msa_mask, &buf.pair_mask)
    }

    /// Sets every block's dropout site seed (fixed: the step's and iteration's
    /// part is the backend's [`Backend::set_dropout_seed`]), or turns dropout off.
    fn set_seeds(&mut self, dropout: bool) {
        let seed = dropout.then_some(TRUNK_DROPOUT_SITE);
        self.seeds = seed;
        for (k, blk) in self
            .extra
            .iter_mut()
            .chain(self.evoformer.iter_mut())
            .enumerate()
        {
            blk.dropout_seed = seed.map(|s| mix64(s ^ mix64(0xb10c_0000 + k as u64)));
        }
    }

    fn template_seed(&self) -> Option<u64> {
        self.seeds.map(|s| mix64(s ^ 0x7e3a_11a7e))
    }

    /// Forward of one iteration, with dropout (training) or without. The masks
    /// come from the backend's dropout seed ([`Backend::set_dropout_seed`]): set
    /// a different one per step and iteration.
    pub fn forward<B: Backend>(&mut self, be: &mut B, dropout: bool) -> Result<()> {
        self.set_seeds(dropout);
        let n = self.dims.n;
        self.input.forward(be)?;
        if let Some(te) = &self.templates {
            te.forward(be, self.input.z_out, self.template_seed())?;
        }
        let e_rows = self.dims.e * n;
        self.lin_extra
            .forward(be, e_rows, self.extra_feat, self.extra_in)?;
        for blk in self.extra.iter().chain(&self.evoformer) {
            blk.forward(be)?;
        }
        self.lin_single.forward(be, n, self.m_out_row0, self.single)
    }

    /// Keeps this iteration's outputs for the next one (Algorithm 32's inputs:
    /// MSA row 0 and the pair representation).
    pub fn save_recycling<B: Backend>(&self, be: &mut B) -> Result<()> {
        let (n, c_m, c_z) = (self.dims.n, self.cfg.c_m, self.cfg.c_z);
        copy(be, n * c_m, self.m_out_row0, self.input.m_prev, false)?;
        copy(be, n * n * c_z, self.pair, self.input.z_prev, false)
    }

    /// Writes the gradients of the outputs (single `[N, c_s]`, pair `[N, N, c_z]`,
    /// MSA sample rows `[S, N, c_m]`) before [`Trunk::backward`].
    pub fn write_output_grads<B: Backend>(
        &mut self,
        be: &mut B,
        single: &[f32],
        pair: &[f32],
        msa: &[f32],
    ) -> Result<()> {
        let (n, s) = (self.dims.n, self.dims.s);
        let (c_m, c_z, c_s) = (self.cfg.c_m, self.cfg.c_z, self.cfg.c_s);
        for (what, got, want) in [
            ("single", single.len(), n * c_s),
            ("pair", pair.len(), n * n * c_z),
            ("msa", msa.len(), s * n * c_m),
        ] {
            if got != want {
                return Err(TrainerError::Shape {
                    op: "Trunk::write_output_grads",
                    detail: format!("{what} gradient has {got} values, expected {want}"),
                });
            }
        }
        be.write(self.d_single, single)?;
        be.write(self.d_z, pair)?;
        let full = &mut self.buf.feat;
        full.clear();
        full.extend_from_slice(msa);
        full.resize(self.rows * n * c_m, 0.0);
        be.write(self.d_m, full)
    }

    /// Backward of the last forward (same seeds): adds every trunk parameter's
    /// gradient. The output gradients come from [`Trunk::write_output_grads`].
    pub fn backward<B: Backend>(&self, be: &mut B) -> Result<()> {
        let n = self.dims.n;
        self.lin_single.backward(
            be,
            n,
            self.m_out_row0,
            self.single,
            self.d_single,
            Some(self.d_m_row0),
            true,
        )?;
        // The extra stack's MSA output feeds nothing after it.
        be.fill(self.d_e, 0.0)?;
        let recompute = self.cfg.recompute_blocks;
        stack_backward(be, &self.evoformer, recompute)?;
        stack_backward(be, &self.extra, recompute)?;
        let e_rows = self.dims.e * n;
        copy(be, e_rows * self.cfg.c_e, self.d_e, self.d_e_act, false)?;
        self.lin_extra.backward(
            be,
            e_rows,
            self.extra_feat,
            self.extra_in,
            self.d_e_act,
            None,
            false,
        )?;
        if let Some(te) = &self.templates {
            te.backward(be, self.input.z_out, self.d_z, self.template_seed())?;
        }
        self.input.backward(be, self.d_z, self.d_m)
    }
}
