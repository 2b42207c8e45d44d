//! Host-side input features of the trunk, built from a [`Sample`] (and the
//! previous recycling iteration's predicted positions) as flat f32 arrays that
//! the embedders' GEMMs read.
//!
//! Each embedder sums several linear maps of different features (AF2
//! Algorithms 3, 4, 32; supplement 1.7). A linear map of a concatenation is the
//! sum of the linear maps of its parts, and the parts' biases add up to one
//! bias: so the features are concatenated here, once per step on the host, and
//! each embedder is ONE `Linear` on the backend. The channel layouts:
//!
//! - pair `[N, N, 124]`: `target_feat_i (22) | target_feat_j (22) |
//!   relpos one-hot (65) | recycled pseudo-beta distogram one-hot (15)`;
//! - MSA `[S, N, 71]`: `msa_feat (49) | target_feat_i (22)`;
//! - extra MSA `[E, N, 25]`: `one-hot (23) | has_deletion | deletion_value`;
//! - template pair `[T, N, N, 88]`: `distogram (39) | pseudo-beta mask pair |
//!   aatype_j one-hot (22) | aatype_i one-hot (22) | unit vector (3) |
//!   backbone mask pair`, all times the backbone mask pair (as AlphaFold2);
//! - template angle `[T, N, 57]`: `aatype one-hot (22) | torsion sin/cos (14) |
//!   alternative torsion sin/cos (14) | torsion mask (7)`.

use crate::error::{Result, TrainerError};
use scalefold_featurize::transform::{
    MSA_FEAT_CHANNELS, RecycleFeatures, Sample, SampleConfig, TARGET_FEAT_CHANNELS,
};

/// Largest |i - j| the relative position encoding tells apart (Algorithm 4).
pub const MAX_RELATIVE_POSITION: i32 = 32;
/// Bins of the relative position one-hot: `2 * 32 + 1`.
pub const RELPOS_BINS: usize = 2 * MAX_RELATIVE_POSITION as usize + 1;
/// Bins of the recycled pseudo-beta distogram (Algorithm 32): lower edges
/// 3.25 ..= 20.75 Å, the last bin open above.
pub const RECYCLE_DGRAM: DistogramBins = DistogramBins {
    first: 3.25,
    last: 20.75,
    bins: 15,
};
/// Bins of the template distogram (supplement 1.7.1): 3.25 ..= 50.75 Å.
pub const TEMPLATE_DGRAM: DistogramBins = DistogramBins {
    first: 3.25,
    last: 50.75,
    bins: 39,
};
/// Channels of the pair features.
pub const PAIR_FEAT: usize = 2 * TARGET_FEAT_CHANNELS + RELPOS_BINS + RECYCLE_DGRAM.bins;
/// Channels of the MSA features.
pub const MSA_FEAT: usize = MSA_FEAT_CHANNELS + TARGET_FEAT_CHANNELS;
/// Classes of the extra-MSA one-hot (20 amino acids, unknown, gap, mask).
pub const EXTRA_MSA_CLASSES: usize = 23;
/// Channels of the extra-MSA features.
pub const EXTRA_MSA_FEAT: usize = EXTRA_MSA_CLASSES + 2;
/// Classes of the template residue one-hot (21 types and gap).
pub const TEMPLATE_AATYPE_CLASSES: usize = 22;
/// Channels of the template pair features.
pub const TEMPLATE_PAIR_FEAT: usize = TEMPLATE_DGRAM.bins + 1 + 2 * TEMPLATE_AATYPE_CLASSES + 3 + 1;
/// Torsions per residue (omega, phi, psi, chi 1-4).
const TORSIONS: usize = 7;
/// Channels of the template angle features.
pub const TEMPLATE_ANGLE_FEAT: usize = TEMPLATE_AATYPE_CLASSES + 4 * TORSIONS + TORSIONS;
/// The torsion whose mask marks a template residue as present in the MSA (psi).
const PSI: usize = 2;
/// atom37 slots of N, CA, C.
const ATOM_N: usize = 0;
const ATOM_CA: usize = 1;
const ATOM_C: usize = 2;
/// atom14 slots of CA and CB.
const ATOM14_CA: usize = 1;
const ATOM14_CB: usize = 4;
/// Residue type of glycine (its pseudo-beta is CA).
const GLYCINE: u8 = scalefold_featurize::residue_constants::restype_index(b'G');

/// Distogram bins with lower edges evenly spaced from `first` to `last`; a
/// distance falls in bin `k` when `lower_k < d < lower_{k+1}` (the last bin is
/// open above); a distance at or below `first` falls in no bin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistogramBins {
    /// Lowest edge, Å.
    pub first: f32,
    /// Highest lower edge, Å.
    pub last: f32,
    /// Number of bins.
    pub bins: usize,
}

impl DistogramBins {
    /// The bin of a squared distance, if any (compared as squares, as AlphaFold2).
    pub fn bin(&self, d2: f32) -> Option<usize> {
        let step = (self.last - self.first) / (self.bins - 1) as f32;
        (0..self.bins).find(|&k| {
            let lo = self.first + k as f32 * step;
            let above = d2 > lo * lo;
            let below = k + 1 == self.bins || {
                let hi = lo + step;
                d2 < hi * hi
            };
            above && below
        })
    }
}

/// The sample's padded sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureDims {
    /// Residues (`crop_size`).
    pub n: usize,
    /// MSA rows of the sample (`num_msa_rows`).
    pub s: usize,
    /// Extra-MSA rows.
    pub e: usize,
    /// Template slots.
    pub t: usize,
}

impl FeatureDims {
    /// The sizes a sample config produces.
    pub fn of(cfg: &SampleConfig) -> Self {
        Self {
            n: cfg.crop_size,
            s: cfg.num_msa_rows(),
            e: cfg.max_extra_msa,
            t: cfg.max_templates,
        }
    }
}

fn shape_err(field: &str, got: usize, want: usize) -> TrainerError {
    TrainerError::Shape {
        op: "model input features",
        detail: format!("sample field {field} has {got} values, expected {want}"),
    }
}

/// Checks that every sample array the trunk reads has the length `d` implies,
/// and that the sample holds at least `recycles` recycling iterations.
pub fn check_sample(sample: &Sample, d: FeatureDims, recycles: usize) -> Result<()> {
    let (n, s, e, t) = (d.n, d.s, d.e, d.t);
    let lens = [
        ("aatype", sample.aatype.len(), n),
        ("residue_index", sample.residue_index.len(), n),
        ("seq_mask", sample.seq_mask.len(), n),
        (
            "target_feat",
            sample.target_feat.len(),
            n * TARGET_FEAT_CHANNELS,
        ),
        ("template_aatype", sample.template_aatype.len(), t * n),
        (
            "template_all_atom_positions",
            sample.template_all_atom_positions.len(),
            t * n * 37 * 3,
        ),
        (
            "template_all_atom_mask",
            sample.template_all_atom_mask.len(),
            t * n * 37,
        ),
        ("template_mask", sample.template_mask.len(), t),
        (
            "template_pseudo_beta",
            sample.template_pseudo_beta.len(),
            t * n * 3,
        ),
        (
            "template_pseudo_beta_mask",
            sample.template_pseudo_beta_mask.len(),
            t * n,
        ),
        (
            "template_torsion_angles_sin_cos",
            sample.template_torsion_angles_sin_cos.len(),
            t * n * TORSIONS * 2,
        ),
        (
            "template_alt_torsion_angles_sin_cos",
            sample.template_alt_torsion_angles_sin_cos.len(),
            t * n * TORSIONS * 2,
        ),
        (
            "template_torsion_angles_mask",
            sample.template_torsion_angles_mask.len(),
            t * n * TORSIONS,
        ),
    ];
    for (field, got, want) in lens {
        if got != want {
            return Err(shape_err(field, got, want));
        }
    }
    if sample.recycles.len() < recycles {
        return Err(TrainerError::Shape {
            op: "model input features",
            detail: format!(
                "the sample holds {} recycling iterations, the step needs {recycles}",
                sample.recycles.len()
            ),
        });
    }
    for (k, r) in sample.recycles.iter().take(recycles).enumerate() {
        let lens = [
            ("msa_feat", r.msa_feat.len(), s * n * MSA_FEAT_CHANNELS),
            ("msa_mask", r.msa_mask.len(), s * n),
            ("true_msa", r.true_msa.len(), s * n),
            ("bert_mask", r.bert_mask.len(), s * n),
            ("extra_msa", r.extra_msa.len(), e * n),
            ("extra_has_deletion", r.extra_has_deletion.len(), e * n),
            ("extra_deletion_value", r.extra_deletion_value.len(), e * n),
            ("extra_msa_mask", r.extra_msa_mask.len(), e * n),
        ];
        for (field, got, want) in lens {
            if got != want {
                return Err(shape_err(&format!("recycles[{k}].{field}"), got, want));
            }
        }
    }
    Ok(())
}

fn sq_dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|k| (a[k] - b[k]) * (a[k] - b[k])).sum()
}

/// Pair features `[N, N, PAIR_FEAT]` (layout in the module doc); `prev_pseudo_beta`
/// is the previous iteration's predicted pseudo-beta per residue (none on the
/// first iteration: the distogram part is zero, as AlphaFold2's zero positions give).
pub fn pair_features(sample: &Sample, prev_pseudo_beta: Option<&[[f32; 3]]>, out: &mut Vec<f32>) {
    let n = sample.aatype.len();
    let tf = TARGET_FEAT_CHANNELS;
    out.clear();
    out.resize(n * n * PAIR_FEAT, 0.0);
    for i in 0..n {
        for j in 0..n {
            let row = &mut out[(i * n + j) * PAIR_FEAT..][..PAIR_FEAT];
            row[..tf].copy_from_slice(&sample.target_feat[i * tf..][..tf]);
            row[tf..2 * tf].copy_from_slice(&sample.target_feat[j * tf..][..tf]);
            let d = (sample.residue_index[i] - sample.residue_index[j])
                .clamp(-MAX_RELATIVE_POSITION, MAX_RELATIVE_POSITION);
            row[2 * tf + (d + MAX_RELATIVE_POSITION) as usize] = 1.0;
            if let Some(pb) = prev_pseudo_beta
                && let Some(k) = RECYCLE_DGRAM.bin(sq_dist(pb[i], pb[j]))
            {
                row[2 * tf + RELPOS_BINS + k] = 1.0;
            }
        }
    }
}

/// MSA features `[S, N, MSA_FEAT]` of one recycling iteration.
pub fn msa_features(sample: &Sample, recycle: &RecycleFeatures, s: usize, out: &mut Vec<f32>) {
    let n = sample.aatype.len();
    let (mf, tf) = (MSA_FEAT_CHANNELS, TARGET_FEAT_CHANNELS);
    out.clear();
    out.resize(s * n * MSA_FEAT, 0.0);
    for r in 0..s {
        for i in 0..n {
            let row = &mut out[(r * n + i) * MSA_FEAT..][..MSA_FEAT];
            row[..mf].copy_from_slice(&recycle.msa_feat[(r * n + i) * mf..][..mf]);
            row[mf..].copy_from_slice(&sample.target_feat[i * tf..][..tf]);
        }
    }
}

/// Extra-MSA features `[E, N, EXTRA_MSA_FEAT]` (Algorithm 2 line 13).
pub fn extra_msa_features(recycle: &RecycleFeatures, out: &mut Vec<f32>) {
    let rows = recycle.extra_msa.len();
    out.clear();
    out.resize(rows * EXTRA_MSA_FEAT, 0.0);
    for (k, &aa) in recycle.extra_msa.iter().enumerate() {
        let row = &mut out[k * EXTRA_MSA_FEAT..][..EXTRA_MSA_FEAT];
        row[(aa as usize).min(EXTRA_MSA_CLASSES - 1)] = 1.0;
        row[EXTRA_MSA_CLASSES] = recycle.extra_has_deletion[k];
        row[EXTRA_MSA_CLASSES + 1] = recycle.extra_deletion_value[k];
    }
}

fn atom(pos: &[f32], slot: usize) -> [f32; 3] {
    [pos[slot * 3], pos[slot * 3 + 1], pos[slot * 3 + 2]]
}

/// The backbone frame of a residue from N, CA, C (Algorithm 21): rotation
/// columns `e1, e2, e3` (row-major `[3][3]`, `R[r][c]`) and the origin CA.
fn backbone_frame(n: [f32; 3], ca: [f32; 3], c: [f32; 3]) -> ([[f32; 3]; 3], [f32; 3]) {
    let sub = |a: [f32; 3], b: [f32; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let dot = |a: [f32; 3], b: [f32; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let unit = |a: [f32; 3]| {
        let l = (dot(a, a) + 1e-8).sqrt();
        [a[0] / l, a[1] / l, a[2] / l]
    };
    let v1 = sub(c, ca);
    let v2 = sub(n, ca);
    let e1 = unit(v1);
    let p = dot(e1, v2);
    let e2 = unit([v2[0] - p * e1[0], v2[1] - p * e1[1], v2[2] - p * e1[2]]);
    let e3 = [
        e1[1] * e2[2] - e1[2] * e2[1],
        e1[2] * e2[0] - e1[0] * e2[2],
        e1[0] * e2[1] - e1[1] * e2[0],
    ];
    let mut r = [[0.0; 3]; 3];
    for k in 0..3 {
        r[k] = [e1[k], e2[k], e3[k]];
    }
    (r, ca)
}

/// Template pair features `[T, N, N, TEMPLATE_PAIR_FEAT]` (supplement 1.7.1);
/// with `unit_vectors` off the three unit-vector channels are zero (AlphaFold2's
/// setting).
pub fn template_pair_features(sample: &Sample, t: usize, unit_vectors: bool, out: &mut Vec<f32>) {
    let n = sample.aatype.len();
    let f = TEMPLATE_PAIR_FEAT;
    let nb = TEMPLATE_DGRAM.bins;
    let ac = TEMPLATE_AATYPE_CLASSES;
    out.clear();
    out.resize(t * n * n * f, 0.0);
    for tt in 0..t {
        let pos = |i: usize| &sample.template_all_atom_positions[(tt * n + i) * 37 * 3..][..37 * 3];
        let amask = |i: usize, a: usize| sample.template_all_atom_mask[(tt * n + i) * 37 + a];
        let bb_mask: Vec<f32> = (0..n)
            .map(|i| amask(i, ATOM_N) * amask(i, ATOM_CA) * amask(i, ATOM_C))
            .collect();
        let frames: Vec<_> = (0..n)
            .map(|i| {
                backbone_frame(
                    atom(pos(i), ATOM_N),
                    atom(pos(i), ATOM_CA),
                    atom(pos(i), ATOM_C),
                )
            })
            .collect();
        let pb = |i: usize| atom(&sample.template_pseudo_beta[(tt * n) * 3..], i);
        let pbm = |i: usize| sample.template_pseudo_beta_mask[tt * n + i];
        let aa = |i: usize| (sample.template_aatype[tt * n + i] as usize).min(ac - 1);
        for i in 0..n {
            for j in 0..n {
                let bb2 = bb_mask[i] * bb_mask[j];
                if bb2 == 0.0 {
                    continue; // the whole feature is multiplied by the backbone mask pair
                }
                let row = &mut out[((tt * n + i) * n + j) * f..][..f];
                if let Some(k) = TEMPLATE_DGRAM.bin(sq_dist(pb(i), pb(j))) {
                    row[k] = 1.0;
                }
                row[nb] = pbm(i) * pbm(j);
                row[nb + 1 + aa(j)] = 1.0;
                row[nb + 1 + ac + aa(i)] = 1.0;
                if unit_vectors {
                    // CA_j in the frame of residue i: R_i^T (CA_j - CA_i), normalised.
                    let (r, o) = frames[i];
                    let caj = frames[j].1;
                    let d = [caj[0] - o[0], caj[1] - o[1], caj[2] - o[2]];
                    let local: [f32; 3] =
                        std::array::from_fn(|c| (0..3).map(|k| r[k][c] * d[k]).sum());
                    let inv = 1.0 / (1e-6 + local.iter().map(|x| x * x).sum::<f32>()).sqrt();
                    for c in 0..3 {
                        row[nb + 1 + 2 * ac + c] = local[c] * inv;
                    }
                }
                row[f - 1] = 1.0;
            }
        }
    }
}

/// Template angle features `[T, N, TEMPLATE_ANGLE_FEAT]` (supplement Table 1).
pub fn template_angle_features(sample: &Sample, t: usize, out: &mut Vec<f32>) {
    let n = sample.aatype.len();
    let f = TEMPLATE_ANGLE_FEAT;
    let ac = TEMPLATE_AATYPE_CLASSES;
    let tw = TORSIONS * 2;
    out.clear();
    out.resize(t * n * f, 0.0);
    for k in 0..t * n {
        let row = &mut out[k * f..][..f];
        row[(sample.template_aatype[k] as usize).min(ac - 1)] = 1.0;
        row[ac..ac + tw].copy_from_slice(&sample.template_torsion_angles_sin_cos[k * tw..][..tw]);
        row[ac + tw..ac + 2 * tw]
            .copy_from_slice(&sample.template_alt_torsion_angles_sin_cos[k * tw..][..tw]);
        row[ac + 2 * tw..]
            .copy_from_slice(&sample.template_torsion_angles_mask[k * TORSIONS..][..TORSIONS]);
    }
}

/// MSA mask `[S + T, N]`: the iteration's MSA mask, then one row per template
/// (its psi-torsion mask, as AlphaFold2).
pub fn msa_mask(sample: &Sample, recycle: &RecycleFeatures, t: usize, out: &mut Vec<f32>) {
    let n = sample.aatype.len();
    out.clear();
    out.extend_from_slice(&recycle.msa_mask);
    out.extend((0..t * n).map(|k| sample.template_torsion_angles_mask[k * TORSIONS + PSI]));
}

/// Pair mask `[N, N]`: `seq_mask_i * seq_mask_j`.
pub fn pair_mask(sample: &Sample, out: &mut Vec<f32>) {
    let m = &sample.seq_mask;
    out.clear();
    out.extend(m.iter().flat_map(|&a| m.iter().map(move |&b| a * b)));
}

/// Per-template attention key bias `[T]`: 0 for a present template, a large
/// negative number for an empty slot (it leaves the pointwise attention's softmax).
pub fn template_key_bias(sample: &Sample) -> Vec<f32> {
    sample
        .template_mask
        .iter()
        .map(|&m| if m > 0.0 { 0.0 } else { -1e9 })
        .collect()
}

/// The pseudo-beta position of each residue from atom14 positions: CB, or CA
/// for glycine (the recycled positions of Algorithm 32).
pub fn pseudo_beta(aatype: &[u8], atom14: &[[[f32; 3]; 14]]) -> Vec<[f32; 3]> {
    aatype
        .iter()
        .zip(atom14)
        .map(|(&a, x)| {
            if a == GLYCINE {
                x[ATOM14_CA]
            } else {
                x[ATOM14_CB]
            }
        })
        .collect()
}
