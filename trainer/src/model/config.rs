//! The model's architecture sizes: widths, block counts, heads and rates of
//! every trunk module, plus the host part's sizes and loss weights. Crop sizes
//! (residues, MSA rows, extra rows, templates) come from
//! [`scalefold_featurize::transform::SampleConfig`].

use crate::block::{PairStackConfig, PairStackOrder};
use crate::config::BlockConfig;
use crate::error::{Result, TrainerError};
use crate::structure::{HostDims, LossWeights};
use serde::{Deserialize, Serialize};

/// Architecture sizes of AlphaFold2 (supplement 1.5-1.8, Algorithm 2 and the
/// per-module algorithms), with the host part's sizes and the loss weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// MSA channels (256).
    pub c_m: usize,
    /// Pair channels (128).
    pub c_z: usize,
    /// Extra-MSA channels (64).
    pub c_e: usize,
    /// Template pair channels (64).
    pub c_t: usize,
    /// Single channels (384).
    pub c_s: usize,
    /// Evoformer blocks (48).
    pub evoformer_blocks: usize,
    /// Extra-MSA blocks (4).
    pub extra_msa_blocks: usize,
    /// Template pair stack blocks (2).
    pub template_blocks: usize,
    /// Heads of MSA row and column attention, Evoformer and extra-MSA stack (8).
    pub msa_heads: usize,
    /// Head width of the Evoformer's MSA attentions (32).
    pub msa_head_dim: usize,
    /// Head width of the extra-MSA stack's MSA attentions (8).
    pub extra_msa_head_dim: usize,
    /// Channels of the outer product mean (32).
    pub opm_dim: usize,
    /// Channels of the triangle multiplications of the Evoformer and extra-MSA stacks (128).
    pub tri_mul_dim: usize,
    /// Heads of triangle attention (4).
    pub tri_heads: usize,
    /// Head width of triangle attention (32).
    pub tri_head_dim: usize,
    /// Hidden width factor of the MSA and pair transitions (4).
    pub transition_factor: usize,
    /// Channels of the template stack's triangle multiplications (64).
    pub template_tri_mul_dim: usize,
    /// Heads of the template stack's triangle attentions (4).
    pub template_tri_heads: usize,
    /// Head width of the template stack's triangle attentions (16).
    pub template_tri_head_dim: usize,
    /// Hidden width factor of the template stack's pair transition (2).
    pub template_transition_factor: usize,
    /// Heads of the template pointwise attention (4).
    pub template_attn_heads: usize,
    /// Head width of the template pointwise attention (16).
    pub template_attn_head_dim: usize,
    /// Include the template backbone unit vectors in the template pair features.
    /// AlphaFold2 trained with them off (`use_template_unit_vector: False`): the
    /// three channels are then zeros.
    pub template_unit_vectors: bool,
    /// Dropout of MSA row attention (0.15).
    pub msa_dropout: f32,
    /// Dropout of the triangle updates in every pair stack (0.25).
    pub pair_dropout: f32,
    /// Use the templates (template pair stack, pointwise attention, template
    /// rows of the MSA). Off, the MSA has only the sample's MSA rows.
    pub templates: bool,
    /// Recompute each Evoformer and extra-MSA block's activations in the
    /// backward pass (AF2's gradient checkpointing per block): the blocks of a
    /// stack share one workspace and keep only their input streams, at the
    /// cost of one more forward per block. Off, every block keeps its own.
    #[serde(default = "default_true")]
    pub recompute_blocks: bool,
    /// Sizes of the host part (structure module, heads); its `c_s`, `c_z`,
    /// `c_m` equal this config's.
    pub host: HostDims,
    /// Loss weights.
    pub losses: LossWeights,
}

fn default_true() -> bool {
    true
}

impl ModelConfig {
    /// AlphaFold2 model 1 as in initial training (supplement Table 4, 1.11).
    pub fn initial_training() -> Self {
        Self {
            c_m: 256,
            c_z: 128,
            c_e: 64,
            c_t: 64,
            c_s: 384,
            evoformer_blocks: 48,
            extra_msa_blocks: 4,
            template_blocks: 2,
            msa_heads: 8,
            msa_head_dim: 32,
            extra_msa_head_dim: 8,
            opm_dim: 32,
            tri_mul_dim: 128,
            tri_heads: 4,
            tri_head_dim: 32,
            transition_factor: 4,
            template_tri_mul_dim: 64,
            template_tri_heads: 4,
            template_tri_head_dim: 16,
            template_transition_factor: 2,
            template_attn_heads: 4,
            template_attn_head_dim: 16,
            template_unit_vectors: false,
            msa_dropout: 0.15,
            pair_dropout: 0.25,
            templates: true,
            recompute_blocks: true,
            host: HostDims::af2(),
            losses: LossWeights::initial_training(),
        }
    }

    /// Fine-tuning: the same architecture, the fine-tuning loss weights
    /// (violation and experimentally-resolved losses on).
    pub fn fine_tuning() -> Self {
        Self {
            losses: LossWeights::fine_tuning(),
            ..Self::initial_training()
        }
    }

    /// A tiny model for CPU tests and the demo: every width distinct and small,
    /// 2 Evoformer blocks, 1 extra-MSA block, 1 template block.
    pub fn tiny() -> Self {
        let (c_m, c_z, c_s) = (8, 6, 10);
        Self {
            c_m,
            c_z,
            c_e: 5,
            c_t: 4,
            c_s,
            evoformer_blocks: 2,
            extra_msa_blocks: 1,
            template_blocks: 1,
            msa_heads: 2,
            msa_head_dim: 3,
            extra_msa_head_dim: 2,
            opm_dim: 2,
            tri_mul_dim: 4,
            tri_heads: 2,
            tri_head_dim: 2,
            transition_factor: 2,
            template_tri_mul_dim: 3,
            template_tri_heads: 2,
            template_tri_head_dim: 2,
            template_transition_factor: 2,
            template_attn_heads: 2,
            template_attn_head_dim: 3,
            template_unit_vectors: false,
            msa_dropout: 0.15,
            pair_dropout: 0.25,
            templates: true,
            recompute_blocks: true,
            host: HostDims {
                c_s,
                c_z,
                c_m,
                ..HostDims::tiny()
            },
            losses: LossWeights::initial_training(),
        }
    }

    /// Checks every size and rate, and that the host part's widths match.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, detail: String| Err(TrainerError::Config { field, detail });
        let sizes = [
            ("c_m", self.c_m),
            ("c_z", self.c_z),
            ("c_e", self.c_e),
            ("c_t", self.c_t),
            ("c_s", self.c_s),
            ("evoformer_blocks", self.evoformer_blocks),
            ("extra_msa_blocks", self.extra_msa_blocks),
            ("msa_heads", self.msa_heads),
            ("msa_head_dim", self.msa_head_dim),
            ("extra_msa_head_dim", self.extra_msa_head_dim),
            ("opm_dim", self.opm_dim),
            ("tri_mul_dim", self.tri_mul_dim),
            ("tri_heads", self.tri_heads),
            ("tri_head_dim", self.tri_head_dim),
            ("transition_factor", self.transition_factor),
            ("template_tri_mul_dim", self.template_tri_mul_dim),
            ("template_tri_heads", self.template_tri_heads),
            ("template_tri_head_dim", self.template_tri_head_dim),
            (
                "template_transition_factor",
                self.template_transition_factor,
            ),
            ("template_attn_heads", self.template_attn_heads),
            ("template_attn_head_dim", self.template_attn_head_dim),
        ];
        for (field, v) in sizes {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if self.templates && self.template_blocks == 0 {
            return bad(
                "template_blocks",
                "must be positive when templates are on".into(),
            );
        }
        for (field, p) in [
            ("msa_dropout", self.msa_dropout),
            ("pair_dropout", self.pair_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(field, format!("{p} is not in [0, 1)"));
            }
        }
        for (field, host, trunk) in [
            ("host.c_s", self.host.c_s, self.c_s),
            ("host.c_z", self.host.c_z, self.c_z),
            ("host.c_m", self.host.c_m, self.c_m),
        ] {
            if host != trunk {
                return bad(
                    field,
                    format!("{host}, but the trunk's width is {trunk}: they must match"),
                );
            }
        }
        self.host.validate()
    }

    /// The Evoformer block over `n_seq` MSA rows (sample rows plus template rows).
    pub fn evoformer_block(&self, n_seq: usize, n_res: usize) -> BlockConfig {
        BlockConfig {
            n_seq,
            n_res,
            c_m: self.c_m,
            c_z: self.c_z,
            msa_heads: self.msa_heads,
            msa_head_dim: self.msa_head_dim,
            global_column: false,
            opm_dim: self.opm_dim,
            tri_mul_dim: self.tri_mul_dim,
            tri_heads: self.tri_heads,
            tri_head_dim: self.tri_head_dim,
            transition_factor: self.transition_factor,
            msa_dropout: self.msa_dropout,
            pair_dropout: self.pair_dropout,
        }
    }

    /// The extra-MSA block (c_e channels, global column attention).
    pub fn extra_msa_block(&self, n_extra: usize, n_res: usize) -> BlockConfig {
        BlockConfig {
            c_m: self.c_e,
            msa_head_dim: self.extra_msa_head_dim,
            global_column: true,
            ..self.evoformer_block(n_extra, n_res)
        }
    }

    /// One block of the template pair stack (Algorithm 16: attentions first).
    pub fn template_pair_block(&self, n_res: usize) -> PairStackConfig {
        PairStackConfig {
            n_res,
            c_z: self.c_t,
            tri_mul_dim: self.template_tri_mul_dim,
            tri_heads: self.template_tri_heads,
            tri_head_dim: self.template_tri_head_dim,
            transition_factor: self.template_transition_factor,
            pair_dropout: self.pair_dropout,
            order: PairStackOrder::AttentionFirst,
        }
    }
}
