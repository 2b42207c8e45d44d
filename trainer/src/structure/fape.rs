//! Frame-aligned point error (AF2 supplement Alg. 28), forward and backward.
//!
//! Every predicted position is expressed in every predicted frame's local
//! coordinates and compared with the same true position in the matching true
//! frame: `d_ij = sqrt(|T_i⁻¹ x_j − T_iᵗʳᵘᵉ⁻¹ x_jᵗʳᵘᵉ|² + ε)`, clamped at
//! `clamp_distance` when one is given, divided by `length_scale`, and averaged
//! with weights `frame_mask_i · position_mask_j`, normalised by
//! `(ε + Σ frame_mask) (ε + Σ position_mask)`. The backbone variant uses the
//! backbone frames and their own translations (the CA atoms) as positions; the
//! side-chain variant uses all rigid-group frames and all atom positions
//! (after the caller has chosen the better of the true and the ambiguity-
//! renamed truth). Both go through one core, [`fape`] / [`fape_backward`].
//!
//! Gradients flow to the predicted frames and the predicted positions only;
//! the truth and masks are constants.

use super::rigid::{Rigid, Vec3, add, dot, scale, sub};
use crate::error::{Result, ensure};
use rayon::prelude::*;

/// The constants of one FAPE term.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FapeConfig {
    /// Distances above this (Å) contribute a constant and no gradient; `None`
    /// means unclamped (AF2 uses unclamped backbone FAPE in 10 % of batches).
    pub clamp_distance: Option<f64>,
    /// Divides every distance (Å).
    pub length_scale: f64,
    /// Added under the square root of every squared distance (Å²) and to each
    /// mask sum of the normaliser.
    pub epsilon: f64,
}

impl FapeConfig {
    /// Backbone FAPE as in AF2 training: clamp 10 Å, scale 10 Å, ε 1e-4.
    pub const BACKBONE: FapeConfig = FapeConfig {
        clamp_distance: Some(10.0),
        length_scale: 10.0,
        epsilon: 1e-4,
    };
    /// Side-chain FAPE as in AF2 training: clamp 10 Å, scale 10 Å, ε 1e-4.
    pub const SIDECHAIN: FapeConfig = FapeConfig {
        clamp_distance: Some(10.0),
        length_scale: 10.0,
        epsilon: 1e-4,
    };
}

/// The inputs of one FAPE evaluation: predicted and true frames (same length,
/// with one mask weight each) and predicted and true positions (same length,
/// with one mask weight each). Masks are usually 0 or 1.
#[derive(Clone, Copy, Debug)]
pub struct FapeInput<'a> {
    /// Predicted frames.
    pub pred_frames: &'a [Rigid],
    /// True frames.
    pub true_frames: &'a [Rigid],
    /// Weight of each frame.
    pub frame_mask: &'a [f64],
    /// Predicted positions (Å).
    pub pred_positions: &'a [Vec3],
    /// True positions (Å).
    pub true_positions: &'a [Vec3],
    /// Weight of each position.
    pub position_mask: &'a [f64],
}

impl FapeInput<'_> {
    fn validate(&self) -> Result<()> {
        let frames = self.pred_frames.len();
        ensure(
            self.true_frames.len() == frames && self.frame_mask.len() == frames,
            "fape",
            || {
                format!(
                    "pred_frames has {frames} entries, true_frames {} and frame_mask {}: expected equal lengths",
                    self.true_frames.len(),
                    self.frame_mask.len()
                )
            },
        )?;
        let positions = self.pred_positions.len();
        ensure(
            self.true_positions.len() == positions && self.position_mask.len() == positions,
            "fape",
            || {
                format!(
                    "pred_positions has {positions} entries, true_positions {} and position_mask {}: expected equal lengths",
                    self.true_positions.len(),
                    self.position_mask.len()
                )
            },
        )
    }
}

/// Gradients of a FAPE value with respect to the predicted frames and positions.
#[derive(Clone, Debug, PartialEq)]
pub struct FapeGrad {
    /// dL/d(pred_frames), one [`Rigid`]-shaped gradient per frame.
    pub frames: Vec<Rigid>,
    /// dL/d(pred_positions).
    pub positions: Vec<Vec3>,
}

/// The FAPE value of `input` (dimensionless: distances over `length_scale`).
pub fn fape(input: &FapeInput, cfg: &FapeConfig) -> Result<f64> {
    input.validate()?;
    Ok(fape_core(input, cfg, None))
}

/// Gradients of `grad_loss · fape(input)` with respect to the predictions.
pub fn fape_backward(input: &FapeInput, cfg: &FapeConfig, grad_loss: f64) -> Result<FapeGrad> {
    input.validate()?;
    let mut grad = FapeGrad {
        frames: vec![Rigid::ZERO; input.pred_frames.len()],
        positions: vec![[0.0; 3]; input.pred_positions.len()],
    };
    fape_core(input, cfg, Some((&mut grad, grad_loss)));
    Ok(grad)
}

/// The one loop behind the forward and the backward: returns the loss and,
/// when `grad` is given, adds `grad_loss · dL/d(prediction)` into it.
/// Blocks of [`BLOCK_FRAMES`] frames run in parallel, each with its own
/// partial sums, added in block order: the result does not depend on the
/// thread count.
fn fape_core(input: &FapeInput, cfg: &FapeConfig, grad: Option<(&mut FapeGrad, f64)>) -> f64 {
    let frame_sum: f64 = input.frame_mask.iter().sum();
    let position_sum: f64 = input.position_mask.iter().sum();
    let norm = 1.0 / (cfg.length_scale * (cfg.epsilon + frame_sum) * (cfg.epsilon + position_sum));
    let clamp = cfg.clamp_distance.unwrap_or(f64::INFINITY);
    let grad_loss = grad.as_ref().map(|(_, g)| *g);
    let frames = input.pred_frames.len();
    let positions = input.pred_positions.len();
    let blocks: Vec<FapeBlock> = (0..frames.div_ceil(BLOCK_FRAMES))
        .into_par_iter()
        .map(|b| {
            let start = b * BLOCK_FRAMES;
            let end = frames.min(start + BLOCK_FRAMES);
            let mut block = FapeBlock {
                total: 0.0,
                frames: Vec::new(),
                positions: Vec::new(),
            };
            if grad_loss.is_some() {
                block.frames = vec![Rigid::ZERO; end - start];
                block.positions = vec![[0.0; 3]; positions];
            }
            for i in start..end {
                let frame_weight = input.frame_mask[i];
                if frame_weight == 0.0 {
                    continue;
                }
                let (pred_frame, true_frame) = (&input.pred_frames[i], &input.true_frames[i]);
                for (j, (pred_x, true_x)) in input
                    .pred_positions
                    .iter()
                    .zip(input.true_positions)
                    .enumerate()
                {
                    let weight = frame_weight * input.position_mask[j];
                    if weight == 0.0 {
                        continue;
                    }
                    let local_pred = pred_frame.invert_apply(pred_x);
                    let diff = sub(&local_pred, &true_frame.invert_apply(true_x));
                    let dist = (dot(&diff, &diff) + cfg.epsilon).sqrt();
                    block.total += weight * dist.min(clamp);
                    if let Some(grad_loss) = grad_loss
                        && dist < clamp
                    {
                        let g_local = scale(&diff, grad_loss * weight * norm / dist);
                        let (g_frame, g_x) = pred_frame.invert_apply_backward(pred_x, &g_local);
                        block.frames[i - start].accumulate(&g_frame);
                        let p = &mut block.positions[j];
                        *p = add(p, &g_x);
                    }
                }
            }
            block
        })
        .collect();
    let mut total = 0.0;
    let mut grad = grad;
    for (b, block) in blocks.iter().enumerate() {
        total += block.total;
        if let Some((g, _)) = grad.as_mut() {
            for (k, f) in block.frames.iter().enumerate() {
                g.frames[b * BLOCK_FRAMES + k].accumulate(f);
            }
            for (p, q) in g.positions.iter_mut().zip(&block.positions) {
                *p = add(p, q);
            }
        }
    }
    total * norm
}

/// Frames per parallel block of the FAPE loop.
const BLOCK_FRAMES: usize = 32;

/// One block's share of the FAPE loop: its part of the sum and, for a
/// backward, the gradients of its frames and its additions to every
/// position's gradient.
struct FapeBlock {
    total: f64,
    frames: Vec<Rigid>,
    positions: Vec<Vec3>,
}

/// Backbone FAPE: frames are the backbone frames, positions their translations
/// (the CA atoms), weighted by one residue mask.
pub fn backbone_fape(
    pred_frames: &[Rigid],
    true_frames: &[Rigid],
    mask: &[f64],
    cfg: &FapeConfig,
) -> Result<f64> {
    let (pred_ca, true_ca) = (translations(pred_frames), translations(true_frames));
    fape(
        &backbone_input(pred_frames, true_frames, mask, &pred_ca, &true_ca),
        cfg,
    )
}

/// Backward of [`backbone_fape`]: the gradient with respect to each predicted
/// frame, including the path through its translation used as a position.
pub fn backbone_fape_backward(
    pred_frames: &[Rigid],
    true_frames: &[Rigid],
    mask: &[f64],
    cfg: &FapeConfig,
    grad_loss: f64,
) -> Result<Vec<Rigid>> {
    let (pred_ca, true_ca) = (translations(pred_frames), translations(true_frames));
    let input = backbone_input(pred_frames, true_frames, mask, &pred_ca, &true_ca);
    let FapeGrad {
        mut frames,
        positions,
    } = fape_backward(&input, cfg, grad_loss)?;
    for (frame, g_ca) in frames.iter_mut().zip(&positions) {
        frame.trans = add(&frame.trans, g_ca);
    }
    Ok(frames)
}

fn translations(frames: &[Rigid]) -> Vec<Vec3> {
    frames.iter().map(|f| f.trans).collect()
}

fn backbone_input<'a>(
    pred_frames: &'a [Rigid],
    true_frames: &'a [Rigid],
    mask: &'a [f64],
    pred_ca: &'a [Vec3],
    true_ca: &'a [Vec3],
) -> FapeInput<'a> {
    FapeInput {
        pred_frames,
        true_frames,
        frame_mask: mask,
        pred_positions: pred_ca,
        true_positions: true_ca,
        position_mask: mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient, random};
    use crate::structure::rigid::rigid_from_update;

    fn random_rigids(seed: u64, n: usize) -> Vec<Rigid> {
        let u = random(seed, 6 * n);
        (0..n)
            .map(|k| {
                let v: [f64; 6] = std::array::from_fn(|i| 3.0 * u[6 * k + i]);
                rigid_from_update(&v)
            })
            .collect()
    }

    fn random_points(seed: u64, n: usize, spread: f64) -> Vec<Vec3> {
        random(seed, 3 * n)
            .chunks(3)
            .map(|c| [spread * c[0], spread * c[1], spread * c[2]])
            .collect()
    }

    #[test]
    fn forward_matches_hand_computed_values() {
        let frames = [Rigid::IDENTITY];
        let truth = [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]];
        let eps: f64 = 1e-4;
        let mask = [1.0];
        let pos_mask = [1.0, 1.0];
        let norm = 10.0 * (1.0 + eps) * (2.0 + eps);
        // Position 1 off by (3, 4, 0): distance 5 Å; position 0 exact.
        let pred = [[0.0, 0.0, 0.0], [4.0, 6.0, 3.0]];
        let input = FapeInput {
            pred_frames: &frames,
            true_frames: &frames,
            frame_mask: &mask,
            pred_positions: &pred,
            true_positions: &truth,
            position_mask: &pos_mask,
        };
        let expected = ((25.0 + eps).sqrt() + eps.sqrt()) / norm;
        let got = fape(&input, &FapeConfig::BACKBONE).unwrap();
        assert!((got - expected).abs() < 1e-15, "{got} vs {expected}");
        // Off by (30, 40, 0): clamped to 10 Å, unclamped 50 Å.
        let far = [[0.0, 0.0, 0.0], [31.0, 42.0, 3.0]];
        let input = FapeInput {
            pred_positions: &far,
            ..input
        };
        let clamped = fape(&input, &FapeConfig::BACKBONE).unwrap();
        assert!((clamped - (10.0 + eps.sqrt()) / norm).abs() < 1e-15);
        let unclamped_cfg = FapeConfig {
            clamp_distance: None,
            ..FapeConfig::BACKBONE
        };
        let unclamped = fape(&input, &unclamped_cfg).unwrap();
        assert!((unclamped - ((2500.0 + eps).sqrt() + eps.sqrt()) / norm).abs() < 1e-15);
        // A masked position contributes nothing and leaves the normaliser at one.
        let input = FapeInput {
            position_mask: &[1.0, 0.0],
            ..input
        };
        let masked = fape(&input, &FapeConfig::BACKBONE).unwrap();
        assert!((masked - eps.sqrt() / (10.0 * (1.0 + eps) * (1.0 + eps))).abs() < 1e-15);
        // A rotated predicted frame sees a correct position as misplaced:
        // a quarter turn about z maps local (1, 2, 3) to global (−2, 1, 3).
        let quarter = [rigid_from_update(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0])];
        let input = FapeInput {
            pred_frames: &quarter,
            pred_positions: &truth,
            position_mask: &pos_mask,
            ..input
        };
        // Local coordinates of (1, 2, 3) in the turned frame: (2, −1, 3).
        let d2: f64 = 1.0 + 9.0;
        let expected = ((d2 + eps).sqrt() + eps.sqrt()) / norm;
        let got = fape(&input, &FapeConfig::BACKBONE).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn invariant_under_global_rigid_transforms() {
        let (nf, np) = (4, 6);
        let pred_frames = random_rigids(1, nf);
        let true_frames = random_rigids(2, nf);
        let pred_x = random_points(3, np, 8.0);
        let true_x = random_points(4, np, 8.0);
        let frame_mask = [1.0, 0.0, 1.0, 1.0];
        let position_mask = [1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
        let input = FapeInput {
            pred_frames: &pred_frames,
            true_frames: &true_frames,
            frame_mask: &frame_mask,
            pred_positions: &pred_x,
            true_positions: &true_x,
            position_mask: &position_mask,
        };
        let cfg = FapeConfig::BACKBONE;
        let base = fape(&input, &cfg).unwrap();
        let (g, h) = (random_rigids(5, 1)[0], random_rigids(6, 1)[0]);
        let moved_pred_frames: Vec<Rigid> = pred_frames.iter().map(|f| g.compose(f)).collect();
        let moved_true_frames: Vec<Rigid> = true_frames.iter().map(|f| h.compose(f)).collect();
        let moved_pred_x: Vec<Vec3> = pred_x.iter().map(|x| g.apply(x)).collect();
        let moved_true_x: Vec<Vec3> = true_x.iter().map(|x| h.apply(x)).collect();
        let moved = fape(
            &FapeInput {
                pred_frames: &moved_pred_frames,
                true_frames: &moved_true_frames,
                pred_positions: &moved_pred_x,
                true_positions: &moved_true_x,
                ..input
            },
            &cfg,
        )
        .unwrap();
        assert!(base > 0.1, "a non-trivial loss: {base}");
        assert!((base - moved).abs() < 1e-12, "{base} vs {moved}");
    }

    #[test]
    fn mismatched_lengths_are_a_shape_error() {
        let frames = [Rigid::IDENTITY];
        let x = [[0.0; 3]];
        let input = FapeInput {
            pred_frames: &frames,
            true_frames: &frames,
            frame_mask: &[1.0, 1.0],
            pred_positions: &x,
            true_positions: &x,
            position_mask: &[1.0],
        };
        let err = fape(&input, &FapeConfig::BACKBONE).unwrap_err().to_string();
        assert!(err.contains("frame_mask 2"), "{err}");
    }

    fn flatten(frames: &[Rigid], points: &[Vec3]) -> Vec<f64> {
        frames
            .iter()
            .flat_map(|f| f.to_array())
            .chain(points.iter().flatten().copied())
            .collect()
    }

    fn unflatten(p: &[f64], nf: usize) -> (Vec<Rigid>, Vec<Vec3>) {
        let frames = p[..12 * nf]
            .chunks(12)
            .map(|c| Rigid::from_array(c.try_into().unwrap()))
            .collect();
        let points = p[12 * nf..].chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        (frames, points)
    }

    #[test]
    fn gradcheck_fape_clamped_and_unclamped() {
        let (nf, np) = (3, 5);
        let true_frames = random_rigids(7, nf);
        let true_x = random_points(8, np, 6.0);
        let frame_mask = [1.0, 1.0, 0.0];
        let position_mask = [1.0, 0.0, 1.0, 1.0, 1.0];
        // Predictions near the truth with a few far outliers (beyond 10 Å).
        let pred_frames = random_rigids(9, nf);
        let mut pred_x = random_points(10, np, 6.0);
        pred_x[4] = [40.0, -30.0, 20.0];
        let p0 = flatten(&pred_frames, &pred_x);
        for cfg in [
            FapeConfig::SIDECHAIN,
            FapeConfig {
                clamp_distance: None,
                ..FapeConfig::SIDECHAIN
            },
        ] {
            let input_at = |frames: &'_ [Rigid], x: &'_ [Vec3]| -> f64 {
                fape(
                    &FapeInput {
                        pred_frames: frames,
                        true_frames: &true_frames,
                        frame_mask: &frame_mask,
                        pred_positions: x,
                        true_positions: &true_x,
                        position_mask: &position_mask,
                    },
                    &cfg,
                )
                .unwrap()
            };
            let f = |p: &[f64]| {
                let (fr, x) = unflatten(p, nf);
                input_at(&fr, &x)
            };
            let grad = fape_backward(
                &FapeInput {
                    pred_frames: &pred_frames,
                    true_frames: &true_frames,
                    frame_mask: &frame_mask,
                    pred_positions: &pred_x,
                    true_positions: &true_x,
                    position_mask: &position_mask,
                },
                &cfg,
                1.0,
            )
            .unwrap();
            let analytic = flatten(&grad.frames, &grad.positions);
            assert!(analytic.iter().any(|g| g.abs() > 1e-3));
            check_gradient(&f, &p0, &analytic);
            // The outlier's gradient is zero exactly when clamped.
            assert_eq!(grad.positions[4] == [0.0; 3], cfg.clamp_distance.is_some());
        }
    }

    #[test]
    fn gradcheck_backbone_fape_through_update_parameters() {
        // The gradient reaches the 6-vector updates of the predicted frames
        // through both their use as frames and as positions.
        let n = 4;
        let base = random_rigids(11, n);
        let true_frames = random_rigids(12, n);
        let mask = [1.0, 1.0, 1.0, 0.0];
        let cfg = FapeConfig::BACKBONE;
        let updates = random(13, 6 * n);
        let frames_at = |u: &[f64]| -> Vec<Rigid> {
            base.iter()
                .enumerate()
                .map(|(k, f)| f.update(&u[6 * k..6 * k + 6].try_into().unwrap()))
                .collect()
        };
        let f = |u: &[f64]| backbone_fape(&frames_at(u), &true_frames, &mask, &cfg).unwrap();
        let g_frames =
            backbone_fape_backward(&frames_at(&updates), &true_frames, &mask, &cfg, 1.0).unwrap();
        let analytic: Vec<f64> = base
            .iter()
            .zip(&g_frames)
            .enumerate()
            .flat_map(|(k, (f, g))| {
                f.update_backward(&updates[6 * k..6 * k + 6].try_into().unwrap(), g)
                    .1
            })
            .collect();
        assert!(analytic.iter().any(|g| g.abs() > 1e-3));
        check_gradient(&f, &updates, &analytic);
    }
}
