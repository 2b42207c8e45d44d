//! The structure module (AF2 supplement Alg. 20) on the CPU in f64: forward
//! and backward through all layers, for gradient checks and tiny models.
//!
//! `s_init = LN(s)`, `z = LN(z)`, `s = Linear(s_init)`, every frame the
//! identity; then, for each of `layers` iterations with one shared set of
//! weights: `s ← LN(s + IPA(s, z, T))`, `s ← Transition(s)`,
//! `T ← T ∘ BackboneUpdate(s)`, `α̃ = AngleResnet(s, s_init)`. Each layer's
//! frames (translations multiplied by `position_scale`, so in Å) and angles,
//! unnormalised and normalised, are outputs (the losses average FAPE and the
//! torsion loss over layers); the last layer's frames and normalised angles
//! also give the all-atom positions (Alg. 24, [`super::allatom`]). Between
//! layers the rotations are a stopped gradient when
//! `stop_rotation_gradient` is set (as in the supplement): the next layer
//! sees their values, but no gradient flows back through them; translations
//! keep their gradient. Dropout is left out (this is the deterministic
//! reference).
//!
//! The pair and the weights are the same in every layer, so the IPA
//! attention bias (`Linear(z)`) is computed once and its gradient summed over
//! the layers before one backward through the map; the pair gradient of the
//! attended pair rows is likewise accumulated for all layers in one pass at
//! the end (`Ipa::attended_pair_backward`).

use super::allatom::{
    Atom14, GroupFrames, Torsions, atom14_from_frames, atom14_from_frames_backward,
    frames_from_torsions, frames_from_torsions_backward,
};
use super::ipa::{Dense, Ipa, IpaCache, IpaDims, IpaInput, IpaParams};
use super::nn::{
    AngleResnet, AngleResnetCache, LayerNorm, Params, TORSIONS, Transition, TransitionCache,
    normalize_pairs, normalize_pairs_backward,
};
use super::rigid::{Mat3, Rigid};
use crate::error::{Result, ensure};
use rayon::prelude::*;

/// Sizes and constants of the structure module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StructureDims {
    /// The IPA sizes; `ipa.c_s` and `ipa.c_z` are the module's single and
    /// pair widths.
    pub ipa: IpaDims,
    /// Hidden width of the angle resnet.
    pub resnet_hidden: usize,
    /// Residual blocks of the angle resnet (2 in AF2).
    pub resnet_blocks: usize,
    /// Layers sharing the weights (8 in AF2).
    pub layers: usize,
    /// Factor from internal frame translations to Å (10 in AF2).
    pub position_scale: f64,
    /// Whether rotations pass between layers as a stopped gradient.
    pub stop_rotation_gradient: bool,
}

/// The parameters of the structure module (also the layout of their
/// gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct StructureParams {
    /// Norm of the incoming single representation.
    pub single_norm: LayerNorm,
    /// Norm of the incoming pair representation.
    pub pair_norm: LayerNorm,
    /// Normalised single → the first layer's single.
    pub input: Dense,
    /// The shared invariant point attention.
    pub ipa: IpaParams,
    /// Norm after the IPA residual.
    pub ipa_norm: LayerNorm,
    /// The shared transition.
    pub transition: Transition,
    /// Single → backbone update 6-vector (Alg. 23).
    pub backbone_update: Dense,
    /// The shared angle resnet.
    pub angle_resnet: AngleResnet,
}

impl Params for StructureParams {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let mut out = self.single_norm.tensors_mut();
        out.extend(self.pair_norm.tensors_mut());
        out.extend(self.input.tensors_mut());
        out.extend(Params::tensors_mut(&mut self.ipa));
        out.extend(self.ipa_norm.tensors_mut());
        out.extend(self.transition.tensors_mut());
        out.extend(self.backbone_update.tensors_mut());
        out.extend(self.angle_resnet.tensors_mut());
        out
    }
}

impl StructureParams {
    /// All-zero parameters, layer-norm scales included (a gradient
    /// accumulator, or a start for an initialiser).
    pub fn zeros(d: &StructureDims) -> StructureParams {
        let (c_s, c_z) = (d.ipa.c_s, d.ipa.c_z);
        let mut transition = Transition::zeros(c_s);
        transition.norm = LayerNorm::zeros(c_s);
        StructureParams {
            single_norm: LayerNorm::zeros(c_s),
            pair_norm: LayerNorm::zeros(c_z),
            input: Dense::zeros(c_s, c_s),
            ipa: IpaParams::zeros(&d.ipa),
            ipa_norm: LayerNorm::zeros(c_s),
            transition,
            backbone_update: Dense::zeros(c_s, 6),
            angle_resnet: AngleResnet::zeros(c_s, d.resnet_hidden, d.resnet_blocks),
        }
    }
}

/// The inputs of one structure-module evaluation.
#[derive(Clone, Copy, Debug)]
pub struct StructureInput<'a> {
    /// Single representation from the Evoformer, `residues × c_s`.
    pub single: &'a [f64],
    /// Pair representation, `residues × residues × c_z`.
    pub pair: &'a [f64],
    /// Residue types (0..=20), for the all-atom positions.
    pub aatype: &'a [u8],
    /// One weight per residue: 0 excludes it as an IPA key.
    pub mask: &'a [f64],
}

/// The outputs of the structure module.
#[derive(Clone, Debug)]
pub struct StructureOutput {
    /// Backbone frames of every layer, translations in Å: `[layer][residue]`.
    pub frames: Vec<Vec<Rigid>>,
    /// Unnormalised (sin, cos) pairs of every layer, `[layer][residue·14]`
    /// (for the angle-norm loss).
    pub angles_raw: Vec<Vec<f64>>,
    /// The same pairs normalised to unit length.
    pub angles: Vec<Vec<f64>>,
    /// The last layer's single representation, `residues × c_s`.
    pub single: Vec<f64>,
    /// The eight group frames per residue from the last layer, in Å.
    pub group_frames: Vec<GroupFrames>,
    /// Atom positions in the atom14 layout from the last layer, in Å.
    pub atom14: Vec<Atom14>,
}

/// Gradients of a loss with respect to the outputs (each the shape of its
/// [`StructureOutput`] field; `group_frames` and `atom14` may be empty for
/// zero).
#[derive(Clone, Debug)]
pub struct StructureOutputGrad {
    /// dL/d(frames), `[layer][residue]`.
    pub frames: Vec<Vec<Rigid>>,
    /// dL/d(angles_raw).
    pub angles_raw: Vec<Vec<f64>>,
    /// dL/d(angles).
    pub angles: Vec<Vec<f64>>,
    /// dL/d(single).
    pub single: Vec<f64>,
    /// dL/d(group_frames), or empty.
    pub group_frames: Vec<GroupFrames>,
    /// dL/d(atom14), or empty.
    pub atom14: Vec<Atom14>,
}

impl StructureOutputGrad {
    /// All-zero gradients shaped like `out`.
    pub fn zeros_like(out: &StructureOutput) -> StructureOutputGrad {
        StructureOutputGrad {
            frames: out
                .frames
                .iter()
                .map(|f| vec![Rigid::ZERO; f.len()])
                .collect(),
            angles_raw: out.angles_raw.iter().map(|a| vec![0.0; a.len()]).collect(),
            angles: out.angles.iter().map(|a| vec![0.0; a.len()]).collect(),
            single: vec![0.0; out.single.len()],
            group_frames: Vec::new(),
            atom14: Vec::new(),
        }
    }
}

/// Gradients of one structure-module evaluation.
#[derive(Clone, Debug)]
pub struct StructureGrad {
    /// dL/d(parameters).
    pub params: StructureParams,
    /// dL/d(single input).
    pub single: Vec<f64>,
    /// dL/d(pair input).
    pub pair: Vec<f64>,
}

/// The intermediates of one layer.
#[derive(Clone, Debug)]
struct LayerCache {
    /// Incoming frames (internal units).
    frames_in: Vec<Rigid>,
    /// Incoming single.
    single_in: Vec<f64>,
    ipa: IpaCache,
    /// `s + IPA(s)`, before its norm.
    after_ipa: Vec<f64>,
    /// The normalised sum, input of the transition.
    normed: Vec<f64>,
    transition: TransitionCache,
    /// The transition's output: the layer's single.
    single_out: Vec<f64>,
    /// Backbone update 6-vectors, one per residue.
    updates: Vec<[f64; 6]>,
    resnet: AngleResnetCache,
    /// The angle resnet's unnormalised output.
    angles_raw: Vec<f64>,
}

/// Intermediates of a forward pass, consumed by [`StructureModule::backward`].
#[derive(Clone, Debug)]
pub struct StructureCache {
    /// Normalised single input.
    single_initial: Vec<f64>,
    /// Normalised pair input.
    pair: Vec<f64>,
    /// The IPA attention bias of the normalised pair, `[i][j][head]`: the
    /// same in every layer (shared weights, unchanged pair), so computed once.
    pair_bias: Vec<f64>,
    layers: Vec<LayerCache>,
    /// Last layer's frames in Å and normalised angles, inputs of Alg. 24.
    last_frames: Vec<Rigid>,
    last_torsions: Vec<Torsions>,
}

/// The structure module: its sizes and parameters.
#[derive(Clone, Debug)]
pub struct StructureModule {
    /// Sizes and constants.
    pub dims: StructureDims,
    /// Parameters.
    pub params: StructureParams,
}

/// `r` with its translation multiplied by `s`.
fn scale_translation(r: &Rigid, s: f64) -> Rigid {
    Rigid {
        rot: r.rot,
        trans: r.trans.map(|x| x * s),
    }
}

fn to_torsions(angles: &[f64]) -> Vec<Torsions> {
    angles
        .chunks_exact(2 * TORSIONS)
        .map(|c| std::array::from_fn(|k| [c[2 * k], c[2 * k + 1]]))
        .collect()
}

/// Adds `b` into `a` entry by entry (in parallel when long).
fn add_into(a: &mut [f64], b: &[f64]) {
    if a.len() >= 1 << 16 {
        a.par_iter_mut().zip(b).for_each(|(x, y)| *x += y);
    } else {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    }
}

/// Adds every parameter of `from` into `into` (same layout).
fn accumulate_params<P: Params>(into: &mut P, from: &mut P) {
    for (a, b) in into.tensors_mut().into_iter().zip(from.tensors_mut()) {
        add_into(a, b);
    }
}

impl StructureModule {
    fn residues(&self, input: &StructureInput) -> Result<usize> {
        let (c_s, c_z) = (self.dims.ipa.c_s, self.dims.ipa.c_z);
        let n = input.aatype.len();
        ensure(
            input.single.len() == n * c_s
                && input.pair.len() == n * n * c_z
                && input.mask.len() == n,
            "structure module",
            || {
                format!(
                    "{n} residues need single of {} (got {}), pair of {} (got {}) and mask of {n} (got {})",
                    n * c_s,
                    input.single.len(),
                    n * n * c_z,
                    input.pair.len(),
                    input.mask.len()
                )
            },
        )?;
        ensure(self.dims.layers > 0, "structure module", || {
            "the module needs at least one layer".to_string()
        })?;
        Ok(n)
    }

    /// The module's outputs and the intermediates for backward.
    pub fn forward(&self, input: &StructureInput) -> Result<(StructureOutput, StructureCache)> {
        self.forward_with_rotations(input, None)
    }

    /// [`StructureModule::forward`], where `fixed_rotations[l][i]`, when
    /// given, replaces the rotation that layer `l + 1` receives for residue
    /// `i`: with the forward's own rotations, this is the function whose
    /// gradient the backward computes when rotations are a stopped gradient.
    fn forward_with_rotations(
        &self,
        input: &StructureInput,
        fixed_rotations: Option<&[Vec<Mat3>]>,
    ) -> Result<(StructureOutput, StructureCache)> {
        let n = self.residues(input)?;
        let d = &self.dims;
        let p = &self.params;
        let ipa = Ipa {
            dims: d.ipa,
            params: p.ipa.clone(),
        };
        let single_initial = p.single_norm.forward(input.single);
        let pair = p.pair_norm.forward(input.pair);
        let pair_bias = ipa.pair_bias(&pair);
        let mut single = p.input.forward(&single_initial);
        let mut frames = vec![Rigid::IDENTITY; n];
        let mut out = StructureOutput {
            frames: Vec::with_capacity(d.layers),
            angles_raw: Vec::with_capacity(d.layers),
            angles: Vec::with_capacity(d.layers),
            single: Vec::new(),
            group_frames: Vec::new(),
            atom14: Vec::new(),
        };
        let mut layers = Vec::with_capacity(d.layers);
        for l in 0..d.layers {
            if let (Some(fixed), true) = (fixed_rotations, l > 0) {
                for (f, r) in frames.iter_mut().zip(&fixed[l - 1]) {
                    f.rot = *r;
                }
            }
            let (ipa_out, ipa_cache) = ipa.forward_with_bias(
                &IpaInput {
                    single: &single,
                    pair: &pair,
                    frames: &frames,
                    mask: input.mask,
                },
                &pair_bias,
            )?;
            let mut after_ipa = single.clone();
            add_into(&mut after_ipa, &ipa_out);
            let normed = p.ipa_norm.forward(&after_ipa);
            let (single_out, transition) = p.transition.forward(&normed);
            let updates: Vec<[f64; 6]> = p
                .backbone_update
                .forward(&single_out)
                .chunks_exact(6)
                .map(|c| c.try_into().expect("chunks of six"))
                .collect();
            let frames_out: Vec<Rigid> = frames
                .iter()
                .zip(&updates)
                .map(|(f, u)| f.update(u))
                .collect();
            let (raw, resnet) = p.angle_resnet.forward(&single_out, &single_initial);
            out.frames.push(
                frames_out
                    .iter()
                    .map(|f| scale_translation(f, d.position_scale))
                    .collect(),
            );
            out.angles.push(normalize_pairs(&raw));
            out.angles_raw.push(raw.clone());
            layers.push(LayerCache {
                frames_in: std::mem::replace(&mut frames, frames_out),
                single_in: std::mem::replace(&mut single, single_out.clone()),
                ipa: ipa_cache,
                after_ipa,
                normed,
                transition,
                single_out,
                updates,
                resnet,
                angles_raw: raw,
            });
        }
        let last_frames = out.frames.last().expect("at least one layer").clone();
        let last_torsions = to_torsions(out.angles.last().expect("at least one layer"));
        out.group_frames = frames_from_torsions(input.aatype, &last_frames, &last_torsions)?;
        out.atom14 = atom14_from_frames(input.aatype, &out.group_frames)?;
        out.single = single;
        Ok((
            out,
            StructureCache {
                single_initial,
                pair,
                pair_bias,
                layers,
                last_frames,
                last_torsions,
            },
        ))
    }

    /// Gradients of `Σ grad ⊙ outputs` with respect to the parameters and
    /// the single and pair inputs.
    pub fn backward(
        &self,
        input: &StructureInput,
        cache: &StructureCache,
        grad: &StructureOutputGrad,
    ) -> Result<StructureGrad> {
        let n = self.residues(input)?;
        let d = &self.dims;
        let p = &self.params;
        let (c_s, c_z) = (d.ipa.c_s, d.ipa.c_z);
        ensure(
            grad.frames.len() == d.layers
                && grad.angles_raw.len() == d.layers
                && grad.angles.len() == d.layers
                && grad.single.len() == n * c_s
                && grad.frames.iter().all(|f| f.len() == n)
                && grad
                    .angles_raw
                    .iter()
                    .chain(&grad.angles)
                    .all(|a| a.len() == n * 2 * TORSIONS),
            "structure module backward",
            || {
                format!(
                    "output gradients do not match {} layers of {n} residues",
                    d.layers
                )
            },
        )?;
        let ipa = Ipa {
            dims: d.ipa,
            params: p.ipa.clone(),
        };
        let mut g = StructureGrad {
            params: StructureParams::zeros(d),
            single: vec![0.0; n * c_s],
            pair: vec![0.0; n * n * c_z],
        };
        // The all-atom outputs feed back into the last layer's frames and
        // normalised angles.
        let mut g_last_frames = vec![Rigid::ZERO; n];
        let mut g_last_angles = vec![0.0; n * 2 * TORSIONS];
        if !grad.group_frames.is_empty() || !grad.atom14.is_empty() {
            let mut g_groups = if grad.group_frames.is_empty() {
                vec![[Rigid::ZERO; 8]; n]
            } else {
                grad.group_frames.clone()
            };
            if !grad.atom14.is_empty() {
                let group_frames =
                    frames_from_torsions(input.aatype, &cache.last_frames, &cache.last_torsions)?;
                let g_from_atoms =
                    atom14_from_frames_backward(input.aatype, &group_frames, &grad.atom14)?;
                for (a, b) in g_groups.iter_mut().zip(&g_from_atoms) {
                    a.iter_mut().zip(b).for_each(|(x, y)| x.accumulate(y));
                }
            }
            let (g_bb, g_tors) = frames_from_torsions_backward(
                input.aatype,
                &cache.last_frames,
                &cache.last_torsions,
                &g_groups,
            )?;
            g_last_frames = g_bb;
            g_last_angles = g_tors.concat().concat();
        }
        let mut g_single = grad.single.clone();
        let mut g_frames_next = vec![Rigid::ZERO; n];
        let mut g_single_initial = vec![0.0; n * c_s];
        let mut g_pair = vec![0.0; n * n * c_z];
        let mut g_pair_bias = vec![0.0; cache.pair_bias.len()];
        // dL/d(attended pair rows) of each layer, last layer first.
        let mut g_attended_pair = Vec::with_capacity(d.layers);
        for (l, lc) in cache.layers.iter().enumerate().rev() {
            let last = l + 1 == d.layers;
            // Frames out: this layer's output (in Å) and the next layer's input.
            let g_frames_out: Vec<Rigid> = (0..n)
                .map(|i| {
                    let mut g_out = grad.frames[l][i];
                    if last {
                        g_out.accumulate(&g_last_frames[i]);
                    }
                    let mut g = scale_translation(&g_out, d.position_scale);
                    g.accumulate(&g_frames_next[i]);
                    g
                })
                .collect();
            // Angles.
            let mut g_angles = grad.angles[l].clone();
            if last {
                add_into(&mut g_angles, &g_last_angles);
            }
            let mut g_raw = grad.angles_raw[l].clone();
            add_into(
                &mut g_raw,
                &normalize_pairs_backward(&lc.angles_raw, &g_angles),
            );
            let (g_s_resnet, g_init_resnet) = p.angle_resnet.backward(
                &lc.single_out,
                &cache.single_initial,
                &lc.resnet,
                &g_raw,
                &mut g.params.angle_resnet,
            );
            add_into(&mut g_single, &g_s_resnet);
            add_into(&mut g_single_initial, &g_init_resnet);
            // Backbone update.
            let mut g_frames_in = vec![Rigid::ZERO; n];
            let mut g_updates = Vec::with_capacity(n * 6);
            for i in 0..n {
                let (g_in, g_u) = lc.frames_in[i].update_backward(&lc.updates[i], &g_frames_out[i]);
                g_frames_in[i] = g_in;
                g_updates.extend(g_u);
            }
            p.backbone_update.backward(
                &lc.single_out,
                &g_updates,
                &mut g.params.backbone_update,
                &mut g_single,
            );
            // Transition, norm, IPA.
            let g_normed = p.transition.backward(
                &lc.normed,
                &lc.transition,
                &g_single,
                &mut g.params.transition,
            );
            let mut g_after_ipa = vec![0.0; n * c_s];
            p.ipa_norm.backward(
                &lc.after_ipa,
                &g_normed,
                &mut g.params.ipa_norm,
                &mut g_after_ipa,
            );
            let mut ipa_grad = ipa.backward_to_bias(
                &IpaInput {
                    single: &lc.single_in,
                    pair: &cache.pair,
                    frames: &lc.frames_in,
                    mask: input.mask,
                },
                &lc.ipa,
                &g_after_ipa,
            )?;
            accumulate_params(&mut g.params.ipa, &mut ipa_grad.params);
            add_into(&mut g_pair_bias, &ipa_grad.bias);
            g_attended_pair.push(std::mem::take(&mut ipa_grad.attended_pair));
            for (a, b) in g_frames_in.iter_mut().zip(&ipa_grad.frames) {
                a.accumulate(b);
            }
            if d.stop_rotation_gradient {
                g_frames_in.iter_mut().for_each(|f| f.rot = [[0.0; 3]; 3]);
            }
            g_single = g_after_ipa;
            add_into(&mut g_single, &ipa_grad.single);
            g_frames_next = g_frames_in;
        }
        // The pair rows every layer attended, then the attention bias of
        // every layer, which came from one pair-bias map.
        let evaluations: Vec<_> = cache
            .layers
            .iter()
            .rev()
            .map(|lc| &lc.ipa)
            .zip(&g_attended_pair)
            .collect();
        ipa.attended_pair_backward(&evaluations, &mut g_pair);
        p.ipa.pair_bias.backward(
            &cache.pair,
            &g_pair_bias,
            &mut g.params.ipa.pair_bias,
            &mut g_pair,
        );
        // The first layer's frames are the constant identity; its single is
        // `input(single_initial)`.
        p.input.backward(
            &cache.single_initial,
            &g_single,
            &mut g.params.input,
            &mut g_single_initial,
        );
        p.single_norm.backward(
            input.single,
            &g_single_initial,
            &mut g.params.single_norm,
            &mut g.single,
        );
        p.pair_norm
            .backward(input.pair, &g_pair, &mut g.params.pair_norm, &mut g.pair);
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient_with_step, random};
    use crate::structure::nn::tests::randomize;
    use crate::structure::nn::{flatten_params, load_params};

    const AATYPE: [u8; 3] = [17, 7, 12];
    const MASK: [f64; 3] = [1.0, 1.0, 0.0];
    /// Finite-difference step: eight layers deep, a step of 1e-6 leaves
    /// rounding noise of ~1e-5 relative; at 1e-4 the truncation error is
    /// ~1e-8 relative.
    const STEP: f64 = 1e-4;

    fn module(stop_rotation_gradient: bool) -> StructureModule {
        let dims = StructureDims {
            ipa: IpaDims {
                c_s: 4,
                c_z: 3,
                heads: 2,
                head_dim: 2,
                query_points: 2,
                value_points: 2,
            },
            resnet_hidden: 3,
            resnet_blocks: 2,
            layers: 8,
            position_scale: 2.0,
            stop_rotation_gradient,
        };
        let mut params = StructureParams::zeros(&dims);
        randomize(&mut params, 11, 0.5);
        StructureModule { dims, params }
    }

    /// Every output value, in a fixed order.
    fn flatten_output(out: &StructureOutput) -> Vec<f64> {
        let mut v: Vec<f64> = out
            .frames
            .iter()
            .flatten()
            .flat_map(|r| r.to_array())
            .collect();
        v.extend(out.angles_raw.iter().flatten());
        v.extend(out.angles.iter().flatten());
        v.extend(&out.single);
        v.extend(out.group_frames.iter().flatten().flat_map(|r| r.to_array()));
        v.extend(out.atom14.iter().flatten().flatten());
        v
    }

    /// The output gradient holding `w` in [`flatten_output`] order.
    fn output_grad(out: &StructureOutput, w: &[f64]) -> StructureOutputGrad {
        let mut it = w.iter().copied();
        let mut take = |k: usize| -> Vec<f64> { it.by_ref().take(k).collect() };
        let rigid = |c: Vec<f64>| Rigid::from_array(&c.try_into().expect("twelve values"));
        let frames = out
            .frames
            .iter()
            .map(|f| f.iter().map(|_| rigid(take(12))).collect())
            .collect();
        let angles_raw = out.angles_raw.iter().map(|a| take(a.len())).collect();
        let angles = out.angles.iter().map(|a| take(a.len())).collect();
        let single = take(out.single.len());
        let group_frames = out
            .group_frames
            .iter()
            .map(|_| std::array::from_fn(|_| rigid(take(12))))
            .collect();
        let atom14 = out
            .atom14
            .iter()
            .map(|_| {
                std::array::from_fn(|_| {
                    let c = take(3);
                    [c[0], c[1], c[2]]
                })
            })
            .collect();
        StructureOutputGrad {
            frames,
            angles_raw,
            angles,
            single,
            group_frames,
            atom14,
        }
    }

    /// A forward under test: (module, single, pair) → outputs.
    type ForwardFn<'a> = &'a dyn Fn(&StructureModule, &[f64], &[f64]) -> StructureOutput;

    /// Checks the backward of `m` against central differences of
    /// `Σ w ⊙ outputs` in every parameter and input, where the outputs come
    /// from `forward(module, single, pair)`; returns the analytic gradient.
    fn check_module(m: &StructureModule, forward: ForwardFn) -> Vec<f64> {
        let n = AATYPE.len();
        let single = random(12, n * 4);
        let pair = random(13, n * n * 3);
        let input = StructureInput {
            single: &single,
            pair: &pair,
            aatype: &AATYPE,
            mask: &MASK,
        };
        let (out, cache) = m.forward(&input).unwrap();
        let w = random(14, flatten_output(&out).len());
        let loss = |m: &StructureModule, s: &[f64], z: &[f64]| -> f64 {
            flatten_output(&forward(m, s, z))
                .iter()
                .zip(&w)
                .map(|(a, b)| a * b)
                .sum()
        };
        let mut g = m.backward(&input, &cache, &output_grad(&out, &w)).unwrap();
        check_gradient_with_step(&|s| loss(m, s, &pair), &single, &g.single, STEP);
        check_gradient_with_step(&|z| loss(m, &single, z), &pair, &g.pair, STEP);
        let mut params = m.params.clone();
        let theta = flatten_params(&mut params);
        let f = |t: &[f64]| {
            let mut m2 = m.clone();
            load_params(&mut m2.params, t).unwrap();
            loss(&m2, &single, &pair)
        };
        let analytic = flatten_params(&mut g.params);
        check_gradient_with_step(&f, &theta, &analytic, STEP);
        analytic
    }

    fn plain_forward(m: &StructureModule, single: &[f64], pair: &[f64]) -> StructureOutput {
        let input = StructureInput {
            single,
            pair,
            aatype: &AATYPE,
            mask: &MASK,
        };
        m.forward(&input).unwrap().0
    }

    #[test]
    fn gradcheck_structure_module_with_rotation_gradients() {
        let m = module(false);
        check_module(&m, &plain_forward);
    }

    #[test]
    fn gradcheck_structure_module_with_stopped_rotations() {
        // With stopped rotations the backward differentiates the module in
        // which each layer's incoming rotations are constants equal to the
        // previous layer's output rotations at the evaluation point.
        let m = module(true);
        let n = AATYPE.len();
        let (single, pair) = (random(12, n * 4), random(13, n * n * 3));
        let base = plain_forward(&m, &single, &pair);
        let fixed: Vec<Vec<Mat3>> = base
            .frames
            .iter()
            .map(|f| f.iter().map(|r| r.rot).collect())
            .collect();
        let frozen = |m: &StructureModule, s: &[f64], z: &[f64]| {
            let input = StructureInput {
                single: s,
                pair: z,
                aatype: &AATYPE,
                mask: &MASK,
            };
            m.forward_with_rotations(&input, Some(&fixed)).unwrap().0
        };
        let stopped = check_module(&m, &frozen);
        let full = check_module(&module(false), &plain_forward);
        let differ = stopped
            .iter()
            .zip(&full)
            .any(|(a, b)| (a - b).abs() > 1e-6 * (1.0 + b.abs()));
        assert!(
            differ,
            "stopping the rotation gradient changes the gradient"
        );
    }

    #[test]
    fn outputs_are_proper_frames_and_unit_angles() {
        let m = module(true);
        let n = AATYPE.len();
        let out = plain_forward(&m, &random(1, n * 4), &random(2, n * n * 3));
        assert_eq!(out.frames.len(), 8);
        for f in out
            .frames
            .iter()
            .flatten()
            .chain(out.group_frames.iter().flatten())
        {
            let r = &f.rot;
            for i in 0..3 {
                for j in 0..3 {
                    let rtr: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                    // Group frames carry the f32 default frames: orthonormal to ~1e-7.
                    assert!((rtr - f64::from(u8::from(i == j))).abs() < 1e-6);
                }
            }
        }
        for pair in out.angles.iter().flatten().collect::<Vec<_>>().chunks(2) {
            assert!((pair[0].hypot(*pair[1]) - 1.0).abs() < 1e-6);
        }
        // Frames move between layers (the update is not the identity).
        assert!(out.frames[0][0].trans != out.frames[7][0].trans);
    }

    #[test]
    fn wrong_sizes_are_a_shape_error() {
        let m = module(true);
        let err = m
            .forward(&StructureInput {
                single: &[0.0; 8],
                pair: &[0.0; 27],
                aatype: &AATYPE,
                mask: &MASK,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("single of 12 (got 8)"), "{err}");
    }
}
