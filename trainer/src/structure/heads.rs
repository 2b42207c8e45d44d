//! The auxiliary heads of AF2 and their losses on the CPU in f64 (supplement
//! 1.9): distogram (1.9.8), masked MSA (1.9.9), pLDDT with the lDDT-Cα
//! binned target (1.9.6) and experimentally resolved (1.9.10).
//!
//! A head is a small map from a representation to logits, with a forward and
//! a backward like the rest of this module. A loss takes logits and targets
//! and returns a [`LossGrad`]: its value and its gradient with respect to the
//! logits, computed in one pass (targets are constants). Every loss is a
//! masked mean `Σ w·ℓ / (ε + Σ w)` with ε = [`MASK_EPSILON`].

use super::ipa::Dense;
use super::nn::{LayerNorm, Params, relu, relu_backward};
use super::rigid::Vec3;
use crate::error::{Result, ensure};
use rayon::prelude::*;

/// Epsilon in the denominator of every masked mean.
pub const MASK_EPSILON: f64 = 1e-8;

/// A loss value and its gradient with respect to the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGrad {
    /// The loss.
    pub value: f64,
    /// dL/d(logits), the logits' shape.
    pub grad: Vec<f64>,
}

/// Softmax cross-entropy of `rows × classes` logits against one class per
/// row, as a masked mean with one weight per row.
pub fn softmax_cross_entropy(
    logits: &[f64],
    classes: usize,
    targets: &[usize],
    weights: &[f64],
) -> Result<LossGrad> {
    let rows = targets.len();
    ensure(
        classes > 0 && logits.len() == rows * classes && weights.len() == rows,
        "softmax_cross_entropy",
        || {
            format!(
                "{rows} targets of {classes} classes need {} logits (got {}) and {rows} weights (got {})",
                rows * classes,
                logits.len(),
                weights.len()
            )
        },
    )?;
    if let Some((r, t)) = targets.iter().enumerate().find(|(_, t)| **t >= classes) {
        return Err(crate::error::TrainerError::Shape {
            op: "softmax_cross_entropy",
            detail: format!("row {r} has target class {t}, expected below {classes}"),
        });
    }
    let norm = 1.0 / (MASK_EPSILON + weights.iter().sum::<f64>());
    let mut grad = vec![0.0; logits.len()];
    // Blocks of rows in parallel, each returning its share of the value;
    // the shares are added in order (independent of the thread count).
    let chunk = LOSS_BLOCK_ROWS * classes;
    let shares: Vec<f64> = logits
        .par_chunks(chunk)
        .zip(grad.par_chunks_mut(chunk))
        .enumerate()
        .map(|(b, (block, g_block))| {
            let mut value = 0.0;
            for (k, (row, g_row)) in block
                .chunks_exact(classes)
                .zip(g_block.chunks_exact_mut(classes))
                .enumerate()
            {
                let r = b * LOSS_BLOCK_ROWS + k;
                if weights[r] == 0.0 {
                    continue;
                }
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = row.iter().map(|x| (x - max).exp()).sum();
                let log_z = max + sum.ln();
                value += weights[r] * (log_z - row[targets[r]]) * norm;
                for (c, (x, g)) in row.iter().zip(g_row.iter_mut()).enumerate() {
                    let p = (x - log_z).exp();
                    let onehot = if c == targets[r] { 1.0 } else { 0.0 };
                    *g = weights[r] * norm * (p - onehot);
                }
            }
            value
        })
        .collect();
    Ok(LossGrad {
        value: shares.iter().sum(),
        grad,
    })
}

/// Rows per parallel block of [`softmax_cross_entropy`].
const LOSS_BLOCK_ROWS: usize = 1024;

/// Sigmoid cross-entropy of independent logits against targets in [0, 1], as
/// a masked mean with one weight per logit.
pub fn sigmoid_cross_entropy(logits: &[f64], targets: &[f64], weights: &[f64]) -> Result<LossGrad> {
    ensure(
        targets.len() == logits.len() && weights.len() == logits.len(),
        "sigmoid_cross_entropy",
        || {
            format!(
                "{} logits need as many targets (got {}) and weights (got {})",
                logits.len(),
                targets.len(),
                weights.len()
            )
        },
    )?;
    let norm = 1.0 / (MASK_EPSILON + weights.iter().sum::<f64>());
    let mut value = 0.0;
    let mut grad = vec![0.0; logits.len()];
    for (k, ((x, t), w)) in logits.iter().zip(targets).zip(weights).enumerate() {
        // −t log σ(x) − (1 − t) log(1 − σ(x)), written stably.
        let loss = x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
        value += w * norm * loss;
        grad[k] = w * norm * (1.0 / (1.0 + (-x).exp()) - t);
    }
    Ok(LossGrad { value, grad })
}

/// The distogram head (1.9.8): `logits_ij = h_ij + h_ji` with `h = Linear(z)`,
/// symmetric in (i, j).
#[derive(Clone, Debug, PartialEq)]
pub struct DistogramHead {
    /// Pair → bins.
    pub linear: Dense,
}

impl DistogramHead {
    /// Logits `residues × residues × bins` of the pair representation
    /// (`residues × residues × c_z`).
    pub fn forward(&self, pair: &[f64], residues: usize) -> Vec<f64> {
        symmetrize(&self.linear.forward(pair), residues, self.linear.outputs)
    }

    /// Adds parameter gradients into `grad` and dL/d(pair) into `grad_pair`.
    pub fn backward(
        &self,
        pair: &[f64],
        residues: usize,
        grad_logits: &[f64],
        grad: &mut DistogramHead,
        grad_pair: &mut [f64],
    ) {
        // The symmetrisation is its own adjoint.
        let g_h = symmetrize(grad_logits, residues, self.linear.outputs);
        self.linear
            .backward(pair, &g_h, &mut grad.linear, grad_pair);
    }
}

/// `x_ij + x_ji` over the leading two axes of `residues × residues × width`.
fn symmetrize(x: &[f64], residues: usize, width: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(residues * width)
        .enumerate()
        .for_each(|(i, row)| {
            for (j, o) in row.chunks_exact_mut(width).enumerate() {
                let (a, b) = (
                    &x[(i * residues + j) * width..][..width],
                    &x[(j * residues + i) * width..][..width],
                );
                for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                    *o = a + b;
                }
            }
        });
    out
}

impl Params for DistogramHead {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.linear.tensors_mut()
    }
}

/// The distance binning of the distogram loss: `bins − 1` equally spaced
/// edges from `first_edge` to `last_edge` Å (AF2: 64 bins, 2.3125 to 21.6875).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistogramBins {
    /// Number of bins.
    pub bins: usize,
    /// The first bin edge, Å.
    pub first_edge: f64,
    /// The last bin edge, Å.
    pub last_edge: f64,
}

impl DistogramBins {
    /// The AF2 binning.
    pub const AF2: DistogramBins = DistogramBins {
        bins: 64,
        first_edge: 2.3125,
        last_edge: 21.6875,
    };

    /// The bin of a distance: the number of edges below it.
    pub fn bin(&self, distance: f64) -> usize {
        let steps = (self.bins - 2) as f64;
        (0..self.bins - 1)
            .filter(|&e| {
                let edge = self.first_edge + (self.last_edge - self.first_edge) * e as f64 / steps;
                distance * distance > edge * edge
            })
            .count()
    }
}

/// The distogram loss (1.9.8): cross-entropy of the logits
/// (`residues² × bins`) against the binned true pseudo-beta distances, over
/// pairs whose two residues have a pseudo-beta (`mask`).
pub fn distogram_loss(
    logits: &[f64],
    pseudo_beta: &[Vec3],
    mask: &[f64],
    bins: &DistogramBins,
) -> Result<LossGrad> {
    let n = pseudo_beta.len();
    ensure(mask.len() == n && bins.bins >= 3, "distogram_loss", || {
        format!(
            "{n} pseudo-beta positions, {} mask values, {} bins (at least 3)",
            mask.len(),
            bins.bins
        )
    })?;
    let (targets, weights): (Vec<usize>, Vec<f64>) = (0..n * n)
        .into_par_iter()
        .map(|k| {
            let (i, j) = (k / n, k % n);
            let d = super::rigid::sub(&pseudo_beta[i], &pseudo_beta[j]);
            (
                bins.bin(super::rigid::dot(&d, &d).sqrt()),
                mask[i] * mask[j],
            )
        })
        .unzip();
    softmax_cross_entropy(logits, bins.bins, &targets, &weights)
}

/// The masked-MSA loss (1.9.9): cross-entropy of the logits
/// (`rows·residues × classes`) against the true MSA tokens over the
/// positions the BERT masking replaced (`bert_mask`).
pub fn masked_msa_loss(
    logits: &[f64],
    classes: usize,
    true_msa: &[u8],
    bert_mask: &[f64],
) -> Result<LossGrad> {
    let targets: Vec<usize> = true_msa.iter().map(|&t| t as usize).collect();
    softmax_cross_entropy(logits, classes, &targets, bert_mask)
}

/// The lDDT-Cα cutoff: pairs farther apart than this in the truth are not
/// scored.
pub const LDDT_CUTOFF: f64 = 15.0;

/// Per-residue lDDT (1.9.6, Mariani et al. 2013) of predicted positions
/// against true ones: over the other resolved residues within
/// [`LDDT_CUTOFF`] Å in the truth, the fraction of distances preserved
/// within 0.5, 1, 2 and 4 Å, averaged over the four thresholds; in [0, 1]
/// (1 for a residue with no scored partner).
pub fn lddt(predicted: &[Vec3], truth: &[Vec3], mask: &[f64]) -> Result<Vec<f64>> {
    let n = truth.len();
    ensure(predicted.len() == n && mask.len() == n, "lddt", || {
        format!(
            "{} predicted, {n} true positions and {} mask values",
            predicted.len(),
            mask.len()
        )
    })?;
    let dist = |p: &[Vec3], i: usize, j: usize| {
        let d = super::rigid::sub(&p[i], &p[j]);
        super::rigid::dot(&d, &d).sqrt()
    };
    Ok((0..n)
        .map(|i| {
            let (mut scored, mut total) = (0.0, 0.0);
            for j in (0..n).filter(|&j| j != i) {
                let true_d = dist(truth, i, j);
                let w = mask[i] * mask[j] * f64::from(u8::from(true_d < LDDT_CUTOFF));
                let err = (dist(predicted, i, j) - true_d).abs();
                let preserved =
                    [0.5, 1.0, 2.0, 4.0].iter().filter(|&&t| err < t).count() as f64 / 4.0;
                scored += w * preserved;
                total += w;
            }
            (MASK_EPSILON + scored) / (MASK_EPSILON + total)
        })
        .collect())
}

/// The pLDDT head (1.9.6): `LN(s)` → Linear → ReLU → Linear → ReLU → Linear
/// to `bins` logits per residue.
#[derive(Clone, Debug, PartialEq)]
pub struct PlddtHead {
    /// Norm of the single representation.
    pub norm: LayerNorm,
    /// The three maps.
    pub layers: [Dense; 3],
}

impl Params for PlddtHead {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let mut out = self.norm.tensors_mut();
        for l in self.layers.iter_mut() {
            out.extend(l.tensors_mut());
        }
        out
    }
}

impl PlddtHead {
    /// A head with zero maps and an identity norm (`hidden` channels).
    pub fn zeros(c_s: usize, hidden: usize, bins: usize) -> PlddtHead {
        PlddtHead {
            norm: LayerNorm::new(c_s),
            layers: [
                Dense::zeros(c_s, hidden),
                Dense::zeros(hidden, hidden),
                Dense::zeros(hidden, bins),
            ],
        }
    }

    /// Logits `residues × bins` and the three pre-activations for backward.
    pub fn forward(&self, single: &[f64]) -> (Vec<f64>, [Vec<f64>; 3]) {
        let x = self.norm.forward(single);
        let h1 = self.layers[0].forward(&x);
        let h2 = self.layers[1].forward(&relu(&h1));
        (self.layers[2].forward(&relu(&h2)), [x, h1, h2])
    }

    /// Adds parameter gradients into `grad` and returns dL/d(single).
    pub fn backward(
        &self,
        single: &[f64],
        cache: &[Vec<f64>; 3],
        grad_logits: &[f64],
        grad: &mut PlddtHead,
    ) -> Vec<f64> {
        let [x, h1, h2] = cache;
        let mut g_a2 = vec![0.0; h2.len()];
        self.layers[2].backward(&relu(h2), grad_logits, &mut grad.layers[2], &mut g_a2);
        let mut g_a1 = vec![0.0; h1.len()];
        self.layers[1].backward(
            &relu(h1),
            &relu_backward(h2, &g_a2),
            &mut grad.layers[1],
            &mut g_a1,
        );
        let mut g_x = vec![0.0; x.len()];
        self.layers[0].backward(x, &relu_backward(h1, &g_a1), &mut grad.layers[0], &mut g_x);
        let mut g_single = vec![0.0; single.len()];
        self.norm
            .backward(single, &g_x, &mut grad.norm, &mut g_single);
        g_single
    }
}

/// The pLDDT loss (1.9.6): cross-entropy of the logits (`residues × bins`)
/// against each residue's lDDT-Cα of the predicted CA positions, binned into
/// `bins` equal bins of [0, 1], over residues with a resolved CA. The
/// positions are constants here (no gradient flows into the structure).
pub fn plddt_loss(
    logits: &[f64],
    bins: usize,
    predicted_ca: &[Vec3],
    true_ca: &[Vec3],
    ca_mask: &[f64],
) -> Result<LossGrad> {
    let scores = lddt(predicted_ca, true_ca, ca_mask)?;
    let targets: Vec<usize> = scores
        .iter()
        .map(|s| ((s * bins as f64).floor() as usize).min(bins.saturating_sub(1)))
        .collect();
    softmax_cross_entropy(logits, bins, &targets, ca_mask)
}

/// The experimentally-resolved loss (1.9.10): per-atom sigmoid
/// cross-entropy of the logits (`residues × 37`, from a [`Dense`] map of the
/// single representation) against whether each atom37 atom was resolved,
/// over the atoms the residue type has.
pub fn experimentally_resolved_loss(
    logits: &[f64],
    resolved: &[f64],
    atom_exists: &[f64],
) -> Result<LossGrad> {
    sigmoid_cross_entropy(logits, resolved, atom_exists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient, random};
    use crate::structure::nn::tests::randomize;
    use crate::structure::nn::{flatten_params, load_params};

    #[test]
    fn cross_entropies_have_known_values_and_gradients() {
        // Uniform logits over 4 classes: ln 4 whatever the target.
        let ce = softmax_cross_entropy(&[0.3; 8], 4, &[1, 3], &[1.0, 1.0]).unwrap();
        assert!((ce.value - 4f64.ln()).abs() < 1e-7);
        // sigmoid(0) against 1 and against 0: ln 2 each.
        let s =
            sigmoid_cross_entropy(&[0.0, 0.0, 5.0], &[1.0, 0.0, 1.0], &[1.0, 1.0, 0.0]).unwrap();
        assert!((s.value - 2f64.ln()).abs() < 1e-7);
        assert_eq!(s.grad[2], 0.0);
        let x = random(1, 12);
        let (t, w) = ([0usize, 2, 1, 0], [1.0, 0.0, 0.5, 1.0]);
        let g = softmax_cross_entropy(&x, 3, &t, &w).unwrap().grad;
        check_gradient(
            &|x| softmax_cross_entropy(x, 3, &t, &w).unwrap().value,
            &x,
            &g,
        );
        let positive = |seed| {
            random(seed, 12)
                .into_iter()
                .map(f64::abs)
                .collect::<Vec<_>>()
        };
        let (tt, ww) = (positive(2), positive(3));
        let g = sigmoid_cross_entropy(&x, &tt, &ww).unwrap().grad;
        check_gradient(
            &|x| sigmoid_cross_entropy(x, &tt, &ww).unwrap().value,
            &x,
            &g,
        );
        let err = softmax_cross_entropy(&x, 3, &[0, 3, 1, 0], &w)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1 has target class 3"), "{err}");
    }

    #[test]
    fn distogram_bins_match_the_af2_edges() {
        let b = DistogramBins::AF2;
        assert_eq!(b.bin(0.0), 0);
        assert_eq!(b.bin(2.3), 0);
        assert_eq!(b.bin(2.32), 1);
        // Edges 0.3125 Å apart: 5.0 Å lies above edges 0..=8 (2.3125 + 8·0.3125 = 4.8125).
        assert_eq!(b.bin(5.0), 9);
        assert_eq!(b.bin(21.7), 63);
        assert_eq!(b.bin(100.0), 63);
    }

    #[test]
    fn distogram_head_and_loss_gradients_match() {
        let (n, c_z) = (3, 2);
        let bins = DistogramBins {
            bins: 5,
            first_edge: 2.0,
            last_edge: 8.0,
        };
        let mut head = DistogramHead {
            linear: Dense::zeros(c_z, bins.bins),
        };
        randomize(&mut head, 4, 1.0);
        let pair = random(5, n * n * c_z);
        let pb = [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 6.5, 1.0]];
        let mask = [1.0, 1.0, 0.5];
        let loss = |head: &DistogramHead, z: &[f64]| {
            distogram_loss(&head.forward(z, n), &pb, &mask, &bins)
                .unwrap()
                .value
        };
        let logits = head.forward(&pair, n);
        // Symmetric logits.
        for i in 0..n {
            for j in 0..n {
                for k in 0..bins.bins {
                    assert_eq!(logits[(i * n + j) * 5 + k], logits[(j * n + i) * 5 + k]);
                }
            }
        }
        let lg = distogram_loss(&logits, &pb, &mask, &bins).unwrap();
        let mut grad = DistogramHead {
            linear: Dense::zeros(c_z, bins.bins),
        };
        let mut g_pair = vec![0.0; pair.len()];
        head.backward(&pair, n, &lg.grad, &mut grad, &mut g_pair);
        check_gradient(&|z| loss(&head, z), &pair, &g_pair);
        let theta = flatten_params(&mut head);
        let f = |t: &[f64]| {
            let mut h = head.clone();
            load_params(&mut h, t).unwrap();
            loss(&h, &pair)
        };
        check_gradient(&f, &theta, &flatten_params(&mut grad));
    }

    #[test]
    fn lddt_is_one_for_the_truth_and_drops_with_distortion() {
        let truth: Vec<Vec3> = (0..6).map(|i| [3.8 * i as f64, 0.0, 0.0]).collect();
        let mask = vec![1.0; 6];
        assert!(
            lddt(&truth, &truth, &mask)
                .unwrap()
                .iter()
                .all(|s| (s - 1.0).abs() < 1e-9)
        );
        // Residue 0 moved 1.5 Å along x: its distances to its three partners
        // within 15 Å (residues 1–3; residue 4 is 15.2 Å away) all change
        // by 1.5 Å, preserved at the 2 and 4 Å thresholds only: 0.5.
        let mut moved = truth.clone();
        moved[0][0] -= 1.5;
        let s = lddt(&moved, &truth, &mask).unwrap();
        // (Exact up to the 1e-8 epsilons of the mean.)
        assert!((s[0] - 0.5).abs() < 1e-7, "{s:?}");
        // Residue 1 sees residue 0 (half preserved) and 2, 3, 4 (intact).
        assert!((s[1] - (0.5 + 3.0) / 4.0).abs() < 1e-7, "{s:?}");
        // Residues 2 and 3 have five partners, residue 0 among them; residue
        // 4 does not see residue 0 (15.2 Å in the truth).
        assert!(
            (s[2] - 0.9).abs() < 1e-7 && (s[3] - 0.9).abs() < 1e-7,
            "{s:?}"
        );
        assert!((s[4] - 1.0).abs() < 1e-7, "{s:?}");
    }

    #[test]
    fn plddt_head_and_loss_gradients_match() {
        let (n, c_s, bins) = (4, 3, 5);
        let mut head = PlddtHead::zeros(c_s, 4, bins);
        randomize(&mut head, 6, 1.0);
        let single = random(7, n * c_s);
        let truth: Vec<Vec3> = (0..n).map(|i| [3.8 * i as f64, 0.5, 0.0]).collect();
        let pred: Vec<Vec3> = truth.iter().map(|p| [p[0] * 1.1, p[1], 0.7]).collect();
        let mask = [1.0, 1.0, 1.0, 0.0];
        let loss = |h: &PlddtHead, s: &[f64]| {
            plddt_loss(&h.forward(s).0, bins, &pred, &truth, &mask)
                .unwrap()
                .value
        };
        let (logits, cache) = head.forward(&single);
        let lg = plddt_loss(&logits, bins, &pred, &truth, &mask).unwrap();
        assert!(lg.value > 0.0);
        let mut grad = PlddtHead::zeros(c_s, 4, bins);
        grad.norm = LayerNorm::zeros(c_s);
        let g_s = head.backward(&single, &cache, &lg.grad, &mut grad);
        check_gradient(&|s| loss(&head, s), &single, &g_s);
        let theta = flatten_params(&mut head);
        let f = |t: &[f64]| {
            let mut h = head.clone();
            load_params(&mut h, t).unwrap();
            loss(&h, &single)
        };
        check_gradient(&f, &theta, &flatten_params(&mut grad));
    }

    #[test]
    fn masked_msa_and_experimentally_resolved_losses_backpropagate_through_their_maps() {
        let (rows, c) = (5, 3);
        let mut msa_map = Dense::zeros(c, 23);
        randomize(&mut msa_map, 8, 1.0);
        let m = random(9, rows * c);
        let true_msa = [0u8, 22, 5, 21, 3];
        let bert = [1.0, 1.0, 0.0, 1.0, 1.0];
        let loss = |d: &Dense, m: &[f64]| {
            masked_msa_loss(&d.forward(m), 23, &true_msa, &bert)
                .unwrap()
                .value
        };
        let lg = masked_msa_loss(&msa_map.forward(&m), 23, &true_msa, &bert).unwrap();
        let mut grad = Dense::zeros(c, 23);
        let mut g_m = vec![0.0; m.len()];
        msa_map.backward(&m, &lg.grad, &mut grad, &mut g_m);
        check_gradient(&|x| loss(&msa_map, x), &m, &g_m);
        let mut res_map = Dense::zeros(c, 37);
        randomize(&mut res_map, 10, 1.0);
        let resolved: Vec<f64> = random(11, rows * 37)
            .iter()
            .map(|v| f64::from(u8::from(*v > 0.0)))
            .collect();
        let exists: Vec<f64> = random(12, rows * 37)
            .iter()
            .map(|v| f64::from(u8::from(*v > -0.5)))
            .collect();
        let loss = |d: &Dense, s: &[f64]| {
            experimentally_resolved_loss(&d.forward(s), &resolved, &exists)
                .unwrap()
                .value
        };
        let lg = experimentally_resolved_loss(&res_map.forward(&m), &resolved, &exists).unwrap();
        let mut grad = Dense::zeros(c, 37);
        let mut g_s = vec![0.0; m.len()];
        res_map.backward(&m, &lg.grad, &mut grad, &mut g_s);
        check_gradient(&|x| loss(&res_map, x), &m, &g_s);
        let theta = flatten_params(&mut res_map);
        let f = |t: &[f64]| {
            let mut d = res_map.clone();
            load_params(&mut d, t).unwrap();
            loss(&d, &m)
        };
        check_gradient(&f, &theta, &flatten_params(&mut grad));
    }
}
