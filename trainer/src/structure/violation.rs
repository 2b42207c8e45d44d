//! The structural violation loss (AF2 supplement 1.9.11), forward and
//! backward, on atom14 positions in f64.
//!
//! Four parts, summed with weight 1 each:
//! - the C(i)–N(i+1) peptide bond length, and the CA(i)–C(i)–N(i+1) and
//!   C(i)–N(i+1)–CA(i+1) bond angles (as cosines) of consecutive residues
//!   (residue numbers differing by one): each a masked mean over residue pairs
//!   of `relu(sqrt(ε + (x − x₀)²) − k·σ)` with the literature mean `x₀` and
//!   standard deviation `σ` (the bond length before a proline differs) and
//!   the tolerance factor `k` (12);
//! - clashes between atoms of different residues:
//!   `relu(r_a + r_b − τ − d_ab)` with van der Waals radii `r` and the overlap
//!   tolerance `τ` (1.5 Å), skipping the peptide bond C(i)–N(i+1) and the
//!   disulfide SG–SG of two cysteines;
//! - within-residue distance bounds from
//!   [`atom14_distance_bounds`](scalefold_featurize::residue_constants::atom14_distance_bounds)
//!   (bonded pairs within `k·σ` of their length, the others not closer than
//!   their radii less `τ`): `relu(lower − d) + relu(d − upper)`.
//!
//! The two clash parts are summed per atom (each pair counted once for each
//! of its two atoms) and divided by the number of existing atoms, as the
//! AlphaFold reference does. The gradient flows to the positions; masks and
//! residue numbers are constants.

use super::allatom::Atom14;
use super::rigid::{Vec3, add, dot, scale, sub};
use crate::error::{Result, ensure};
use rayon::prelude::*;
use scalefold_featurize::residue_constants as rc;

/// atom14 slots of the backbone atoms.
const N: usize = 0;
const CA: usize = 1;
const C: usize = 2;
/// The residue type of cysteine and the atom14 slot of its SG.
const CYS: u8 = rc::restype_index(b'C');
const CYS_SG: usize = 5;
/// The residue type of proline.
const PRO: u8 = rc::restype_index(b'P');
/// Under the square root of every squared distance of the clash terms (Å²).
const DISTANCE_EPSILON: f64 = 1e-10;

/// The constants of the violation loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViolationConfig {
    /// Tolerance in standard deviations for bonds and angles (12 in AF2).
    pub tolerance_factor: f64,
    /// Clash overlap tolerance, Å (1.5 in AF2).
    pub overlap_tolerance: f64,
    /// Under the square roots of the bond terms and in the normalisers.
    pub epsilon: f64,
}

impl ViolationConfig {
    /// The AF2 values: 12 σ, 1.5 Å, ε 1e-6.
    pub const AF2: ViolationConfig = ViolationConfig {
        tolerance_factor: 12.0,
        overlap_tolerance: 1.5,
        epsilon: 1e-6,
    };
}

/// The inputs of one evaluation, one entry per residue.
#[derive(Clone, Copy, Debug)]
pub struct ViolationInput<'a> {
    /// Predicted atom14 positions, Å.
    pub positions: &'a [Atom14],
    /// 1 where the atom exists for the residue type (and the residue is real).
    pub exists: &'a [[f64; 14]],
    /// Residue types.
    pub aatype: &'a [u8],
    /// Residue numbers: consecutive residues differ by one.
    pub residue_index: &'a [i32],
}

/// The parts of the loss and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ViolationTerms {
    /// C–N bond length term.
    pub bond_c_n: f64,
    /// CA–C–N angle term.
    pub angle_ca_c_n: f64,
    /// C–N–CA angle term.
    pub angle_c_n_ca: f64,
    /// Between-residue clashes, per-atom sum over the atom count.
    pub clash: f64,
    /// Within-residue bound violations, per-atom sum over the atom count.
    pub within: f64,
    /// The sum of the five.
    pub total: f64,
}

/// The violation loss of `input`.
pub fn violation_loss(input: &ViolationInput, cfg: &ViolationConfig) -> Result<ViolationTerms> {
    validate(input)?;
    Ok(violation_core(input, cfg, None))
}

/// Gradient of `grad_total · total` with respect to the positions.
pub fn violation_loss_backward(
    input: &ViolationInput,
    cfg: &ViolationConfig,
    grad_total: f64,
) -> Result<Vec<Atom14>> {
    validate(input)?;
    let mut grad = vec![[[0.0; 3]; 14]; input.positions.len()];
    violation_core(input, cfg, Some((&mut grad, grad_total)));
    Ok(grad)
}

fn validate(input: &ViolationInput) -> Result<()> {
    let n = input.positions.len();
    ensure(
        input.exists.len() == n && input.aatype.len() == n && input.residue_index.len() == n,
        "violation_loss",
        || {
            format!(
                "{n} residues of positions, but exists has {}, aatype {} and residue_index {}",
                input.exists.len(),
                input.aatype.len(),
                input.residue_index.len()
            )
        },
    )
}

/// Within-residue bounds (lower, upper) per residue type, for the AF2
/// tolerances (the only ones the loss uses).
fn bounds(cfg: &ViolationConfig) -> rc::Atom14DistanceBounds {
    static AF2: std::sync::LazyLock<rc::Atom14DistanceBounds> = std::sync::LazyLock::new(|| {
        rc::atom14_distance_bounds(
            ViolationConfig::AF2.overlap_tolerance as f32,
            ViolationConfig::AF2.tolerance_factor as f32,
        )
    });
    if *cfg == ViolationConfig::AF2 {
        AF2.clone()
    } else {
        rc::atom14_distance_bounds(cfg.overlap_tolerance as f32, cfg.tolerance_factor as f32)
    }
}

/// `sqrt(ε + |v|²)`.
fn length(v: &Vec3, eps: f64) -> f64 {
    (dot(v, v) + eps).sqrt()
}

/// `v / sqrt(ε + |v|²)`.
fn unit(v: &Vec3, eps: f64) -> Vec3 {
    scale(v, 1.0 / length(v, eps))
}

/// Backward of [`unit`]: dL/dv from dL/du.
fn unit_backward(v: &Vec3, eps: f64, g: &Vec3) -> Vec3 {
    let l = length(v, eps);
    sub(&scale(g, 1.0 / l), &scale(v, dot(v, g) / (l * l * l)))
}

/// `relu(sqrt(ε + (x − x₀)²) − allowed)` and its derivative in `x`.
fn flat_bottom(x: f64, target: f64, allowed: f64, eps: f64) -> (f64, f64) {
    let e = (eps + (x - target) * (x - target)).sqrt();
    if e > allowed {
        (e - allowed, (x - target) / e)
    } else {
        (0.0, 0.0)
    }
}

/// Gradient accumulator: `(grads, factor)`.
type Sink<'a> = Option<(&'a mut Vec<Atom14>, f64)>;

fn push(grad: &mut Sink, i: usize, a: usize, g: &Vec3, factor: f64) {
    if let Some((out, total)) = grad.as_mut() {
        let p = &mut out[i][a];
        *p = add(p, &scale(g, factor * *total));
    }
}

fn violation_core(input: &ViolationInput, cfg: &ViolationConfig, mut grad: Sink) -> ViolationTerms {
    let mut terms = between_residue_geometry(input, cfg, &mut grad);
    let atoms: f64 = input.exists.iter().flatten().sum();
    let per_atom = 1.0 / (cfg.epsilon + atoms);
    terms.clash = clashes(input, cfg, per_atom, &mut grad);
    terms.within = within_residue(input, cfg, per_atom, &mut grad);
    terms.total =
        terms.bond_c_n + terms.angle_ca_c_n + terms.angle_c_n_ca + terms.clash + terms.within;
    terms
}

/// The bond and angle terms between consecutive residues.
fn between_residue_geometry(
    input: &ViolationInput,
    cfg: &ViolationConfig,
    grad: &mut Sink,
) -> ViolationTerms {
    let (x, e, eps) = (input.positions, input.exists, cfg.epsilon);
    let n = x.len();
    let pairs: Vec<usize> = (0..n.saturating_sub(1))
        .filter(|&i| input.residue_index[i + 1] - input.residue_index[i] == 1)
        .collect();
    let mask_of = |atoms: &[(usize, usize)]| -> Vec<f64> {
        pairs
            .iter()
            .map(|&i| atoms.iter().map(|&(d, a)| e[i + d][a]).product())
            .collect()
    };
    let m_bond = mask_of(&[(0, C), (1, N)]);
    let m_cacn = mask_of(&[(0, CA), (0, C), (1, N)]);
    let m_cnca = mask_of(&[(0, C), (1, N), (1, CA)]);
    let norm = |m: &[f64]| 1.0 / (m.iter().sum::<f64>() + eps);
    let (n_bond, n_cacn, n_cnca) = (norm(&m_bond), norm(&m_cacn), norm(&m_cnca));
    let k = cfg.tolerance_factor;
    let mut t = ViolationTerms::default();
    for (p, &i) in pairs.iter().enumerate() {
        let j = i + 1;
        let proline = usize::from(input.aatype[j] == PRO);
        let c_ca = sub(&x[i][CA], &x[i][C]);
        let c_n = sub(&x[j][N], &x[i][C]);
        let n_ca = sub(&x[j][CA], &x[j][N]);
        // Bond length.
        if m_bond[p] > 0.0 {
            let len = length(&c_n, eps);
            let (l, dl) = flat_bottom(
                len,
                f64::from(rc::BETWEEN_RES_BOND_LENGTH_C_N[proline]),
                k * f64::from(rc::BETWEEN_RES_BOND_LENGTH_STDDEV_C_N[proline]),
                eps,
            );
            t.bond_c_n += m_bond[p] * l * n_bond;
            if dl != 0.0 {
                let g = scale(&c_n, m_bond[p] * n_bond * dl / len);
                push(grad, j, N, &g, 1.0);
                push(grad, i, C, &g, -1.0);
            }
        }
        let (u_c_ca, u_c_n, u_n_ca) = (unit(&c_ca, eps), unit(&c_n, eps), unit(&n_ca, eps));
        // CA–C–N: the angle at C between CA and N.
        if m_cacn[p] > 0.0 {
            let cos = dot(&u_c_ca, &u_c_n);
            let [mean, sd] = rc::BETWEEN_RES_COS_ANGLES_CA_C_N.map(f64::from);
            let (l, dl) = flat_bottom(cos, mean, k * sd, eps);
            t.angle_ca_c_n += m_cacn[p] * l * n_cacn;
            if dl != 0.0 {
                let w = m_cacn[p] * n_cacn * dl;
                let g_ca = unit_backward(&c_ca, eps, &scale(&u_c_n, w));
                let g_n = unit_backward(&c_n, eps, &scale(&u_c_ca, w));
                push(grad, i, CA, &g_ca, 1.0);
                push(grad, j, N, &g_n, 1.0);
                push(grad, i, C, &add(&g_ca, &g_n), -1.0);
            }
        }
        // C–N–CA: the angle at N between C and CA.
        if m_cnca[p] > 0.0 {
            let cos = -dot(&u_c_n, &u_n_ca);
            let [mean, sd] = rc::BETWEEN_RES_COS_ANGLES_C_N_CA.map(f64::from);
            let (l, dl) = flat_bottom(cos, mean, k * sd, eps);
            t.angle_c_n_ca += m_cnca[p] * l * n_cnca;
            if dl != 0.0 {
                let w = -m_cnca[p] * n_cnca * dl;
                let g_cn = unit_backward(&c_n, eps, &scale(&u_n_ca, w));
                let g_nca = unit_backward(&n_ca, eps, &scale(&u_c_n, w));
                push(grad, j, N, &sub(&g_cn, &g_nca), 1.0);
                push(grad, i, C, &g_cn, -1.0);
                push(grad, j, CA, &g_nca, 1.0);
            }
        }
    }
    t
}

/// `relu(bound − d)` (`below`) or `relu(d − bound)` for the distance between
/// `(i, a)` and `(j, b)`, with its gradient pushed scaled by `factor`.
fn distance_penalty(
    x: &[Atom14],
    (i, a): (usize, usize),
    (j, b): (usize, usize),
    bound: f64,
    below: bool,
    factor: f64,
    grad: &mut Sink,
) -> f64 {
    let v = sub(&x[i][a], &x[j][b]);
    let d = length(&v, DISTANCE_EPSILON);
    let (value, slope) = if below {
        (bound - d, -1.0)
    } else {
        (d - bound, 1.0)
    };
    if value <= 0.0 {
        return 0.0;
    }
    let g = scale(&v, slope * factor / d);
    push(grad, i, a, &g, 1.0);
    push(grad, j, b, &g, -1.0);
    value
}

/// Between-residue clashes: each penalised pair counts for both its atoms.
/// Blocks of [`CLASH_BLOCK_RESIDUES`] first residues run in parallel, each
/// with its own partial sums, added in block order (independent of the
/// thread count).
fn clashes(input: &ViolationInput, cfg: &ViolationConfig, per_atom: f64, grad: &mut Sink) -> f64 {
    let n = input.positions.len();
    let factor = grad.as_ref().map(|(_, f)| *f);
    let blocks: Vec<(f64, Vec<Atom14>)> = (0..n.div_ceil(CLASH_BLOCK_RESIDUES))
        .into_par_iter()
        .map(|block| {
            let mut local = if factor.is_some() {
                vec![[[0.0; 3]; 14]; n]
            } else {
                Vec::new()
            };
            let first = block * CLASH_BLOCK_RESIDUES;
            let total = clash_block(input, cfg, per_atom, first, factor, &mut local);
            (total, local)
        })
        .collect();
    let mut total = 0.0;
    for (block_total, local) in &blocks {
        total += block_total;
        if let Some((out, _)) = grad.as_mut() {
            for (o, l) in out.iter_mut().zip(local) {
                for (p, q) in o.iter_mut().zip(l) {
                    *p = add(p, q);
                }
            }
        }
    }
    2.0 * total * per_atom
}

/// The clash terms of first residues `first..first + CLASH_BLOCK_RESIDUES`
/// against every later residue; gradients (with `factor`) go into `local`.
fn clash_block(
    input: &ViolationInput,
    cfg: &ViolationConfig,
    per_atom: f64,
    first: usize,
    factor: Option<f64>,
    local: &mut Vec<Atom14>,
) -> f64 {
    let (x, e) = (input.positions, input.exists);
    let radius = &rc::tables().atom14_vdw_radius;
    let n = x.len();
    let mut sink: Sink = factor.map(|f| (local, f));
    let mut total = 0.0;
    for i in first..n.min(first + CLASH_BLOCK_RESIDUES) {
        let ri = usize::from(input.aatype[i].min(20));
        for j in i + 1..n {
            let rj = usize::from(input.aatype[j].min(20));
            let bonded = input.residue_index[i] + 1 == input.residue_index[j];
            let disulfide = input.aatype[i] == CYS && input.aatype[j] == CYS;
            for a in (0..14).filter(|&a| e[i][a] > 0.0) {
                for b in (0..14).filter(|&b| e[j][b] > 0.0) {
                    if (bonded && a == C && b == N) || (disulfide && a == CYS_SG && b == CYS_SG) {
                        continue;
                    }
                    let w = e[i][a] * e[j][b];
                    let bound =
                        f64::from(radius[ri][a]) + f64::from(radius[rj][b]) - cfg.overlap_tolerance;
                    total += w * distance_penalty(
                        x,
                        (i, a),
                        (j, b),
                        bound,
                        true,
                        2.0 * w * per_atom,
                        &mut sink,
                    );
                }
            }
        }
    }
    total
}

/// First residues per parallel block of the clash loop.
const CLASH_BLOCK_RESIDUES: usize = 8;

/// Within-residue bound violations over ordered atom pairs, each counted for
/// both its atoms.
fn within_residue(
    input: &ViolationInput,
    cfg: &ViolationConfig,
    per_atom: f64,
    grad: &mut Sink,
) -> f64 {
    let (x, e) = (input.positions, input.exists);
    let b = bounds(cfg);
    let mut total = 0.0;
    for i in 0..x.len() {
        let r = usize::from(input.aatype[i]);
        if r >= 20 {
            continue;
        }
        for p in (0..14).filter(|&p| e[i][p] > 0.0) {
            for q in (0..14).filter(|&q| q != p && e[i][q] > 0.0) {
                let w = e[i][p] * e[i][q];
                let f = 2.0 * w * per_atom;
                let (lower, upper) = (f64::from(b.lower[r][p][q]), f64::from(b.upper[r][p][q]));
                total += w
                    * (distance_penalty(x, (i, p), (i, q), lower, true, f, grad)
                        + distance_penalty(x, (i, p), (i, q), upper, false, f, grad));
            }
        }
    }
    2.0 * total * per_atom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_residue_types_and_slots_match_the_residue_tables() {
        assert_eq!(rc::RESTYPE_NAMES[usize::from(CYS)], "CYS");
        assert_eq!(rc::RESTYPE_NAMES[usize::from(PRO)], "PRO");
        assert_eq!(rc::ATOM14_NAMES[usize::from(CYS)][CYS_SG], "SG");
        let backbone = &rc::ATOM14_NAMES[usize::from(PRO)];
        assert_eq!([backbone[N], backbone[CA], backbone[C]], ["N", "CA", "C"]);
    }
}
