//! The per-sample transform: a pure function of (static record, config, seed) that
//! produces one fixed-shape training sample ([`make_sample`]).
//!
//! Steps, following the AlphaFold2 recipe (supplement 1.2.5-1.2.9):
//! 1. crop `crop_size` residues: a random contiguous window, or with probability
//!    `spatial_crop_probability` the residues whose CA is nearest a random resolved CA;
//!    the MSA, templates and atoms are cropped with the same residue list, so MSA
//!    columns stay aligned with residues;
//! 2. templates: a random number (0..=max_templates) of the top
//!    `max_template_candidates` hits, without replacement, in rank order;
//! 3. per recycling iteration, each from its own random stream: MSA block deletion,
//!    cluster centres (query first, then a random subset), BERT masking of the centres,
//!    assignment of every other row to its nearest centre, cluster profiles and deletion
//!    means, `msa_feat` (49 channels) and a random extra-MSA subset;
//! 4. padding of everything to the config's fixed shapes, with masks that are zero on padding.
//!
//! Deviation from AlphaFold, on purpose: the MSA is cropped to the residue window
//! *before* clustering, so nearest-centre distances count only the columns the model
//! sees (AlphaFold clusters on full-length rows first). This makes the cost independent
//! of the chain's full length.
//!
//! Randomness: `ChaCha8Rng` seeded from the sample seed; stream 0 for the crop and the
//! templates, stream `1 + r` for recycling iteration `r`. The same seed gives bit-identical
//! samples on any machine.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::FeaturizeError;
use crate::features::ChainRecord;
use crate::geometry;
use crate::residue_constants::{ATOM_TYPE_NUM, GAP_ID, NUM_RESTYPES_WITH_X};
use crate::rigid::{Vec3, distance};

/// MSA token used by BERT masking (one past the gap).
pub const MASK_TOKEN: u8 = 22;
/// Channels of `msa_feat`: 23 one-hot, has-deletion, deletion value, 23 profile, deletion mean.
pub const MSA_FEAT_CHANNELS: usize = 49;
/// Channels of `target_feat`: has-break plus 21 residue types.
pub const TARGET_FEAT_CHANNELS: usize = 22;

/// BERT-style MSA masking (supplement 1.2.7).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskedMsaConfig {
    /// Fraction of centre positions that are replaced.
    pub replace_fraction: f32,
    /// Of a replaced position: probability of a uniformly random amino acid.
    pub uniform_prob: f32,
    /// Probability of a residue drawn from the column's MSA profile.
    pub profile_prob: f32,
    /// Probability of keeping the residue unchanged. The rest becomes [`MASK_TOKEN`].
    pub same_prob: f32,
}

/// MSA block deletion (supplement Algorithm 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDeletionConfig {
    /// Rows per block as a fraction of the MSA depth.
    pub fraction_per_block: f32,
    /// Number of blocks.
    pub num_blocks: usize,
}

/// Everything that fixes a sample's shapes and randomness.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Residues per sample (`N_res`).
    pub crop_size: usize,
    /// MSA rows of the model input, including the rows the trainer fills from templates.
    pub max_msa_clusters: usize,
    /// Whether `max_templates` of the `max_msa_clusters` rows are left for template
    /// torsion rows (AlphaFold's `reduce_msa_clusters_by_max_templates`).
    pub reserve_msa_rows_for_templates: bool,
    /// Extra-MSA rows (`N_extra_seq`).
    pub max_extra_msa: usize,
    /// Template slots (`N_templ`).
    pub max_templates: usize,
    /// Templates are drawn from this many top-ranked hits.
    pub max_template_candidates: usize,
    /// Draw a random number of templates (training) rather than the top ones.
    pub subsample_templates: bool,
    /// Number of recycling iterations featurized (the trainer draws how many it uses).
    pub num_recycling_iterations: usize,
    /// Probability of a spatial instead of a contiguous crop.
    pub spatial_crop_probability: f32,
    /// Block deletion, or none.
    pub block_deletion: Option<BlockDeletionConfig>,
    /// BERT masking.
    pub masked_msa: MaskedMsaConfig,
}

impl SampleConfig {
    /// AlphaFold initial training: crop 256, 128 MSA rows (4 of them template rows),
    /// 1024 extra rows, 4 templates, 4 recycling iterations.
    pub fn initial_training() -> Self {
        Self {
            crop_size: 256,
            max_msa_clusters: 128,
            reserve_msa_rows_for_templates: true,
            max_extra_msa: 1024,
            max_templates: 4,
            max_template_candidates: 20,
            subsample_templates: true,
            num_recycling_iterations: 4,
            spatial_crop_probability: 0.0,
            block_deletion: Some(BlockDeletionConfig {
                fraction_per_block: 0.3,
                num_blocks: 5,
            }),
            masked_msa: MaskedMsaConfig {
                replace_fraction: 0.15,
                uniform_prob: 0.1,
                profile_prob: 0.1,
                same_prob: 0.1,
            },
        }
    }

    /// AlphaFold fine-tuning: crop 384, 512 MSA rows, 5120 extra rows, 4 templates.
    pub fn fine_tuning() -> Self {
        Self {
            crop_size: 384,
            max_msa_clusters: 512,
            max_extra_msa: 5120,
            ..Self::initial_training()
        }
    }

    /// A tiny preset for CPU tests: crop 16, 8 MSA rows (2 for templates), 16 extra
    /// rows, 2 templates, 2 recycling iterations.
    pub fn tiny() -> Self {
        Self {
            crop_size: 16,
            max_msa_clusters: 8,
            max_extra_msa: 16,
            max_templates: 2,
            max_template_candidates: 4,
            num_recycling_iterations: 2,
            ..Self::initial_training()
        }
    }

    /// MSA rows this transform produces (`max_msa_clusters` less the template rows).
    pub fn num_msa_rows(&self) -> usize {
        if self.reserve_msa_rows_for_templates {
            self.max_msa_clusters.saturating_sub(self.max_templates)
        } else {
            self.max_msa_clusters
        }
    }

    fn validate(&self) -> Result<(), FeaturizeError> {
        let m = &self.masked_msa;
        let bad = if self.crop_size == 0 {
            Some("crop_size must be positive".to_string())
        } else if self.num_msa_rows() == 0 {
            Some("no MSA rows left after reserving template rows".into())
        } else if self.num_recycling_iterations == 0 {
            Some("num_recycling_iterations must be positive".into())
        } else if [
            m.replace_fraction,
            m.uniform_prob,
            m.profile_prob,
            m.same_prob,
        ]
        .iter()
        .any(|p| !(0.0..=1.0).contains(p))
            || m.uniform_prob + m.profile_prob + m.same_prob > 1.0
        {
            Some(format!("masked_msa probabilities out of range: {m:?}"))
        } else {
            None
        };
        bad.map_or(Ok(()), |msg| Err(FeaturizeError::InvalidConfig(msg)))
    }
}

/// MSA features of one recycling iteration (`M = num_msa_rows`, `E = max_extra_msa`,
/// `N = crop_size`), all padded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecycleFeatures {
    /// `[M][N][49]`: one-hot masked MSA (23), has deletion, deletion value, cluster
    /// profile (23), cluster deletion mean value.
    pub msa_feat: Vec<f32>,
    /// Unmasked centre residues `[M][N]` (the BERT targets).
    pub true_msa: Vec<u8>,
    /// 1.0 where the centre residue was masked `[M][N]`.
    pub bert_mask: Vec<f32>,
    /// 1.0 on real MSA rows and residues `[M][N]`.
    pub msa_mask: Vec<f32>,
    /// 1.0 on real MSA rows `[M]`.
    pub msa_row_mask: Vec<f32>,
    /// Extra-MSA residues `[E][N]`, ids 0..=21.
    pub extra_msa: Vec<u8>,
    /// 1.0 where the extra row has a deletion `[E][N]`.
    pub extra_has_deletion: Vec<f32>,
    /// `2/π · atan(d/3)` of the deletion count `[E][N]`.
    pub extra_deletion_value: Vec<f32>,
    /// 1.0 on real extra rows and residues `[E][N]`.
    pub extra_msa_mask: Vec<f32>,
    /// 1.0 on real extra rows `[E]`.
    pub extra_msa_row_mask: Vec<f32>,
}

/// One training sample with fixed shapes (`N = crop_size`, `T = max_templates`).
/// Per-residue values are zero on padding; every mask is zero there.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Real residues in the crop.
    pub seq_length: u32,
    /// Residue types `[N]`.
    pub aatype: Vec<u8>,
    /// Residue numbers `[N]`.
    pub residue_index: Vec<i32>,
    /// 1.0 on real residues `[N]`.
    pub seq_mask: Vec<f32>,
    /// `[N][22]`: has-break, one-hot residue type (21).
    pub target_feat: Vec<f32>,
    /// atom37 positions `[N][37][3]`.
    pub all_atom_positions: Vec<f32>,
    /// atom37 resolved mask `[N][37]`.
    pub all_atom_mask: Vec<f32>,
    /// atom37 index per atom14 slot `[N][14]`.
    pub residx_atom14_to_atom37: Vec<i32>,
    /// atom14 slot per atom37 atom `[N][37]`.
    pub residx_atom37_to_atom14: Vec<i32>,
    /// `[N][14]`.
    pub atom14_atom_exists: Vec<f32>,
    /// `[N][37]`.
    pub atom37_atom_exists: Vec<f32>,
    /// `[N][14]`.
    pub atom14_gt_exists: Vec<f32>,
    /// `[N][14][3]`.
    pub atom14_gt_positions: Vec<f32>,
    /// `[N][14][3]`.
    pub atom14_alt_gt_positions: Vec<f32>,
    /// `[N][14]`.
    pub atom14_alt_gt_exists: Vec<f32>,
    /// `[N][14]`.
    pub atom14_atom_is_ambiguous: Vec<f32>,
    /// Rigid-group frames `[N][8][12]` (rotation row-major, then translation); group 0
    /// is the backbone frame.
    pub rigidgroups_gt_frames: Vec<f32>,
    /// `[N][8][12]`.
    pub rigidgroups_alt_gt_frames: Vec<f32>,
    /// `[N][8]`.
    pub rigidgroups_gt_exists: Vec<f32>,
    /// `[N][8]`.
    pub rigidgroups_group_exists: Vec<f32>,
    /// `[N][8]`.
    pub rigidgroups_group_is_ambiguous: Vec<f32>,
    /// `[N][7][2]`: omega, phi, psi, chi1..4 as (sin, cos).
    pub torsion_angles_sin_cos: Vec<f32>,
    /// `[N][7][2]`.
    pub alt_torsion_angles_sin_cos: Vec<f32>,
    /// `[N][7]`.
    pub torsion_angles_mask: Vec<f32>,
    /// `[N][3]`.
    pub pseudo_beta: Vec<f32>,
    /// `[N]`.
    pub pseudo_beta_mask: Vec<f32>,
    /// Resolution in Å.
    pub resolution: f32,
    /// 1.0 for distillation chains.
    pub is_distillation: f32,
    /// Template residue types `[T][N]` (21 = gap).
    pub template_aatype: Vec<u8>,
    /// `[T][N][37][3]`.
    pub template_all_atom_positions: Vec<f32>,
    /// `[T][N][37]`.
    pub template_all_atom_mask: Vec<f32>,
    /// 1.0 on real templates `[T]`.
    pub template_mask: Vec<f32>,
    /// `[T]`.
    pub template_sum_probs: Vec<f32>,
    /// `[T][N][3]`.
    pub template_pseudo_beta: Vec<f32>,
    /// `[T][N]`.
    pub template_pseudo_beta_mask: Vec<f32>,
    /// `[T][N][7][2]`.
    pub template_torsion_angles_sin_cos: Vec<f32>,
    /// `[T][N][7][2]`.
    pub template_alt_torsion_angles_sin_cos: Vec<f32>,
    /// `[T][N][7]`.
    pub template_torsion_angles_mask: Vec<f32>,
    /// MSA features per recycling iteration.
    pub recycles: Vec<RecycleFeatures>,
}

/// Name, logical shape and stored length of one array of a [`Sample`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Feature name.
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Number of stored elements.
    pub len: usize,
    /// Element size in bytes.
    pub elem_bytes: usize,
}

impl Sample {
    /// Every array of the sample with its shape under `config`; the trainer and the tests
    /// use it to check that `len == shape.product()` for every sample.
    pub fn tensors(&self, config: &SampleConfig) -> Vec<TensorInfo> {
        let (n, t, m, e) = (
            config.crop_size,
            config.max_templates,
            config.num_msa_rows(),
            config.max_extra_msa,
        );
        let mut out = Vec::new();
        let mut put = |name: &str, shape: &[usize], len: usize, elem_bytes: usize| {
            out.push(TensorInfo {
                name: name.to_string(),
                shape: shape.to_vec(),
                len,
                elem_bytes,
            })
        };
        macro_rules! f {
            ($field:ident, $($d:expr),+) => {
                put(stringify!($field), &[$($d),+], self.$field.len(), std::mem::size_of_val(&self.$field[..]) / self.$field.len().max(1))
            };
        }
        f!(aatype, n);
        f!(residue_index, n);
        f!(seq_mask, n);
        f!(target_feat, n, TARGET_FEAT_CHANNELS);
        f!(all_atom_positions, n, 37, 3);
        f!(all_atom_mask, n, 37);
        f!(residx_atom14_to_atom37, n, 14);
        f!(residx_atom37_to_atom14, n, 37);
        f!(atom14_atom_exists, n, 14);
        f!(atom37_atom_exists, n, 37);
        f!(atom14_gt_exists, n, 14);
        f!(atom14_gt_positions, n, 14, 3);
        f!(atom14_alt_gt_positions, n, 14, 3);
        f!(atom14_alt_gt_exists, n, 14);
        f!(atom14_atom_is_ambiguous, n, 14);
        f!(rigidgroups_gt_frames, n, 8, 12);
        f!(rigidgroups_alt_gt_frames, n, 8, 12);
        f!(rigidgroups_gt_exists, n, 8);
        f!(rigidgroups_group_exists, n, 8);
        f!(rigidgroups_group_is_ambiguous, n, 8);
        f!(torsion_angles_sin_cos, n, 7, 2);
        f!(alt_torsion_angles_sin_cos, n, 7, 2);
        f!(torsion_angles_mask, n, 7);
        f!(pseudo_beta, n, 3);
        f!(pseudo_beta_mask, n);
        f!(template_aatype, t, n);
        f!(template_all_atom_positions, t, n, 37, 3);
        f!(template_all_atom_mask, t, n, 37);
        f!(template_mask, t);
        f!(template_sum_probs, t);
        f!(template_pseudo_beta, t, n, 3);
        f!(template_pseudo_beta_mask, t, n);
        f!(template_torsion_angles_sin_cos, t, n, 7, 2);
        f!(template_alt_torsion_angles_sin_cos, t, n, 7, 2);
        f!(template_torsion_angles_mask, t, n, 7);
        for (r, rec) in self.recycles.iter().enumerate() {
            let mut g = |name: &str, shape: &[usize], len: usize, elem_bytes: usize| {
                put(&format!("recycle{r}.{name}"), shape, len, elem_bytes)
            };
            g(
                "msa_feat",
                &[m, n, MSA_FEAT_CHANNELS],
                rec.msa_feat.len(),
                4,
            );
            g("true_msa", &[m, n], rec.true_msa.len(), 1);
            g("bert_mask", &[m, n], rec.bert_mask.len(), 4);
            g("msa_mask", &[m, n], rec.msa_mask.len(), 4);
            g("msa_row_mask", &[m], rec.msa_row_mask.len(), 4);
            g("extra_msa", &[e, n], rec.extra_msa.len(), 1);
            g(
                "extra_has_deletion",
                &[e, n],
                rec.extra_has_deletion.len(),
                4,
            );
            g(
                "extra_deletion_value",
                &[e, n],
                rec.extra_deletion_value.len(),
                4,
            );
            g("extra_msa_mask", &[e, n], rec.extra_msa_mask.len(), 4);
            g("extra_msa_row_mask", &[e], rec.extra_msa_row_mask.len(), 4);
        }
        out
    }

    /// Bytes held by the sample's arrays.
    pub fn nbytes(&self, config: &SampleConfig) -> usize {
        self.tensors(config)
            .iter()
            .map(|t| t.len * t.elem_bytes)
            .sum()
    }
}

/// Gathers `per`-sized items of `src` at `rows` and pads to `total` items with `fill`.
fn gather_pad<T: Copy>(src: &[T], per: usize, rows: &[usize], total: usize, fill: T) -> Vec<T> {
    let mut out = Vec::with_capacity(total * per);
    for &r in rows {
        out.extend_from_slice(&src[r * per..(r + 1) * per]);
    }
    out.resize(total * per, fill);
    out
}

/// Flattens per-residue fixed-size arrays and pads to `total` residues with zeros.
fn flat_pad<const K: usize>(items: &[[f32; K]], total: usize) -> Vec<f32> {
    let mut out = items.as_flattened().to_vec();
    out.resize(total * K, 0.0);
    out
}

fn deletion_value(d: f32) -> f32 {
    (d / 3.0).atan() * std::f32::consts::FRAC_2_PI
}

/// [`deletion_value`] of an integer deletion count, from a table for the common small
/// counts (the extra MSA needs one per residue per row; `atan` showed in profiles).
fn deletion_value_of_count(d: u16) -> f32 {
    static TABLE: std::sync::LazyLock<[f32; 256]> =
        std::sync::LazyLock::new(|| std::array::from_fn(|i| deletion_value(i as f32)));
    TABLE
        .get(d as usize)
        .copied()
        .unwrap_or_else(|| deletion_value(d as f32))
}

/// Chooses the residues of the crop (sorted).
fn choose_crop(record: &ChainRecord, config: &SampleConfig, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = record.seq_length as usize;
    let k = config.crop_size.min(n);
    let spatial = config.spatial_crop_probability > 0.0
        && rng.random::<f32>() < config.spatial_crop_probability;
    if spatial && k < n {
        let ca = |i: usize| -> Option<Vec3> {
            let base = i * ATOM_TYPE_NUM + 1;
            (record.all_atom_mask[base] > 0).then(|| {
                let p = &record.all_atom_positions[base * 3..base * 3 + 3];
                [p[0], p[1], p[2]]
            })
        };
        let resolved: Vec<usize> = (0..n).filter(|&i| ca(i).is_some()).collect();
        if !resolved.is_empty() {
            let centre = ca(resolved[rng.random_range(0..resolved.len())]).expect("resolved CA");
            let mut by_distance: Vec<(f32, usize)> = (0..n)
                .map(|i| (ca(i).map_or(f32::INFINITY, |p| distance(p, centre)), i))
                .collect();
            by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut chosen: Vec<usize> = by_distance[..k].iter().map(|&(_, i)| i).collect();
            chosen.sort_unstable();
            return chosen;
        }
    }
    let start = rng.random_range(0..=n - k);
    (start..start + k).collect()
}

/// Counts positions where `a` and `b` hold the same byte. The centre rows are
/// pre-processed so that gaps and mask tokens never match (see [`assign_to_centres`]),
/// so this is the "agreement" of AlphaFold's nearest-neighbour clustering.
///
/// Speed: bytes are compared 16 at a time into per-lane `u8` counters, which the
/// compiler turns into SIMD compare/subtract instructions; lanes are summed at the end
/// of every block of 255 chunks, before a `u8` counter can overflow.
#[inline]
fn count_equal(a: &[u8], b: &[u8]) -> u32 {
    const LANES: usize = 16;
    let mut total = 0u32;
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    for (ablock, bblock) in ac.chunks(255).zip(bc.chunks(255)) {
        let mut acc = [0u8; LANES];
        for (x, y) in ablock.iter().zip(bblock) {
            for l in 0..LANES {
                acc[l] += u8::from(x[l] == y[l]);
            }
        }
        total += acc.iter().map(|&v| v as u32).sum::<u32>();
    }
    total + ar.iter().zip(br).filter(|(x, y)| x == y).count() as u32
}

/// Index of the centre each extra row agrees with most (first centre on ties).
/// `centres` are `[c][len]` masked centre rows, `extras` `[e][len]`; agreement counts
/// positions where both rows hold the same residue and the centre's is not a gap or
/// mask token (AlphaFold's nearest-neighbour clustering).
///
/// This dominates the transform for deep MSAs (`e · c · len` byte comparisons per
/// recycling iteration). Made fast by comparing 16 bytes at a time into per-lane `u8`
/// counters (SIMD), after replacing gaps and mask tokens in the centres by a byte that
/// never matches, so the inner loop has no branch.
pub fn assign_to_centres(centres: &[u8], extras: &[u8], len: usize) -> Vec<u32> {
    // Gaps (21) and mask tokens (22) in a centre never count as agreement: replace them
    // by a byte no MSA row contains.
    let keyed: Vec<u8> = centres
        .iter()
        .map(|&c| if c >= GAP_ID { u8::MAX } else { c })
        .collect();
    extras
        .chunks_exact(len)
        .map(|row| {
            let mut best = (0u32, 0u32);
            for (c, centre) in keyed.chunks_exact(len).enumerate() {
                let agreement = count_equal(row, centre);
                if agreement > best.0 || c == 0 {
                    best = (agreement, c as u32);
                }
            }
            best.1
        })
        .collect()
}

/// The straightforward form of [`assign_to_centres`]: a scalar loop with the gap/mask
/// test at every position. Kept as the reference the fast version is tested and
/// benchmarked against.
pub fn assign_to_centres_reference(centres: &[u8], extras: &[u8], len: usize) -> Vec<u32> {
    extras
        .chunks_exact(len)
        .map(|row| {
            let mut best = (0u32, 0u32);
            for (c, centre) in centres.chunks_exact(len).enumerate() {
                let mut agreement = 0u32;
                for j in 0..len {
                    if centre[j] < GAP_ID && centre[j] == row[j] {
                        agreement += 1;
                    }
                }
                if agreement > best.0 || c == 0 {
                    best = (agreement, c as u32);
                }
            }
            best.1
        })
        .collect()
}

/// The cropped MSA of one sample, shared by all recycling iterations.
struct CroppedMsa {
    rows: usize,
    len: usize,
    msa: Vec<u8>,
    deletions: Vec<u16>,
    /// Cumulative per-column distribution over the 22 MSA ids, `[len][22]`.
    profile_cdf: Vec<f32>,
}

impl CroppedMsa {
    fn new(record: &ChainRecord, crop: &[usize]) -> Self {
        let n = record.seq_length as usize;
        let rows = record.num_alignments as usize;
        let len = crop.len();
        let mut msa = Vec::with_capacity(rows * len);
        let mut deletions = Vec::with_capacity(rows * len);
        let contiguous = crop.windows(2).all(|w| w[1] == w[0] + 1);
        for r in 0..rows {
            let row = &record.msa[r * n..(r + 1) * n];
            let dels = &record.deletion_matrix[r * n..(r + 1) * n];
            if contiguous && len > 0 {
                msa.extend_from_slice(&row[crop[0]..crop[0] + len]);
                deletions.extend_from_slice(&dels[crop[0]..crop[0] + len]);
            } else {
                msa.extend(crop.iter().map(|&j| row[j]));
                deletions.extend(crop.iter().map(|&j| dels[j]));
            }
        }
        let mut counts = vec![0u32; len * 22];
        for row in msa.chunks_exact(len.max(1)) {
            for (j, &c) in row.iter().enumerate() {
                counts[j * 22 + c as usize] += 1;
            }
        }
        let mut profile_cdf = vec![0.0f32; len * 22];
        for j in 0..len {
            let mut acc = 0u32;
            for c in 0..22 {
                acc += counts[j * 22 + c];
                profile_cdf[j * 22 + c] = acc as f32 / rows.max(1) as f32;
            }
        }
        Self {
            rows,
            len,
            msa,
            deletions,
            profile_cdf,
        }
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.msa[r * self.len..(r + 1) * self.len]
    }

    fn deletion_row(&self, r: usize) -> &[u16] {
        &self.deletions[r * self.len..(r + 1) * self.len]
    }

    fn sample_from_profile(&self, column: usize, rng: &mut ChaCha8Rng) -> u8 {
        let u = rng.random::<f32>();
        let cdf = &self.profile_cdf[column * 22..(column + 1) * 22];
        cdf.iter().position(|&p| u < p).unwrap_or(21) as u8
    }
}

fn recycle_features(
    msa: &CroppedMsa,
    config: &SampleConfig,
    rng: &mut ChaCha8Rng,
) -> RecycleFeatures {
    let (len, n_pad) = (msa.len, config.crop_size);
    let m_pad = config.num_msa_rows();
    let e_pad = config.max_extra_msa;
    // 1. Block deletion (the query row always stays).
    let mut keep = vec![true; msa.rows];
    if let Some(bd) = &config.block_deletion {
        let block = (msa.rows as f32 * bd.fraction_per_block) as usize;
        for _ in 0..bd.num_blocks {
            let start = rng.random_range(0..msa.rows);
            for k in keep.iter_mut().skip(start).take(block) {
                *k = false;
            }
        }
        keep[0] = true;
    }
    // 2. Cluster centres: the query, then a random subset; the rest are extra rows.
    let mut others: Vec<usize> = (1..msa.rows).filter(|&r| keep[r]).collect();
    others.shuffle(rng);
    let num_centres = m_pad.min(others.len() + 1);
    let mut centres = vec![0usize];
    centres.extend_from_slice(&others[..num_centres - 1]);
    let extras = &others[num_centres - 1..];
    // 3. BERT masking of the centres.
    let mm = &config.masked_msa;
    let mut true_msa = Vec::with_capacity(m_pad * n_pad);
    let mut masked = Vec::with_capacity(num_centres * len);
    let mut bert_mask = vec![0.0f32; m_pad * n_pad];
    for (ci, &r) in centres.iter().enumerate() {
        let row = msa.row(r);
        true_msa.extend_from_slice(row);
        true_msa.resize((ci + 1) * n_pad, 0);
        for (j, &orig) in row.iter().enumerate() {
            let mut token = orig;
            if rng.random::<f32>() < mm.replace_fraction {
                bert_mask[ci * n_pad + j] = 1.0;
                let u = rng.random::<f32>();
                token = if u < mm.uniform_prob {
                    rng.random_range(0..20u8)
                } else if u < mm.uniform_prob + mm.profile_prob {
                    msa.sample_from_profile(j, rng)
                } else if u < mm.uniform_prob + mm.profile_prob + mm.same_prob {
                    orig
                } else {
                    MASK_TOKEN
                };
            }
            masked.push(token);
        }
    }
    true_msa.resize(m_pad * n_pad, 0);
    // 4. Nearest-centre assignment of every extra row, then cluster statistics.
    let mut extra_rows = Vec::with_capacity(extras.len() * len);
    for &r in extras {
        extra_rows.extend_from_slice(msa.row(r));
    }
    let assignment = assign_to_centres(&masked, &extra_rows, len.max(1));
    const K: usize = 23;
    let mut counts = vec![0.0f32; num_centres * len * K];
    let mut del_sum = vec![0.0f32; num_centres * len];
    let mut members = vec![1.0f32; num_centres];
    for (ci, &r) in centres.iter().enumerate() {
        for (j, (&tok, &d)) in masked[ci * len..(ci + 1) * len]
            .iter()
            .zip(msa.deletion_row(r))
            .enumerate()
        {
            counts[(ci * len + j) * K + tok as usize] += 1.0;
            del_sum[ci * len + j] += d as f32;
        }
    }
    for (&r, &c) in extras.iter().zip(&assignment) {
        let c = c as usize;
        members[c] += 1.0;
        let base = c * len;
        for (j, (&tok, &d)) in msa.row(r).iter().zip(msa.deletion_row(r)).enumerate() {
            counts[(base + j) * K + tok as usize] += 1.0;
            del_sum[base + j] += d as f32;
        }
    }
    // 5. msa_feat.
    let mut msa_feat = vec![0.0f32; m_pad * n_pad * MSA_FEAT_CHANNELS];
    let mut msa_mask = vec![0.0f32; m_pad * n_pad];
    let mut msa_row_mask = vec![0.0f32; m_pad];
    for (ci, &r) in centres.iter().enumerate() {
        msa_row_mask[ci] = 1.0;
        let inv = 1.0 / (members[ci] + 1e-6);
        let dels = msa.deletion_row(r);
        for j in 0..len {
            let f = &mut msa_feat[(ci * n_pad + j) * MSA_FEAT_CHANNELS..][..MSA_FEAT_CHANNELS];
            f[masked[ci * len + j] as usize] = 1.0;
            f[23] = f32::from(dels[j] > 0);
            f[24] = deletion_value_of_count(dels[j]);
            for (k, v) in counts[(ci * len + j) * K..][..K].iter().enumerate() {
                f[25 + k] = v * inv;
            }
            f[48] = deletion_value(del_sum[ci * len + j] * inv);
            msa_mask[ci * n_pad + j] = 1.0;
        }
    }
    // 6. Extra MSA: a random subset of the non-centre rows.
    let mut chosen: Vec<usize> = extras.to_vec();
    chosen.shuffle(rng);
    chosen.truncate(e_pad);
    let mut out = RecycleFeatures {
        msa_feat,
        true_msa,
        bert_mask,
        msa_mask,
        msa_row_mask,
        extra_msa: vec![0; e_pad * n_pad],
        extra_has_deletion: vec![0.0; e_pad * n_pad],
        extra_deletion_value: vec![0.0; e_pad * n_pad],
        extra_msa_mask: vec![0.0; e_pad * n_pad],
        extra_msa_row_mask: vec![0.0; e_pad],
    };
    for (ei, &r) in chosen.iter().enumerate() {
        out.extra_msa_row_mask[ei] = 1.0;
        let base = ei * n_pad;
        out.extra_msa[base..base + len].copy_from_slice(msa.row(r));
        for (j, &d) in msa.deletion_row(r).iter().enumerate() {
            out.extra_has_deletion[base + j] = f32::from(d > 0);
            out.extra_deletion_value[base + j] = deletion_value_of_count(d);
            out.extra_msa_mask[base + j] = 1.0;
        }
    }
    out
}

fn atoms_of(positions: &[f32], mask: &[u8], crop: &[usize]) -> (Vec<[Vec3; 37]>, Vec<[f32; 37]>) {
    crop.iter()
        .map(|&i| {
            let p: [Vec3; 37] = std::array::from_fn(|a| {
                let b = (i * ATOM_TYPE_NUM + a) * 3;
                [positions[b], positions[b + 1], positions[b + 2]]
            });
            let m: [f32; 37] = std::array::from_fn(|a| f32::from(mask[i * ATOM_TYPE_NUM + a]));
            (p, m)
        })
        .unzip()
}

/// Builds one training sample from a static record: see the module doc for the steps.
pub fn make_sample(
    record: &ChainRecord,
    config: &SampleConfig,
    seed: u64,
) -> Result<Sample, FeaturizeError> {
    config.validate()?;
    record.validate()?;
    let n_pad = config.crop_size;
    let t_pad = config.max_templates;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let crop = choose_crop(record, config, &mut rng);
    let len = crop.len();

    // Residue features and ground truth. Torsions need each residue's chain neighbour,
    // so they are computed on the crop plus the residue before it.
    let aatype: Vec<u8> = crop.iter().map(|&i| record.aatype[i] as u8).collect();
    let (pos, mask) = atoms_of(&record.all_atom_positions, &record.all_atom_mask, &crop);
    let a14 = geometry::atom14_features(&aatype, &pos, &mask);
    let groups = geometry::rigid_group_features(&aatype, &pos, &mask);
    let torsions = chain_torsions(
        &record.aatype,
        &record.all_atom_positions,
        &record.all_atom_mask,
        &crop,
    );
    let (pb, pb_mask) = geometry::pseudo_beta(&aatype, &pos, &mask);

    let mut target_feat = vec![0.0f32; n_pad * TARGET_FEAT_CHANNELS];
    for (j, &i) in crop.iter().enumerate() {
        target_feat[j * TARGET_FEAT_CHANNELS] = f32::from(record.between_segment_residues[i]);
        target_feat
            [j * TARGET_FEAT_CHANNELS + 1 + (aatype[j] as usize).min(NUM_RESTYPES_WITH_X - 1)] =
            1.0;
    }
    let frames = |f: &[[crate::rigid::Rigid; 8]]| {
        let arr: Vec<[f32; 96]> = f
            .iter()
            .map(|g| {
                let mut out = [0.0f32; 96];
                for (k, r) in g.iter().enumerate() {
                    out[k * 12..(k + 1) * 12].copy_from_slice(&r.to_array12());
                }
                out
            })
            .collect();
        flat_pad(&arr, n_pad)
    };
    let to_i32 = |v: &[u8]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
    let mut sample = Sample {
        seq_length: len as u32,
        aatype: gather_pad(&aatype, 1, &(0..len).collect::<Vec<_>>(), n_pad, 0),
        residue_index: gather_pad(&record.residue_index, 1, &crop, n_pad, 0),
        seq_mask: flat_pad(&vec![[1.0f32]; len], n_pad),
        target_feat,
        all_atom_positions: flat_pad(pos.as_flattened(), n_pad * 37),
        all_atom_mask: flat_pad(&mask, n_pad),
        residx_atom14_to_atom37: {
            let mut v = to_i32(a14.residx_atom14_to_atom37.as_flattened());
            v.resize(n_pad * 14, 0);
            v
        },
        residx_atom37_to_atom14: {
            let mut v = to_i32(a14.residx_atom37_to_atom14.as_flattened());
            v.resize(n_pad * 37, 0);
            v
        },
        atom14_atom_exists: flat_pad(&a14.atom14_atom_exists, n_pad),
        atom37_atom_exists: flat_pad(&a14.atom37_atom_exists, n_pad),
        atom14_gt_exists: flat_pad(&a14.atom14_gt_exists, n_pad),
        atom14_gt_positions: flat_pad(a14.atom14_gt_positions.as_flattened(), n_pad * 14),
        atom14_alt_gt_positions: flat_pad(a14.atom14_alt_gt_positions.as_flattened(), n_pad * 14),
        atom14_alt_gt_exists: flat_pad(&a14.atom14_alt_gt_exists, n_pad),
        atom14_atom_is_ambiguous: flat_pad(&a14.atom14_atom_is_ambiguous, n_pad),
        rigidgroups_gt_frames: frames(&groups.gt_frames),
        rigidgroups_alt_gt_frames: frames(&groups.alt_gt_frames),
        rigidgroups_gt_exists: flat_pad(&groups.gt_exists, n_pad),
        rigidgroups_group_exists: flat_pad(&groups.group_exists, n_pad),
        rigidgroups_group_is_ambiguous: flat_pad(&groups.group_is_ambiguous, n_pad),
        torsion_angles_sin_cos: flat_pad(torsions.sin_cos.as_flattened(), n_pad * 7),
        alt_torsion_angles_sin_cos: flat_pad(torsions.alt_sin_cos.as_flattened(), n_pad * 7),
        torsion_angles_mask: flat_pad(&torsions.mask, n_pad),
        pseudo_beta: flat_pad(&pb, n_pad),
        pseudo_beta_mask: flat_pad(&pb_mask.iter().map(|&m| [m]).collect::<Vec<_>>(), n_pad),
        resolution: record.resolution,
        is_distillation: f32::from(record.is_distillation),
        ..Default::default()
    };
    add_templates(&mut sample, record, &crop, config, &mut rng);
    debug_assert_eq!(sample.template_mask.len(), t_pad);

    let msa = CroppedMsa::new(record, &crop);
    sample.recycles = (0..config.num_recycling_iterations)
        .map(|r| {
            let mut stream = ChaCha8Rng::seed_from_u64(seed);
            stream.set_stream(1 + r as u64);
            recycle_features(&msa, config, &mut stream)
        })
        .collect();
    Ok(sample)
}

/// Torsions of the cropped residues, each measured against its chain predecessor.
fn chain_torsions(
    aatype: &[i8],
    positions: &[f32],
    mask: &[u8],
    crop: &[usize],
) -> geometry::TorsionFeatures {
    let mut out = geometry::TorsionFeatures::default();
    for &i in crop {
        let idx: Vec<usize> = if i > 0 { vec![i - 1, i] } else { vec![i] };
        let types: Vec<u8> = idx.iter().map(|&k| aatype[k] as u8).collect();
        let (p, m) = atoms_of(positions, mask, &idx);
        let t = geometry::torsion_angles(&types, &p, &m);
        let last = idx.len() - 1;
        out.sin_cos.push(t.sin_cos[last]);
        out.alt_sin_cos.push(t.alt_sin_cos[last]);
        out.mask.push(t.mask[last]);
    }
    out
}

fn add_templates(
    sample: &mut Sample,
    record: &ChainRecord,
    crop: &[usize],
    config: &SampleConfig,
    rng: &mut ChaCha8Rng,
) {
    let (n_pad, t_pad) = (config.crop_size, config.max_templates);
    let n = record.seq_length as usize;
    let tf = &record.templates;
    let available = (tf.num_templates as usize).min(config.max_template_candidates);
    let chosen: Vec<usize> = if config.subsample_templates {
        let k = rng.random_range(0..=available.min(t_pad));
        let mut idx = rand::seq::index::sample(rng, available, k).into_vec();
        idx.sort_unstable();
        idx
    } else {
        (0..available.min(t_pad)).collect()
    };
    let s = sample;
    s.template_aatype = vec![0; t_pad * n_pad];
    s.template_all_atom_positions = vec![0.0; t_pad * n_pad * 111];
    s.template_all_atom_mask = vec![0.0; t_pad * n_pad * 37];
    s.template_mask = vec![0.0; t_pad];
    s.template_sum_probs = vec![0.0; t_pad];
    s.template_pseudo_beta = vec![0.0; t_pad * n_pad * 3];
    s.template_pseudo_beta_mask = vec![0.0; t_pad * n_pad];
    s.template_torsion_angles_sin_cos = vec![0.0; t_pad * n_pad * 14];
    s.template_alt_torsion_angles_sin_cos = vec![0.0; t_pad * n_pad * 14];
    s.template_torsion_angles_mask = vec![0.0; t_pad * n_pad * 7];
    for (slot, &t) in chosen.iter().enumerate() {
        s.template_mask[slot] = 1.0;
        s.template_sum_probs[slot] = tf.sum_probs[t];
        let rows: Vec<usize> = crop.iter().map(|&i| t * n + i).collect();
        let aatype: Vec<u8> = rows.iter().map(|&r| tf.aatype[r] as u8).collect();
        let (pos, mask) = atoms_of(&tf.all_atom_positions, &tf.all_atom_mask, &rows);
        let (pb, pb_mask) = geometry::pseudo_beta(&aatype, &pos, &mask);
        let tors = geometry::torsion_angles(&aatype, &pos, &mask);
        let base = slot * n_pad;
        for j in 0..crop.len() {
            s.template_aatype[base + j] = aatype[j];
            s.template_all_atom_positions[(base + j) * 111..][..111]
                .copy_from_slice(pos[j].as_flattened());
            s.template_all_atom_mask[(base + j) * 37..][..37].copy_from_slice(&mask[j]);
            s.template_pseudo_beta[(base + j) * 3..][..3].copy_from_slice(&pb[j]);
            s.template_pseudo_beta_mask[base + j] = pb_mask[j];
            s.template_torsion_angles_sin_cos[(base + j) * 14..][..14]
                .copy_from_slice(tors.sin_cos[j].as_flattened());
            s.template_alt_torsion_angles_sin_cos[(base + j) * 14..][..14]
                .copy_from_slice(tors.alt_sin_cos[j].as_flattened());
            s.template_torsion_angles_mask[(base + j) * 7..][..7].copy_from_slice(&tors.mask[j]);
        }
        // Padding residues of a real template are gaps.
        for j in crop.len()..n_pad {
            s.template_aatype[base + j] = GAP_ID;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_value_table_matches_formula() {
        for d in [0u16, 1, 3, 255, 256, 1000, u16::MAX] {
            assert_eq!(deletion_value_of_count(d), deletion_value(d as f32));
        }
        assert!(
            (deletion_value(3.0) - 0.5).abs() < 1e-6,
            "atan(1)·2/π = 0.5"
        );
    }

    #[test]
    fn count_equal_matches_naive_count_on_long_and_short_rows() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 23) as u8).collect();
        let b: Vec<u8> = (0..5000u32).map(|i| (i * 11 % 23) as u8).collect();
        for len in [0, 1, 15, 16, 17, 255 * 16 + 3, 5000] {
            let naive = a[..len]
                .iter()
                .zip(&b[..len])
                .filter(|(x, y)| x == y)
                .count() as u32;
            assert_eq!(count_equal(&a[..len], &b[..len]), naive, "len {len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_assignment_equals_reference(
            len in 1usize..70,
            centres in proptest::collection::vec(0u8..23, 1..300),
            extras in proptest::collection::vec(0u8..22, 0..600),
        ) {
            let c = &centres[..centres.len() / len * len];
            let e = &extras[..extras.len() / len * len];
            proptest::prop_assume!(!c.is_empty());
            proptest::prop_assert_eq!(assign_to_centres(c, e, len), assign_to_centres_reference(c, e, len));
        }
    }

    #[test]
    fn assignment_ignores_gaps_and_masks_and_breaks_ties_to_first() {
        let centres = [0u8, 1, 21, 21, /* c1 */ 0, 1, 2, 22];
        // Row equals c0 on the gapped columns too, but gaps do not count: c1 agrees on 3.
        let extras = [0u8, 1, 2, 21, /* second: ties 2-2 -> c0 */ 0, 1, 5, 5];
        assert_eq!(assign_to_centres(&centres, &extras, 4), [1, 0]);
    }
}
