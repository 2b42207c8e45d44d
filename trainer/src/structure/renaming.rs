//! Ambiguous-atom renaming of the ground truth (AF2 supplement 1.8.5,
//! Alg. 26), for the side-chain FAPE and any other all-atom loss.
//!
//! Some side chains are symmetric under a rotation of π about their last chi
//! (ASP, GLU, PHE, TYR): the truth can name the swappable atoms either way.
//! Per residue, the naming whose distances from its ambiguous atoms to every
//! non-ambiguous atom of the structure better match the prediction's is kept:
//! `Σ sqrt(ε + (d_pred − d_true)²)` over those atom pairs is compared between
//! the truth and the alternative truth (the atoms swapped), and the smaller
//! wins. The choice is a constant for the gradient (the losses differentiate
//! the prediction only).

use super::allatom::Atom14;
use super::rigid::{dot, sub};
use crate::error::{Result, ensure};

/// Under the square root of every squared distance and difference (Å²).
const EPSILON: f64 = 1e-10;

/// The inputs of the renaming, one entry per residue.
#[derive(Clone, Copy, Debug)]
pub struct RenamingInput<'a> {
    /// Predicted atom14 positions, Å.
    pub predicted: &'a [Atom14],
    /// True atom14 positions.
    pub truth: &'a [Atom14],
    /// True positions with the ambiguous atoms swapped.
    pub alt_truth: &'a [Atom14],
    /// 1 where the true atom is resolved.
    pub truth_exists: &'a [[f64; 14]],
    /// 1 where the atom is one of a swappable pair.
    pub ambiguous: &'a [[f64; 14]],
}

/// Per residue, whether the alternative naming fits the prediction better.
pub fn alt_naming_is_better(x: &RenamingInput) -> Result<Vec<bool>> {
    let n = x.predicted.len();
    ensure(
        [
            x.truth.len(),
            x.alt_truth.len(),
            x.truth_exists.len(),
            x.ambiguous.len(),
        ]
        .iter()
        .all(|&l| l == n),
        "alt_naming_is_better",
        || {
            format!(
                "{n} predicted residues, but truth has {}, alt_truth {}, truth_exists {} and ambiguous {}",
                x.truth.len(),
                x.alt_truth.len(),
                x.truth_exists.len(),
                x.ambiguous.len()
            )
        },
    )?;
    let dist = |p: &[Atom14], i: usize, a: usize, j: usize, b: usize| {
        let v = sub(&p[i][a], &p[j][b]);
        (EPSILON + dot(&v, &v)).sqrt()
    };
    // The non-ambiguous resolved atoms every ambiguous atom is compared with.
    let anchors: Vec<(usize, usize)> = (0..n)
        .flat_map(|j| (0..14).map(move |b| (j, b)))
        .filter(|&(j, b)| x.truth_exists[j][b] * (1.0 - x.ambiguous[j][b]) != 0.0)
        .collect();
    Ok((0..n)
        .map(|i| {
            let (mut truth_err, mut alt_err) = (0.0, 0.0);
            for a in (0..14).filter(|&a| x.truth_exists[i][a] * x.ambiguous[i][a] != 0.0) {
                for &(j, b) in &anchors {
                    let w = x.truth_exists[i][a]
                        * x.ambiguous[i][a]
                        * x.truth_exists[j][b]
                        * (1.0 - x.ambiguous[j][b]);
                    let d_pred = dist(x.predicted, i, a, j, b);
                    let d_true = d_pred - dist(x.truth, i, a, j, b);
                    let d_alt = d_pred - dist(x.alt_truth, i, a, j, b);
                    truth_err += w * (EPSILON + d_true * d_true).sqrt();
                    alt_err += w * (EPSILON + d_alt * d_alt).sqrt();
                }
            }
            alt_err < truth_err
        })
        .collect())
}
