//! The host half of the model: the structure module, the heads and every loss
//! of the AF2 recipe, evaluated in f64 from the trunk's f32 representations,
//! with the gradient of the weighted total with respect to the
//! representations and every host parameter.
//!
//! Inputs: the final single (`N × c_s`, after the trunk's single projection),
//! pair (`N × N × c_z`) and the first `S` MSA rows (`S × N × c_m`), the
//! sample (ground truth and masks) and the last recycling iteration's MSA
//! features (BERT targets). Parameters: one flat `f32` vector per tensor in
//! [`host_param_layout`] order (they live in the backend's parameter block
//! next to the trunk's).
//!
//! What is computed (AF2 supplement section 1.9, OpenFold's loss config):
//! - structure module (Alg. 20, [`super::module`]) from single and pair,
//!   rotations a stopped gradient between layers;
//! - backbone FAPE averaged over the layers, clamped at 10 Å unless the
//!   caller drew an unclamped sample ([`HostInputs::clamp_backbone_fape`];
//!   AF2 clamps 90 % of samples, [`LossWeights::clamp_backbone_fape`] draws it
//!   deterministically from a seed);
//! - side-chain FAPE on the last layer's eight group frames and atom14
//!   positions against the ambiguity-renamed truth (Alg. 26,
//!   [`super::renaming`]), clamped at 10 Å;
//! - supervised chi loss (Alg. 27 on chi 1–4, with their π-periodic
//!   alternatives) and the angle-norm penalty (all seven torsions of every
//!   real residue), each averaged over the layers;
//! - distogram head (symmetrised `Linear(z)`, 64 bins 2.3125–21.6875 Å) and
//!   its loss against the true pseudo-beta distances;
//! - masked-MSA head (`Linear(m) → 23`) and its loss on the BERT-masked
//!   positions;
//! - pLDDT head from the structure module's last single, target the
//!   lDDT-Cα of the prediction (a constant), 50 bins;
//! - experimentally-resolved head (`Linear(s) → 37`) from the trunk's single
//!   (as AF2 and OpenFold do: the representation before the structure module);
//! - structural violations ([`super::violation`]) of the final atom14
//!   positions.
//!
//! The pLDDT and experimentally-resolved losses count only for samples whose
//! resolution lies in [0.1, 3.0] Å (they are reported as 0 otherwise).
//! Padding residues (`seq_mask` 0) are masked out of every term, and are not
//! IPA keys, so they receive no gradient. Unlike OpenFold the total is not
//! multiplied by `sqrt(crop length)` (the supplement has no such factor).

use super::allatom::{Atom14, GroupFrames, atom14_exists};
use super::fape::{
    FapeConfig, FapeInput, backbone_fape, backbone_fape_backward, fape, fape_backward,
};
use super::heads::{
    DistogramBins, DistogramHead, PlddtHead, distogram_loss, experimentally_resolved_loss,
    masked_msa_loss, plddt_loss,
};
use super::ipa::{Dense, IpaDims};
use super::module::{
    StructureDims, StructureInput, StructureModule, StructureOutput, StructureOutputGrad,
    StructureParams,
};
use super::nn::{LayerNorm, TORSIONS};
use super::renaming::{RenamingInput, alt_naming_is_better};
use super::rigid::{Rigid, Vec3, dot};
use super::torsion::{TorsionConfig, TorsionInput, torsion_loss, torsion_loss_backward};
use super::violation::{ViolationConfig, ViolationInput, violation_loss, violation_loss_backward};
use crate::error::{Result, TrainerError};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use scalefold_featurize::transform::{RecycleFeatures, Sample};
use serde::{Deserialize, Serialize};

/// Frame translations of the structure module are multiplied by this to get
/// Å (AF2: 10).
pub const POSITION_SCALE: f64 = 10.0;
/// Atom37 slots per residue.
const ATOM37: usize = 37;
/// The atom37 (and atom14) slot of CA.
const CA: usize = 1;
/// Samples with a resolution in this range (Å) train the pLDDT and
/// experimentally-resolved heads (AF2 and OpenFold: 0.1–3.0).
pub const CONFIDENCE_RESOLUTION_RANGE: (f64, f64) = (0.1, 3.0);

/// Sizes of the host part: the structure module and the four heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostDims {
    /// Single representation width (the structure module's width).
    pub c_s: usize,
    /// Pair representation width.
    pub c_z: usize,
    /// MSA representation width.
    pub c_m: usize,
    /// IPA heads (12 in AF2).
    pub ipa_heads: usize,
    /// Channels per IPA head (16 in AF2).
    pub ipa_head_dim: usize,
    /// IPA query/key points per head (4 in AF2).
    pub ipa_query_points: usize,
    /// IPA value points per head (8 in AF2).
    pub ipa_value_points: usize,
    /// Hidden width of the angle resnet (128 in AF2).
    pub resnet_hidden: usize,
    /// Residual blocks of the angle resnet (2 in AF2).
    pub resnet_blocks: usize,
    /// Structure-module layers sharing their weights (8 in AF2).
    pub layers: usize,
    /// Distogram bins (64 in AF2).
    pub distogram_bins: usize,
    /// pLDDT bins (50 in AF2).
    pub plddt_bins: usize,
    /// Hidden width of the pLDDT head (128 in AF2).
    pub plddt_hidden: usize,
    /// Masked-MSA classes (23: 20 amino acids, unknown, gap, mask).
    pub msa_classes: usize,
}

impl HostDims {
    /// The AF2 sizes.
    pub fn af2() -> Self {
        HostDims {
            c_s: 384,
            c_z: 128,
            c_m: 256,
            ipa_heads: 12,
            ipa_head_dim: 16,
            ipa_query_points: 4,
            ipa_value_points: 8,
            resnet_hidden: 128,
            resnet_blocks: 2,
            layers: 8,
            distogram_bins: 64,
            plddt_bins: 50,
            plddt_hidden: 128,
            msa_classes: 23,
        }
    }

    /// Small sizes for CPU tests, every width distinct.
    pub fn tiny() -> Self {
        HostDims {
            c_s: 10,
            c_z: 6,
            c_m: 7,
            ipa_heads: 2,
            ipa_head_dim: 3,
            ipa_query_points: 2,
            ipa_value_points: 3,
            resnet_hidden: 5,
            resnet_blocks: 2,
            layers: 4,
            distogram_bins: 16,
            plddt_bins: 12,
            plddt_hidden: 9,
            msa_classes: 23,
        }
    }

    /// Checks that every size is usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("host.c_s", self.c_s),
            ("host.c_z", self.c_z),
            ("host.c_m", self.c_m),
            ("host.ipa_heads", self.ipa_heads),
            ("host.ipa_head_dim", self.ipa_head_dim),
            ("host.ipa_query_points", self.ipa_query_points),
            ("host.ipa_value_points", self.ipa_value_points),
            ("host.resnet_hidden", self.resnet_hidden),
            ("host.layers", self.layers),
            ("host.plddt_bins", self.plddt_bins),
            ("host.plddt_hidden", self.plddt_hidden),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(TrainerError::Config {
                field,
                detail: "must be positive".into(),
            });
        }
        if self.distogram_bins < 3 {
            return Err(TrainerError::Config {
                field: "host.distogram_bins",
                detail: format!("{} bins; at least 3 are needed", self.distogram_bins),
            });
        }
        if self.msa_classes < 22 {
            return Err(TrainerError::Config {
                field: "host.msa_classes",
                detail: format!(
                    "{} classes cannot hold the 22 MSA tokens (23 in AF2)",
                    self.msa_classes
                ),
            });
        }
        Ok(())
    }

    /// The structure module's sizes (AF2 constants: Å scale 10, stopped
    /// rotation gradient between layers).
    pub fn structure(&self) -> StructureDims {
        StructureDims {
            ipa: IpaDims {
                c_s: self.c_s,
                c_z: self.c_z,
                heads: self.ipa_heads,
                head_dim: self.ipa_head_dim,
                query_points: self.ipa_query_points,
                value_points: self.ipa_value_points,
            },
            resnet_hidden: self.resnet_hidden,
            resnet_blocks: self.resnet_blocks,
            layers: self.layers,
            position_scale: POSITION_SCALE,
            stop_rotation_gradient: true,
        }
    }

    fn distogram(&self) -> DistogramBins {
        DistogramBins {
            bins: self.distogram_bins,
            ..DistogramBins::AF2
        }
    }
}

/// Loss weights of the AF2 recipe.
///
/// Values from the supplement (section 1.9, Eq. 7 and Table 6 of the loss
/// weights) as OpenFold's `config.py` spells them: FAPE weight 1.0 split
/// into backbone 0.5 and side chain 0.5; `supervised_chi` weight 1.0 with
/// `chi_weight` 0.5 and `angle_norm_weight` 0.01 (Alg. 27's
/// `L_torsion + 0.02 L_anglenorm` under the supplement's 0.5 weight of the
/// torsion term: 0.5 and 0.01 overall); distogram 0.3; masked MSA 2.0;
/// pLDDT 0.01; experimentally resolved 0.01 and violation 1.0 in
/// fine-tuning only (0 in initial training); `use_clamped_fape` 0.9.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossWeights {
    /// Backbone FAPE (layer mean).
    pub fape: f64,
    /// Side-chain FAPE.
    pub sidechain_fape: f64,
    /// Supervised chi loss (layer mean).
    pub torsion: f64,
    /// Angle-norm penalty (layer mean).
    pub angle_norm: f64,
    /// Distogram.
    pub distogram: f64,
    /// Masked MSA.
    pub masked_msa: f64,
    /// pLDDT.
    pub plddt: f64,
    /// Experimentally resolved.
    pub experimentally_resolved: f64,
    /// Structural violations.
    pub violation: f64,
    /// Fraction of samples whose backbone FAPE is clamped at 10 Å (0.9).
    pub clamped_fape_fraction: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self::initial_training()
    }
}

impl LossWeights {
    /// The initial-training weights.
    pub fn initial_training() -> Self {
        LossWeights {
            fape: 0.5,
            sidechain_fape: 0.5,
            torsion: 0.5,
            angle_norm: 0.01,
            distogram: 0.3,
            masked_msa: 2.0,
            plddt: 0.01,
            experimentally_resolved: 0.0,
            violation: 0.0,
            clamped_fape_fraction: 0.9,
        }
    }

    /// The fine-tuning weights: experimentally resolved 0.01, violation 1.0.
    pub fn fine_tuning() -> Self {
        LossWeights {
            experimentally_resolved: 0.01,
            violation: 1.0,
            ..Self::initial_training()
        }
    }

    /// Whether the sample of `seed` (e.g. the step's dropout seed) has its
    /// backbone FAPE clamped: true with probability `clamped_fape_fraction`,
    /// deterministic in the seed.
    pub fn clamp_backbone_fape(&self, seed: u64) -> bool {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0fa9e_c1a3b);
        rng.random::<f64>() < self.clamped_fape_fraction
    }
}

/// Every loss term of one evaluation, unweighted, plus the weighted total.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossTerms {
    /// `Σ weight · term`.
    pub total: f64,
    /// Backbone FAPE, mean over the layers.
    pub fape: f64,
    /// Side-chain FAPE of the last layer.
    pub sidechain_fape: f64,
    /// Supervised chi loss, mean over the layers.
    pub torsion: f64,
    /// Angle-norm penalty, mean over the layers.
    pub angle_norm: f64,
    /// Distogram cross-entropy.
    pub distogram: f64,
    /// Masked-MSA cross-entropy.
    pub masked_msa: f64,
    /// pLDDT cross-entropy (0 outside the resolution range).
    pub plddt: f64,
    /// Experimentally-resolved cross-entropy (0 outside the resolution range).
    pub experimentally_resolved: f64,
    /// Structural violation loss.
    pub violation: f64,
}

/// What the host part reads. All slices f32, row-major, padded to the
/// sample's fixed sizes (`N = sample.aatype.len()`).
#[derive(Clone, Copy, Debug)]
pub struct HostInputs<'a> {
    /// `[N, c_s]`, after the trunk's single projection.
    pub single: &'a [f32],
    /// `[N, N, c_z]`.
    pub pair: &'a [f32],
    /// `[S, N, c_m]`: the first `S` rows of the final MSA representation
    /// (`S = SampleConfig::num_msa_rows()`, no template rows).
    pub msa: &'a [f32],
    /// Ground truth, masks, residue types.
    pub sample: &'a Sample,
    /// The last iteration's MSA features (`true_msa`, `bert_mask`).
    pub recycle: &'a RecycleFeatures,
    /// Whether backbone FAPE is clamped for this sample (draw it with
    /// [`LossWeights::clamp_backbone_fape`]; `true` at inference).
    pub clamp_backbone_fape: bool,
}

/// What the host part returns besides gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct HostOutputs {
    /// Every loss term and the weighted total.
    pub losses: LossTerms,
    /// Final atom14 positions, Å, per residue (zeros in empty slots).
    pub atom14: Vec<[[f32; 3]; 14]>,
    /// Predicted lDDT-Cα per residue, 0..100.
    pub plddt: Vec<f32>,
}

/// Gradients of the weighted total loss.
#[derive(Clone, Debug, PartialEq)]
pub struct HostGrads {
    /// dL/d(single), `[N, c_s]`.
    pub single: Vec<f32>,
    /// dL/d(pair), `[N, N, c_z]`.
    pub pair: Vec<f32>,
    /// dL/d(msa), `[S, N, c_m]`.
    pub msa: Vec<f32>,
    /// dL/d(parameters), in [`host_param_layout`] order.
    pub params: Vec<Vec<f32>>,
}

/// How a parameter tensor starts (AF2 supplement 1.11.4).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// All zeros (biases, "final" layers).
    Zeros,
    /// All ones (layer-norm scales).
    Ones,
    /// Truncated normal of variance `gain / fan_in` ("default" gain 1,
    /// "relu" gain 2).
    Normal { fan_in: usize, gain: f64 },
    /// A constant (the IPA point weights: softplus⁻¹(1)).
    Constant(f64),
}

/// Every host parameter in one struct (also the layout of the gradient).
#[derive(Clone, Debug)]
struct HostParams {
    structure: StructureParams,
    distogram: DistogramHead,
    masked_msa: Dense,
    plddt: PlddtHead,
    experimentally_resolved: Dense,
}

/// One parameter tensor: dot-path name, shape, initialiser, values.
type Entry<'a> = (String, Vec<usize>, Init, &'a mut Vec<f64>);

/// A dense map's weight (`[inputs, outputs]`) and bias.
fn push_dense<'a>(out: &mut Vec<Entry<'a>>, name: &str, d: &'a mut Dense, weight: Init) {
    let Dense {
        inputs,
        outputs,
        weight: w,
        bias,
    } = d;
    out.push((format!("{name}.w"), vec![*inputs, *outputs], weight, w));
    out.push((format!("{name}.b"), vec![*outputs], Init::Zeros, bias));
}

/// A dense map with the "default" (LeCun) initialisation.
fn default_init(d: &Dense) -> Init {
    Init::Normal {
        fan_in: d.inputs,
        gain: 1.0,
    }
}

/// A dense map followed by a ReLU ("relu", He) initialisation.
fn relu_init(d: &Dense) -> Init {
    Init::Normal {
        fan_in: d.inputs,
        gain: 2.0,
    }
}

fn push_norm<'a>(out: &mut Vec<Entry<'a>>, name: &str, n: &'a mut LayerNorm) {
    let LayerNorm { scale, offset } = n;
    out.push((
        format!("{name}.scale"),
        vec![scale.len()],
        Init::Ones,
        scale,
    ));
    out.push((
        format!("{name}.offset"),
        vec![offset.len()],
        Init::Zeros,
        offset,
    ));
}

impl HostParams {
    /// All-zero parameters (a gradient accumulator, or a start for loading).
    fn zeros(d: &HostDims) -> HostParams {
        let mut plddt = PlddtHead::zeros(d.c_s, d.plddt_hidden, d.plddt_bins);
        plddt.norm = LayerNorm::zeros(d.c_s);
        HostParams {
            structure: StructureParams::zeros(&d.structure()),
            distogram: DistogramHead {
                linear: Dense::zeros(d.c_z, d.distogram_bins),
            },
            masked_msa: Dense::zeros(d.c_m, d.msa_classes),
            plddt,
            experimentally_resolved: Dense::zeros(d.c_s, ATOM37),
        }
    }

    /// Every tensor in layout order: the single source of the names, shapes,
    /// initialisers and the order of loading and flattening.
    fn entries(&mut self) -> Vec<Entry<'_>> {
        let mut out = Vec::new();
        let s = &mut self.structure;
        push_norm(&mut out, "structure.single_norm", &mut s.single_norm);
        push_norm(&mut out, "structure.pair_norm", &mut s.pair_norm);
        let init = default_init(&s.input);
        push_dense(&mut out, "structure.input", &mut s.input, init);
        let ipa = &mut s.ipa;
        for (name, dense) in [
            ("query", &mut ipa.query),
            ("key", &mut ipa.key),
            ("value", &mut ipa.value),
            ("query_points", &mut ipa.query_points),
            ("key_points", &mut ipa.key_points),
            ("value_points", &mut ipa.value_points),
            ("pair_bias", &mut ipa.pair_bias),
        ] {
            let init = default_init(dense);
            push_dense(&mut out, &format!("structure.ipa.{name}"), dense, init);
        }
        push_dense(
            &mut out,
            "structure.ipa.output",
            &mut ipa.output,
            Init::Zeros,
        );
        let heads = ipa.head_weights.len();
        out.push((
            "structure.ipa.head_weights".into(),
            vec![heads],
            // softplus⁻¹(1) = ln(e − 1): every head starts with point weight 1.
            Init::Constant((std::f64::consts::E - 1.0).ln()),
            &mut ipa.head_weights,
        ));
        push_norm(&mut out, "structure.ipa_norm", &mut s.ipa_norm);
        let [t0, t1, t2] = &mut s.transition.layers;
        for (k, dense, before_relu) in [(0, t0, true), (1, t1, true), (2, t2, false)] {
            let init = if before_relu {
                relu_init(dense)
            } else {
                Init::Zeros
            };
            push_dense(&mut out, &format!("structure.transition.{k}"), dense, init);
        }
        push_norm(
            &mut out,
            "structure.transition.norm",
            &mut s.transition.norm,
        );
        push_dense(
            &mut out,
            "structure.backbone_update",
            &mut s.backbone_update,
            Init::Zeros,
        );
        let r = &mut s.angle_resnet;
        let init = default_init(&r.input);
        push_dense(&mut out, "structure.angle_resnet.input", &mut r.input, init);
        let init = default_init(&r.initial);
        push_dense(
            &mut out,
            "structure.angle_resnet.initial",
            &mut r.initial,
            init,
        );
        for (b, [l1, l2]) in r.blocks.iter_mut().enumerate() {
            let init = relu_init(l1);
            push_dense(
                &mut out,
                &format!("structure.angle_resnet.block{b}.0"),
                l1,
                init,
            );
            push_dense(
                &mut out,
                &format!("structure.angle_resnet.block{b}.1"),
                l2,
                Init::Zeros,
            );
        }
        let init = default_init(&r.output);
        push_dense(
            &mut out,
            "structure.angle_resnet.output",
            &mut r.output,
            init,
        );
        push_dense(
            &mut out,
            "heads.distogram",
            &mut self.distogram.linear,
            Init::Zeros,
        );
        push_dense(
            &mut out,
            "heads.masked_msa",
            &mut self.masked_msa,
            Init::Zeros,
        );
        push_norm(&mut out, "heads.plddt.norm", &mut self.plddt.norm);
        let [p0, p1, p2] = &mut self.plddt.layers;
        let (i0, i1) = (relu_init(p0), relu_init(p1));
        push_dense(&mut out, "heads.plddt.0", p0, i0);
        push_dense(&mut out, "heads.plddt.1", p1, i1);
        push_dense(&mut out, "heads.plddt.2", p2, Init::Zeros);
        push_dense(
            &mut out,
            "heads.experimentally_resolved",
            &mut self.experimentally_resolved,
            Init::Zeros,
        );
        out
    }

    /// Parameters from `values` (layout order), each tensor length checked.
    fn load(d: &HostDims, values: &[Vec<f32>]) -> Result<HostParams> {
        let mut p = HostParams::zeros(d);
        let mut entries = p.entries();
        if entries.len() != values.len() {
            return Err(TrainerError::Shape {
                op: "host parameters",
                detail: format!(
                    "{} tensors given, the layout has {}",
                    values.len(),
                    entries.len()
                ),
            });
        }
        for ((name, shape, _, t), v) in entries.iter_mut().zip(values) {
            if t.len() != v.len() {
                return Err(TrainerError::Shape {
                    op: "host parameters",
                    detail: format!(
                        "{name} has {} values, expected {} (shape {shape:?})",
                        v.len(),
                        t.len()
                    ),
                });
            }
            t.iter_mut().zip(v).for_each(|(a, b)| *a = f64::from(*b));
        }
        drop(entries);
        Ok(p)
    }

    /// Every tensor as f32, layout order.
    fn flatten_f32(&mut self) -> Vec<Vec<f32>> {
        self.entries()
            .into_iter()
            .map(|(_, _, _, t)| t.iter().map(|&x| x as f32).collect())
            .collect()
    }
}

/// Every host parameter's name and shape, in the fixed layout order.
pub fn host_param_layout(d: &HostDims) -> Vec<(String, Vec<usize>)> {
    HostParams::zeros(d)
        .entries()
        .into_iter()
        .map(|(name, shape, _, _)| (name, shape))
        .collect()
}

/// Initial host parameters (AF2 supplement 1.11.4: LeCun-normal "default"
/// maps, He-normal maps before a ReLU, truncated at two standard deviations;
/// zero "final" maps — IPA output, last transition map, backbone update,
/// second map of each resnet block, all head outputs — unit layer-norm
/// scales, zero biases, IPA point weights softplus⁻¹(1)); deterministic in
/// `seed`, flat per tensor in layout order.
pub fn host_param_init(d: &HostDims, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut p = HostParams::zeros(d);
    for (_, _, init, t) in p.entries() {
        match init {
            Init::Zeros => t.iter_mut().for_each(|x| *x = 0.0),
            Init::Ones => t.iter_mut().for_each(|x| *x = 1.0),
            Init::Constant(c) => t.iter_mut().for_each(|x| *x = c),
            Init::Normal { fan_in, gain } => {
                // A standard normal truncated to [-2, 2] has standard
                // deviation 0.87962566; rescale to the target.
                let std = (gain / fan_in.max(1) as f64).sqrt() / 0.879_625_661_034_239_8;
                t.iter_mut()
                    .for_each(|x| *x = std * truncated_normal(&mut rng));
            }
        }
    }
    p.flatten_f32()
}

/// A standard normal sample truncated to [-2, 2] (Box–Muller, rejection).
fn truncated_normal(rng: &mut rand_chacha::ChaCha8Rng) -> f64 {
    loop {
        let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if z.abs() <= 2.0 {
            return z;
        }
    }
}

/// The host part: structure module + heads + losses.
pub fn host_forward(
    d: &HostDims,
    w: &LossWeights,
    params: &[Vec<f32>],
    x: &HostInputs,
) -> Result<HostOutputs> {
    Ok(evaluate(d, w, params, x, false)?.0)
}

/// The structure module alone, without heads or losses: the final atom14
/// positions (Å, zeros in empty slots) of one recycling iteration whose only
/// use is to feed its positions to the next one.
pub fn host_atom14(
    d: &HostDims,
    params: &[Vec<f32>],
    x: &HostInputs,
) -> Result<Vec<[[f32; 3]; 14]>> {
    d.validate()?;
    let p = HostParams::load(d, params)?;
    let s = x.sample;
    let n = s.aatype.len();
    for (field, got, expected, what) in [
        ("single", x.single.len(), n * d.c_s, "N × c_s"),
        ("pair", x.pair.len(), n * n * d.c_z, "N × N × c_z"),
        ("sample.seq_mask", s.seq_mask.len(), n, "N"),
    ] {
        if got != expected {
            return Err(shape_error(field, got, expected, what));
        }
    }
    let (single, pair, mask) = (to_f64(x.single), to_f64(x.pair), to_f64(&s.seq_mask));
    let input = StructureInput {
        single: &single,
        pair: &pair,
        aatype: &s.aatype,
        mask: &mask,
    };
    let (out, _) = structure_module(d, &p, true).forward(&input)?;
    Ok(atoms_f32(&out.atom14))
}

/// The structure module of `p` at sizes `d`.
fn structure_module(d: &HostDims, p: &HostParams, stop_rotation_gradient: bool) -> StructureModule {
    StructureModule {
        dims: StructureDims {
            stop_rotation_gradient,
            ..d.structure()
        },
        params: p.structure.clone(),
    }
}

/// Atom positions in f32, as [`HostOutputs::atom14`] holds them.
fn atoms_f32(atoms: &[Atom14]) -> Vec<[[f32; 3]; 14]> {
    atoms
        .iter()
        .map(|a| a.map(|p| p.map(|v| v as f32)))
        .collect()
}

/// Forward and backward of the weighted total loss.
pub fn host_forward_backward(
    d: &HostDims,
    w: &LossWeights,
    params: &[Vec<f32>],
    x: &HostInputs,
) -> Result<(HostOutputs, HostGrads)> {
    let (out, grads) = evaluate(d, w, params, x, true)?;
    Ok((out, grads.expect("gradients were requested")))
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.par_iter().map(|&v| f64::from(v)).collect()
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.par_iter().map(|&v| v as f32).collect()
}

fn shape_error(field: &str, got: usize, expected: usize, what: &str) -> TrainerError {
    TrainerError::Shape {
        op: "host inputs",
        detail: format!("{field} has {got} values, expected {expected} ({what})"),
    }
}

/// The sizes of one evaluation: residues and MSA rows.
fn check_inputs(d: &HostDims, x: &Inputs64) -> Result<(usize, usize)> {
    let s = x.sample;
    let n = s.aatype.len();
    if n == 0 {
        return Err(TrainerError::Shape {
            op: "host inputs",
            detail: "sample.aatype is empty: a sample needs at least one residue".into(),
        });
    }
    let check = |field: &str, got: usize, expected: usize, what: &str| {
        if got == expected {
            Ok(())
        } else {
            Err(shape_error(field, got, expected, what))
        }
    };
    check("single", x.single.len(), n * d.c_s, "N × c_s")?;
    check("pair", x.pair.len(), n * n * d.c_z, "N × N × c_z")?;
    let row = n * d.c_m;
    if x.msa.is_empty() || !x.msa.len().is_multiple_of(row) {
        return Err(shape_error(
            "msa",
            x.msa.len(),
            row,
            "a positive multiple of N × c_m: S rows",
        ));
    }
    let rows = x.msa.len() / row;
    for (field, got, per_residue, what) in [
        ("sample.residue_index", s.residue_index.len(), 1, "N"),
        ("sample.seq_mask", s.seq_mask.len(), 1, "N"),
        (
            "sample.all_atom_positions",
            s.all_atom_positions.len(),
            ATOM37 * 3,
            "N × 37 × 3",
        ),
        (
            "sample.all_atom_mask",
            s.all_atom_mask.len(),
            ATOM37,
            "N × 37",
        ),
        (
            "sample.atom37_atom_exists",
            s.atom37_atom_exists.len(),
            ATOM37,
            "N × 37",
        ),
        (
            "sample.atom14_gt_exists",
            s.atom14_gt_exists.len(),
            14,
            "N × 14",
        ),
        (
            "sample.atom14_gt_positions",
            s.atom14_gt_positions.len(),
            42,
            "N × 14 × 3",
        ),
        (
            "sample.atom14_alt_gt_positions",
            s.atom14_alt_gt_positions.len(),
            42,
            "N × 14 × 3",
        ),
        (
            "sample.atom14_alt_gt_exists",
            s.atom14_alt_gt_exists.len(),
            14,
            "N × 14",
        ),
        (
            "sample.atom14_atom_is_ambiguous",
            s.atom14_atom_is_ambiguous.len(),
            14,
            "N × 14",
        ),
        (
            "sample.rigidgroups_gt_frames",
            s.rigidgroups_gt_frames.len(),
            96,
            "N × 8 × 12",
        ),
        (
            "sample.rigidgroups_alt_gt_frames",
            s.rigidgroups_alt_gt_frames.len(),
            96,
            "N × 8 × 12",
        ),
        (
            "sample.rigidgroups_gt_exists",
            s.rigidgroups_gt_exists.len(),
            8,
            "N × 8",
        ),
        (
            "sample.torsion_angles_sin_cos",
            s.torsion_angles_sin_cos.len(),
            14,
            "N × 7 × 2",
        ),
        (
            "sample.alt_torsion_angles_sin_cos",
            s.alt_torsion_angles_sin_cos.len(),
            14,
            "N × 7 × 2",
        ),
        (
            "sample.torsion_angles_mask",
            s.torsion_angles_mask.len(),
            7,
            "N × 7",
        ),
        ("sample.pseudo_beta", s.pseudo_beta.len(), 3, "N × 3"),
        ("sample.pseudo_beta_mask", s.pseudo_beta_mask.len(), 1, "N"),
    ] {
        check(field, got, n * per_residue, what)?;
    }
    let r = x.recycle;
    check("recycle.true_msa", r.true_msa.len(), rows * n, "S × N")?;
    check("recycle.bert_mask", r.bert_mask.len(), rows * n, "S × N")?;
    if let Some((k, t)) = r
        .true_msa
        .iter()
        .enumerate()
        .find(|(_, t)| usize::from(**t) >= d.msa_classes)
    {
        return Err(TrainerError::Shape {
            op: "host inputs",
            detail: format!(
                "recycle.true_msa[{k}] is {t}, expected a class below {}",
                d.msa_classes
            ),
        });
    }
    Ok((n, rows))
}

/// The sample's ground truth in f64, padding masked out.
struct Truth {
    seq_mask: Vec<f64>,
    backbone_frames: Vec<Rigid>,
    backbone_mask: Vec<f64>,
    group_frames: Vec<GroupFrames>,
    alt_group_frames: Vec<GroupFrames>,
    group_mask: Vec<f64>,
    atom14: Vec<Atom14>,
    alt_atom14: Vec<Atom14>,
    atom14_exists: Vec<[f64; 14]>,
    alt_atom14_exists: Vec<[f64; 14]>,
    ambiguous: Vec<[f64; 14]>,
    torsions: Vec<[f64; 2]>,
    alt_torsions: Vec<[f64; 2]>,
    chi_mask: Vec<f64>,
    pseudo_beta: Vec<Vec3>,
    pseudo_beta_mask: Vec<f64>,
    ca: Vec<Vec3>,
    ca_mask: Vec<f64>,
    resolved: Vec<f64>,
    atom37_exists: Vec<f64>,
    /// Whether the resolution admits the confidence losses.
    confidence: bool,
}

fn vec3(x: &[f32]) -> Vec3 {
    [x[0], x[1], x[2]].map(f64::from)
}

fn atoms14(x: &[f32]) -> Vec<Atom14> {
    x.chunks_exact(42)
        .map(|r| std::array::from_fn(|a| vec3(&r[3 * a..])))
        .collect()
}

fn masks14(x: &[f32], seq: &[f64]) -> Vec<[f64; 14]> {
    x.chunks_exact(14)
        .zip(seq)
        .map(|(r, m)| std::array::from_fn(|a| f64::from(r[a]) * m))
        .collect()
}

fn groups(x: &[f32]) -> Vec<GroupFrames> {
    x.chunks_exact(96)
        .map(|r| {
            std::array::from_fn(|g| {
                Rigid::from_array(&std::array::from_fn(|k| f64::from(r[12 * g + k])))
            })
        })
        .collect()
}

impl Truth {
    fn new(s: &Sample) -> Truth {
        let seq_mask = to_f64(&s.seq_mask);
        let n = seq_mask.len();
        let group_frames = groups(&s.rigidgroups_gt_frames);
        let group_mask: Vec<f64> = s
            .rigidgroups_gt_exists
            .chunks_exact(8)
            .zip(&seq_mask)
            .flat_map(|(g, m)| g.iter().map(move |&e| f64::from(e) * m))
            .collect();
        let pairs = |x: &[f32]| -> Vec<[f64; 2]> {
            x.chunks_exact(2)
                .map(|p| [f64::from(p[0]), f64::from(p[1])])
                .collect()
        };
        // Supervised chi: torsions 3..7 (chi1–4) only.
        let chi_mask = (0..n * TORSIONS)
            .map(|k| {
                let (i, t) = (k / TORSIONS, k % TORSIONS);
                if t >= 3 {
                    f64::from(s.torsion_angles_mask[k]) * seq_mask[i]
                } else {
                    0.0
                }
            })
            .collect();
        let resolution = f64::from(s.resolution);
        let (lo, hi) = CONFIDENCE_RESOLUTION_RANGE;
        Truth {
            backbone_frames: group_frames.iter().map(|g| g[0]).collect(),
            backbone_mask: (0..n).map(|i| group_mask[8 * i]).collect(),
            alt_group_frames: groups(&s.rigidgroups_alt_gt_frames),
            group_frames,
            group_mask,
            atom14: atoms14(&s.atom14_gt_positions),
            alt_atom14: atoms14(&s.atom14_alt_gt_positions),
            atom14_exists: masks14(&s.atom14_gt_exists, &seq_mask),
            alt_atom14_exists: masks14(&s.atom14_alt_gt_exists, &seq_mask),
            ambiguous: masks14(&s.atom14_atom_is_ambiguous, &seq_mask),
            torsions: pairs(&s.torsion_angles_sin_cos),
            alt_torsions: pairs(&s.alt_torsion_angles_sin_cos),
            chi_mask,
            pseudo_beta: s.pseudo_beta.chunks_exact(3).map(vec3).collect(),
            pseudo_beta_mask: s
                .pseudo_beta_mask
                .iter()
                .zip(&seq_mask)
                .map(|(&m, s)| f64::from(m) * s)
                .collect(),
            ca: (0..n)
                .map(|i| vec3(&s.all_atom_positions[(i * ATOM37 + CA) * 3..]))
                .collect(),
            ca_mask: (0..n)
                .map(|i| f64::from(s.all_atom_mask[i * ATOM37 + CA]) * seq_mask[i])
                .collect(),
            resolved: (0..n * ATOM37)
                .map(|k| f64::from(s.all_atom_mask[k]))
                .collect(),
            atom37_exists: (0..n * ATOM37)
                .map(|k| f64::from(s.atom37_atom_exists[k]) * seq_mask[k / ATOM37])
                .collect(),
            confidence: (lo..=hi).contains(&resolution),
            seq_mask,
        }
    }
}

/// The layer means of the supervised chi loss and the angle-norm penalty, and
/// (when `grad` holds the two weights) their weighted gradients per layer.
fn torsion_terms(
    out: &StructureOutput,
    t: &Truth,
    weights: Option<(f64, f64)>,
) -> Result<(f64, f64, Vec<Vec<f64>>)> {
    let layers = out.angles_raw.len() as f64;
    // The chi loss alone: the core's angle-norm part switched off.
    let chi_cfg = TorsionConfig {
        angle_norm_weight: 0.0,
        ..TorsionConfig::AF2
    };
    let (mut chi, mut norm) = (0.0, 0.0);
    let mut grads = Vec::new();
    let norm_mask_sum: f64 = t.seq_mask.iter().sum::<f64>() * TORSIONS as f64;
    let norm_scale = 1.0 / (TorsionConfig::AF2.mask_epsilon + norm_mask_sum);
    for raw in &out.angles_raw {
        let pred: Vec<[f64; 2]> = raw.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
        let input = TorsionInput {
            pred: &pred,
            truth: &t.torsions,
            alt_truth: &t.alt_torsions,
            mask: &t.chi_mask,
        };
        chi += torsion_loss(&input, &chi_cfg)?.torsion / layers;
        // Angle norm over all seven torsions of every real residue.
        for (k, p) in pred.iter().enumerate() {
            let l = (dot(p, p) + TorsionConfig::AF2.norm_epsilon).sqrt();
            norm += t.seq_mask[k / TORSIONS] * (l - 1.0).abs() * norm_scale / layers;
        }
        if let Some((w_chi, w_norm)) = weights {
            let mut g = torsion_loss_backward(&input, &chi_cfg, w_chi / layers)?.concat();
            for (k, p) in pred.iter().enumerate() {
                let m = t.seq_mask[k / TORSIONS];
                if m == 0.0 {
                    continue;
                }
                let l = (dot(p, p) + TorsionConfig::AF2.norm_epsilon).sqrt();
                let dl = w_norm * m * (l - 1.0).signum() * norm_scale / layers;
                g[2 * k] += dl * p[0] / l;
                g[2 * k + 1] += dl * p[1] / l;
            }
            grads.push(g);
        }
    }
    Ok((chi, norm, grads))
}

/// The side-chain FAPE inputs: predicted group frames and atoms against the
/// renamed truth.
struct SidechainTruth {
    frames: Vec<Rigid>,
    positions: Vec<Vec3>,
    position_mask: Vec<f64>,
}

fn renamed_truth(out: &StructureOutput, t: &Truth) -> Result<SidechainTruth> {
    let alt = alt_naming_is_better(&RenamingInput {
        predicted: &out.atom14,
        truth: &t.atom14,
        alt_truth: &t.alt_atom14,
        truth_exists: &t.atom14_exists,
        ambiguous: &t.ambiguous,
    })?;
    let pick = |i: usize| alt[i];
    let n = alt.len();
    Ok(SidechainTruth {
        frames: (0..n)
            .flat_map(|i| {
                if pick(i) {
                    t.alt_group_frames[i]
                } else {
                    t.group_frames[i]
                }
            })
            .collect(),
        positions: (0..n)
            .flat_map(|i| {
                if pick(i) {
                    t.alt_atom14[i]
                } else {
                    t.atom14[i]
                }
            })
            .collect(),
        position_mask: (0..n)
            .flat_map(|i| {
                if pick(i) {
                    t.alt_atom14_exists[i]
                } else {
                    t.atom14_exists[i]
                }
            })
            .collect(),
    })
}

/// The expected pLDDT (0..100) of each residue's logits.
fn expected_plddt(logits: &[f64], bins: usize) -> Vec<f32> {
    logits
        .chunks_exact(bins)
        .map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = e.iter().sum();
            let mean: f64 = e
                .iter()
                .enumerate()
                .map(|(k, p)| p * (k as f64 + 0.5) / bins as f64)
                .sum::<f64>()
                / z;
            (100.0 * mean) as f32
        })
        .collect()
}

/// `x` multiplied by `factor`, in place.
fn scaled(mut x: Vec<f64>, factor: f64) -> Vec<f64> {
    x.par_iter_mut().for_each(|v| *v *= factor);
    x
}

/// The host inputs in f64 (the f32 boundary converted).
struct Inputs64<'a> {
    single: &'a [f64],
    pair: &'a [f64],
    msa: &'a [f64],
    sample: &'a Sample,
    recycle: &'a RecycleFeatures,
    clamp_backbone_fape: bool,
    /// As AF2 (true) except in gradient checks, where finite differences of
    /// the plain forward see the rotations' effect between layers.
    stop_rotation_gradient: bool,
}

/// Gradients in f64, parameters as a [`HostParams`].
struct Grads64 {
    single: Vec<f64>,
    pair: Vec<f64>,
    msa: Vec<f64>,
    params: HostParams,
}

/// The f32 boundary of [`host_forward`] and [`host_forward_backward`].
fn evaluate(
    d: &HostDims,
    w: &LossWeights,
    params: &[Vec<f32>],
    x: &HostInputs,
    want_grad: bool,
) -> Result<(HostOutputs, Option<HostGrads>)> {
    d.validate()?;
    let p = HostParams::load(d, params)?;
    let (single, pair, msa) = (to_f64(x.single), to_f64(x.pair), to_f64(x.msa));
    let inputs = Inputs64 {
        single: &single,
        pair: &pair,
        msa: &msa,
        sample: x.sample,
        recycle: x.recycle,
        clamp_backbone_fape: x.clamp_backbone_fape,
        stop_rotation_gradient: true,
    };
    let (out, grads) = evaluate_f64(d, w, &p, &inputs, want_grad)?;
    Ok((
        out,
        grads.map(|mut g| HostGrads {
            single: to_f32(&g.single),
            pair: to_f32(&g.pair),
            msa: to_f32(&g.msa),
            params: g.params.flatten_f32(),
        }),
    ))
}

/// The one evaluation in f64: forward, and backward when `want_grad`.
fn evaluate_f64(
    d: &HostDims,
    w: &LossWeights,
    p: &HostParams,
    x: &Inputs64,
    want_grad: bool,
) -> Result<(HostOutputs, Option<Grads64>)> {
    d.validate()?;
    let (n, _rows) = check_inputs(d, x)?;
    let truth = Truth::new(x.sample);
    let (single, pair, msa) = (x.single, x.pair, x.msa);
    let aatype = &x.sample.aatype;
    let module = structure_module(d, p, x.stop_rotation_gradient);
    let input = StructureInput {
        single,
        pair,
        aatype,
        mask: &truth.seq_mask,
    };
    let (out, cache) = module.forward(&input)?;
    let layers = out.frames.len() as f64;
    let mut terms = LossTerms::default();

    // Backbone FAPE, layer mean.
    let backbone_cfg = FapeConfig {
        clamp_distance: if x.clamp_backbone_fape {
            FapeConfig::BACKBONE.clamp_distance
        } else {
            None
        },
        ..FapeConfig::BACKBONE
    };
    for f in &out.frames {
        terms.fape += backbone_fape(
            f,
            &truth.backbone_frames,
            &truth.backbone_mask,
            &backbone_cfg,
        )? / layers;
    }
    // Side-chain FAPE against the renamed truth.
    let sidechain = renamed_truth(&out, &truth)?;
    let pred_frames: Vec<Rigid> = out.group_frames.iter().flatten().copied().collect();
    let pred_positions: Vec<Vec3> = out.atom14.iter().flatten().copied().collect();
    let sidechain_input = FapeInput {
        pred_frames: &pred_frames,
        true_frames: &sidechain.frames,
        frame_mask: &truth.group_mask,
        pred_positions: &pred_positions,
        true_positions: &sidechain.positions,
        position_mask: &sidechain.position_mask,
    };
    terms.sidechain_fape = fape(&sidechain_input, &FapeConfig::SIDECHAIN)?;
    // Torsions.
    let (chi, angle_norm, g_angles) =
        torsion_terms(&out, &truth, want_grad.then_some((w.torsion, w.angle_norm)))?;
    terms.torsion = chi;
    terms.angle_norm = angle_norm;
    // Distogram.
    let distogram = distogram_loss(
        &p.distogram.forward(pair, n),
        &truth.pseudo_beta,
        &truth.pseudo_beta_mask,
        &d.distogram(),
    )?;
    terms.distogram = distogram.value;
    // Masked MSA.
    let masked_msa = masked_msa_loss(
        &p.masked_msa.forward(msa),
        d.msa_classes,
        &x.recycle.true_msa,
        &to_f64(&x.recycle.bert_mask),
    )?;
    terms.masked_msa = masked_msa.value;
    // pLDDT from the structure module's last single.
    let confidence = if truth.confidence { 1.0 } else { 0.0 };
    let (plddt_logits, plddt_cache) = p.plddt.forward(&out.single);
    let pred_ca: Vec<Vec3> = out.atom14.iter().map(|a| a[CA]).collect();
    let plddt = plddt_loss(
        &plddt_logits,
        d.plddt_bins,
        &pred_ca,
        &truth.ca,
        &truth.ca_mask,
    )?;
    terms.plddt = confidence * plddt.value;
    // Experimentally resolved from the trunk's single.
    let resolved = experimentally_resolved_loss(
        &p.experimentally_resolved.forward(single),
        &truth.resolved,
        &truth.atom37_exists,
    )?;
    terms.experimentally_resolved = confidence * resolved.value;
    // Violations of the final atoms.
    let exists: Vec<[f64; 14]> = atom14_exists(aatype)
        .iter()
        .zip(&truth.seq_mask)
        .map(|(e, m)| e.map(|v| v * m))
        .collect();
    let violation_input = ViolationInput {
        positions: &out.atom14,
        exists: &exists,
        aatype,
        residue_index: &x.sample.residue_index,
    };
    terms.violation = violation_loss(&violation_input, &ViolationConfig::AF2)?.total;
    terms.total = w.fape * terms.fape
        + w.sidechain_fape * terms.sidechain_fape
        + w.torsion * terms.torsion
        + w.angle_norm * terms.angle_norm
        + w.distogram * terms.distogram
        + w.masked_msa * terms.masked_msa
        + w.plddt * terms.plddt
        + w.experimentally_resolved * terms.experimentally_resolved
        + w.violation * terms.violation;
    let outputs = HostOutputs {
        losses: terms,
        atom14: atoms_f32(&out.atom14),
        plddt: expected_plddt(&plddt_logits, d.plddt_bins),
    };
    if !want_grad {
        return Ok((outputs, None));
    }

    // Backward: loss gradients into the structure module's outputs.
    let mut g_out = StructureOutputGrad::zeros_like(&out);
    for (l, f) in out.frames.iter().enumerate() {
        g_out.frames[l] = backbone_fape_backward(
            f,
            &truth.backbone_frames,
            &truth.backbone_mask,
            &backbone_cfg,
            w.fape / layers,
        )?;
    }
    g_out.angles_raw = g_angles;
    let g_sidechain = fape_backward(&sidechain_input, &FapeConfig::SIDECHAIN, w.sidechain_fape)?;
    g_out.group_frames = g_sidechain
        .frames
        .chunks_exact(8)
        .map(|c| std::array::from_fn(|g| c[g]))
        .collect();
    let mut g_atoms: Vec<Atom14> = g_sidechain
        .positions
        .chunks_exact(14)
        .map(|c| std::array::from_fn(|a| c[a]))
        .collect();
    if w.violation != 0.0 {
        let g_violation =
            violation_loss_backward(&violation_input, &ViolationConfig::AF2, w.violation)?;
        for (a, b) in g_atoms.iter_mut().zip(&g_violation) {
            for (p, q) in a.iter_mut().zip(b) {
                *p = super::rigid::add(p, q);
            }
        }
    }
    g_out.atom14 = g_atoms;
    let mut grads = HostParams::zeros(d);
    g_out.single = p.plddt.backward(
        &out.single,
        &plddt_cache,
        &scaled(plddt.grad, w.plddt * confidence),
        &mut grads.plddt,
    );
    let structure_grad = module.backward(&input, &cache, &g_out)?;
    grads.structure = structure_grad.params;
    let (mut g_single, mut g_pair) = (structure_grad.single, structure_grad.pair);
    p.distogram.backward(
        pair,
        n,
        &scaled(distogram.grad, w.distogram),
        &mut grads.distogram,
        &mut g_pair,
    );
    let mut g_msa = vec![0.0; msa.len()];
    p.masked_msa.backward(
        msa,
        &scaled(masked_msa.grad, w.masked_msa),
        &mut grads.masked_msa,
        &mut g_msa,
    );
    p.experimentally_resolved.backward(
        single,
        &scaled(resolved.grad, w.experimentally_resolved * confidence),
        &mut grads.experimentally_resolved,
        &mut g_single,
    );
    Ok((
        outputs,
        Some(Grads64 {
            single: g_single,
            pair: g_pair,
            msa: g_msa,
            params: grads,
        }),
    ))
}

#[cfg(test)]
mod tests;
