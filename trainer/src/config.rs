//! Block configuration: every size the Evoformer and extra-MSA blocks are planned from.

use crate::error::{Result, TrainerError};
use serde::{Deserialize, Serialize};

/// Sizes and rates of one Evoformer-style block (AlphaFold2 supplement, Algorithm 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// MSA rows (N_seq, or N_extra for the extra-MSA stack).
    pub n_seq: usize,
    /// Residues (N_res).
    pub n_res: usize,
    /// MSA channels (c_m = 256, or c_e = 64 for the extra-MSA stack).
    pub c_m: usize,
    /// Pair channels (c_z = 128).
    pub c_z: usize,
    /// Heads of MSA row and column attention (8).
    pub msa_heads: usize,
    /// Head width of MSA attention (32; 8 in the extra-MSA stack).
    pub msa_head_dim: usize,
    /// Use global column attention (extra-MSA stack) instead of full column attention.
    pub global_column: bool,
    /// Channels of the outer product mean (32).
    pub opm_dim: usize,
    /// Channels of the triangle multiplicative update (128).
    pub tri_mul_dim: usize,
    /// Heads of triangle attention (4).
    pub tri_heads: usize,
    /// Head width of triangle attention (32).
    pub tri_head_dim: usize,
    /// Hidden width factor of both transitions (4).
    pub transition_factor: usize,
    /// Dropout on the MSA row attention output (0.15).
    pub msa_dropout: f32,
    /// Dropout on the triangle updates and attentions (0.25).
    pub pair_dropout: f32,
}

impl BlockConfig {
    /// The AlphaFold2 Evoformer block at the given crop sizes.
    pub fn evoformer(n_seq: usize, n_res: usize) -> Self {
        Self {
            n_seq,
            n_res,
            c_m: 256,
            c_z: 128,
            msa_heads: 8,
            msa_head_dim: 32,
            global_column: false,
            opm_dim: 32,
            tri_mul_dim: 128,
            tri_heads: 4,
            tri_head_dim: 32,
            transition_factor: 4,
            msa_dropout: 0.15,
            pair_dropout: 0.25,
        }
    }

    /// The AlphaFold2 extra-MSA block at the given sizes (c_e = 64, global column attention).
    pub fn extra_msa(n_extra: usize, n_res: usize) -> Self {
        Self {
            c_m: 64,
            msa_head_dim: 8,
            global_column: true,
            ..Self::evoformer(n_extra, n_res)
        }
    }

    /// A tiny configuration for tests (every width distinct so that shape bugs show).
    pub fn tiny(global_column: bool) -> Self {
        Self {
            n_seq: 3,
            n_res: 5,
            c_m: 8,
            c_z: 6,
            msa_heads: 2,
            msa_head_dim: 3,
            global_column,
            opm_dim: 2,
            tri_mul_dim: 4,
            tri_heads: 2,
            tri_head_dim: 2,
            transition_factor: 2,
            msa_dropout: 0.15,
            pair_dropout: 0.25,
        }
    }

    /// Checks that every size is positive and every rate in [0, 1).
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("n_seq", self.n_seq),
            ("n_res", self.n_res),
            ("c_m", self.c_m),
            ("c_z", self.c_z),
            ("msa_heads", self.msa_heads),
            ("msa_head_dim", self.msa_head_dim),
            ("opm_dim", self.opm_dim),
            ("tri_mul_dim", self.tri_mul_dim),
            ("tri_heads", self.tri_heads),
            ("tri_head_dim", self.tri_head_dim),
            ("transition_factor", self.transition_factor),
        ];
        for (field, v) in sizes {
            if v == 0 {
                return Err(TrainerError::Config {
                    field,
                    detail: "must be positive".into(),
                });
            }
        }
        for (field, p) in [
            ("msa_dropout", self.msa_dropout),
            ("pair_dropout", self.pair_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(TrainerError::Config {
                    field,
                    detail: format!("{p} is not in [0, 1)"),
                });
            }
        }
        Ok(())
    }
}
