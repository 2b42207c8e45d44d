//! Torsion-angle loss (AF2 supplement Alg. 27), forward and backward.
//!
//! Each torsion is predicted as an unnormalised 2-vector `α̃ = (sin, cos)·ℓ`.
//! With `ℓ = sqrt(|α̃|² + ε)` and `α̂ = α̃ / ℓ`, the loss is
//! `L = L_torsion + w · L_anglenorm` where
//! `L_torsion = mean_mask min(|α̂ − α|², |α̂ − αᵃˡᵗ|²)` and
//! `L_anglenorm = mean_mask |ℓ − 1|`, each a masked mean
//! `Σ mask·x / (ε_mask + Σ mask)`. The alternative truth `αᵃˡᵗ` equals `α`
//! except for the pi-periodic side-chain torsions, where it is `α + π`, that
//! is `−α` as a (sin, cos) pair ([`alternative_torsions`]). Alg. 27 averages
//! over all seven torsions of a residue; a caller wanting side-chain angles
//! only (as some implementations do) zeroes the backbone torsions' mask.

use super::rigid::{add, dot, normalize, normalize_backward, scale, sub};
use crate::error::{Result, ensure};

/// The constants of the torsion-angle loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorsionConfig {
    /// Weight `w` of the angle-norm penalty (0.02 in AF2).
    pub angle_norm_weight: f64,
    /// Added under the square root of `|α̃|²`.
    pub norm_epsilon: f64,
    /// Added to the mask sum of each masked mean.
    pub mask_epsilon: f64,
}

impl TorsionConfig {
    /// The AF2 training values: angle-norm weight 0.02.
    pub const AF2: TorsionConfig = TorsionConfig {
        angle_norm_weight: 0.02,
        norm_epsilon: 1e-8,
        mask_epsilon: 1e-4,
    };
}

/// The inputs of one torsion loss: predicted unnormalised (sin, cos) pairs,
/// the true and alternative true pairs and one mask weight per torsion, all
/// flattened the same way (for example residue-major, seven torsions each).
#[derive(Clone, Copy, Debug)]
pub struct TorsionInput<'a> {
    /// Predicted unnormalised (sin, cos).
    pub pred: &'a [[f64; 2]],
    /// True (sin, cos).
    pub truth: &'a [[f64; 2]],
    /// Alternative true (sin, cos): the truth shifted by π for pi-periodic torsions.
    pub alt_truth: &'a [[f64; 2]],
    /// Weight of each torsion (0 where the torsion does not exist or is unresolved).
    pub mask: &'a [f64],
}

/// The two terms of the loss and their weighted sum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorsionLoss {
    /// `L_torsion`.
    pub torsion: f64,
    /// `L_anglenorm` (unweighted).
    pub angle_norm: f64,
    /// `L_torsion + angle_norm_weight · L_anglenorm`.
    pub total: f64,
}

/// The alternative truth: `−α` where `pi_periodic` is set, `α` elsewhere.
pub fn alternative_torsions(truth: &[[f64; 2]], pi_periodic: &[bool]) -> Result<Vec<[f64; 2]>> {
    ensure(
        truth.len() == pi_periodic.len(),
        "alternative_torsions",
        || {
            format!(
                "truth has {} torsions and pi_periodic {}: expected equal lengths",
                truth.len(),
                pi_periodic.len()
            )
        },
    )?;
    Ok(truth
        .iter()
        .zip(pi_periodic)
        .map(|(a, &periodic)| if periodic { scale(a, -1.0) } else { *a })
        .collect())
}

/// The torsion-angle loss of `input`.
pub fn torsion_loss(input: &TorsionInput, cfg: &TorsionConfig) -> Result<TorsionLoss> {
    validate(input)?;
    Ok(torsion_core(input, cfg, None))
}

/// Gradient of `grad_total · L.total` with respect to the predicted pairs.
pub fn torsion_loss_backward(
    input: &TorsionInput,
    cfg: &TorsionConfig,
    grad_total: f64,
) -> Result<Vec<[f64; 2]>> {
    validate(input)?;
    let mut grad = vec![[0.0; 2]; input.pred.len()];
    torsion_core(input, cfg, Some((&mut grad, grad_total)));
    Ok(grad)
}

fn validate(input: &TorsionInput) -> Result<()> {
    let n = input.pred.len();
    ensure(
        input.truth.len() == n && input.alt_truth.len() == n && input.mask.len() == n,
        "torsion_loss",
        || {
            format!(
                "pred has {n} torsions, truth {}, alt_truth {} and mask {}: expected equal lengths",
                input.truth.len(),
                input.alt_truth.len(),
                input.mask.len()
            )
        },
    )
}

/// The one loop behind the forward and the backward: returns the loss and,
/// when `grad` is given, adds `grad_total · dL.total/d(pred)` into it.
fn torsion_core(
    input: &TorsionInput,
    cfg: &TorsionConfig,
    mut grad: Option<(&mut [[f64; 2]], f64)>,
) -> TorsionLoss {
    let inv_mask = 1.0 / (cfg.mask_epsilon + input.mask.iter().sum::<f64>());
    let (mut torsion, mut angle_norm) = (0.0, 0.0);
    for (k, pred) in input.pred.iter().enumerate() {
        let weight = input.mask[k];
        if weight == 0.0 {
            continue;
        }
        let unit = normalize(pred, cfg.norm_epsilon);
        let length = (dot(pred, pred) + cfg.norm_epsilon).sqrt();
        let to_truth = sub(&unit, &input.truth[k]);
        let to_alt = sub(&unit, &input.alt_truth[k]);
        let (d_truth, d_alt) = (dot(&to_truth, &to_truth), dot(&to_alt, &to_alt));
        let nearest = if d_alt < d_truth { to_alt } else { to_truth };
        torsion += weight * d_truth.min(d_alt);
        angle_norm += weight * (length - 1.0).abs();
        if let Some((g, grad_total)) = grad.as_mut() {
            let w = *grad_total * weight * inv_mask;
            let g_unit = scale(&nearest, 2.0 * w);
            let g_pred = normalize_backward(pred, cfg.norm_epsilon, &g_unit);
            // d|ℓ − 1|/dα̃ = sign(ℓ − 1) α̃ / ℓ.
            let g_norm = scale(
                pred,
                w * cfg.angle_norm_weight * (length - 1.0).signum() / length,
            );
            g[k] = add(&g[k], &add(&g_pred, &g_norm));
        }
    }
    let (torsion, angle_norm) = (torsion * inv_mask, angle_norm * inv_mask);
    TorsionLoss {
        torsion,
        angle_norm,
        total: torsion + cfg.angle_norm_weight * angle_norm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient, random};

    fn pair(angle: f64, length: f64) -> [f64; 2] {
        [length * angle.sin(), length * angle.cos()]
    }

    #[test]
    fn forward_matches_hand_computed_values() {
        let cfg = TorsionConfig {
            norm_epsilon: 0.0,
            ..TorsionConfig::AF2
        };
        // Torsion 0: predicted at 0.3 rad with length 2, truth 0 rad.
        // Torsion 1: pi-periodic, predicted at π + 0.1 with length 0.5, truth 0:
        // the alternative (π) is nearer. Torsion 2 is masked out.
        let truth = [pair(0.0, 1.0), pair(0.0, 1.0), pair(1.0, 1.0)];
        let alt = alternative_torsions(&truth, &[false, true, false]).unwrap();
        let pred = [
            pair(0.3, 2.0),
            pair(std::f64::consts::PI + 0.1, 0.5),
            pair(2.0, 3.0),
        ];
        let mask = [1.0, 1.0, 0.0];
        let input = TorsionInput {
            pred: &pred,
            truth: &truth,
            alt_truth: &alt,
            mask: &mask,
        };
        let loss = torsion_loss(&input, &cfg).unwrap();
        // |unit(a) − unit(b)|² = 2 − 2 cos(a − b).
        let chord = |d: f64| 2.0 - 2.0 * d.cos();
        let denom = 2.0 + cfg.mask_epsilon;
        let torsion = (chord(0.3) + chord(0.1)) / denom;
        let angle_norm = (1.0 + 0.5) / denom;
        assert!((loss.torsion - torsion).abs() < 1e-14, "{loss:?}");
        assert!((loss.angle_norm - angle_norm).abs() < 1e-14, "{loss:?}");
        assert!((loss.total - (torsion + 0.02 * angle_norm)).abs() < 1e-14);
        // Without the alternative the second torsion is almost opposite.
        let no_alt = torsion_loss(
            &TorsionInput {
                alt_truth: &truth,
                ..input
            },
            &cfg,
        )
        .unwrap();
        assert!(
            (no_alt.torsion - (chord(0.3) + chord(std::f64::consts::PI + 0.1)) / denom).abs()
                < 1e-14
        );
    }

    #[test]
    fn mismatched_lengths_are_a_shape_error() {
        let p = [[0.0, 1.0]];
        let input = TorsionInput {
            pred: &p,
            truth: &p,
            alt_truth: &p,
            mask: &[],
        };
        let err = torsion_loss(&input, &TorsionConfig::AF2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mask 0"), "{err}");
        assert!(alternative_torsions(&p, &[true, false]).is_err());
    }

    #[test]
    fn gradcheck_torsion_loss() {
        let n = 14; // two residues of seven torsions
        let truth: Vec<[f64; 2]> = random(1, n).iter().map(|&a| pair(3.0 * a, 1.0)).collect();
        let periodic: Vec<bool> = (0..n).map(|k| k % 7 >= 5).collect();
        let alt = alternative_torsions(&truth, &periodic).unwrap();
        let mask: Vec<f64> = (0..n)
            .map(|k| if k == 3 || k == 12 { 0.0 } else { 1.0 })
            .collect();
        // Lengths both below and above one; angles anywhere.
        let raw = random(2, 2 * n);
        let pred: Vec<[f64; 2]> = (0..n)
            .map(|k| pair(3.1 * raw[2 * k], 1.0 + 0.6 * raw[2 * k + 1]))
            .collect();
        let cfg = TorsionConfig::AF2;
        let to_pairs = |p: &[f64]| -> Vec<[f64; 2]> { p.chunks(2).map(|c| [c[0], c[1]]).collect() };
        let f = |p: &[f64]| {
            let pred = to_pairs(p);
            let input = TorsionInput {
                pred: &pred,
                truth: &truth,
                alt_truth: &alt,
                mask: &mask,
            };
            torsion_loss(&input, &cfg).unwrap().total
        };
        let input = TorsionInput {
            pred: &pred,
            truth: &truth,
            alt_truth: &alt,
            mask: &mask,
        };
        let analytic: Vec<f64> = torsion_loss_backward(&input, &cfg, 1.0).unwrap().concat();
        assert!(analytic.iter().any(|g| g.abs() > 1e-3));
        let x: Vec<f64> = pred.concat();
        check_gradient(&f, &x, &analytic);
        // Masked torsions get no gradient.
        assert_eq!(&analytic[6..8], &[0.0, 0.0]);
    }
}
