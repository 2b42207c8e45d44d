//! AlphaFold2 parameter initialisation of the trunk (supplement 1.11.4, as
//! OpenFold's `Linear(init=...)`), chosen from each parameter's name:
//!
//! - LayerNorm gains 1, offsets 0; biases 0;
//! - "default" linear maps: LeCun normal (truncated normal, std 1/sqrt(fan_in));
//! - maps before a ReLU and the template embedders: He normal (std sqrt(2/fan_in));
//! - "final" maps, zero: every attention's and triangle multiplication's output
//!   projection (`lin_o`), the outer product mean's output, the second map of
//!   every transition;
//! - "gating" maps: zero weights, bias 1 (the `g` columns of packed q|k|v|g and
//!   k|v|g projections, and the three gates of the triangle multiplication);
//! - attention queries, keys, values: Glorot uniform; pair-bias maps: normal
//!   with std 1/sqrt(fan_in).
//!
//! The rules read the names [`crate::layers`] gives (`lin_qkvg`, `lin_p`, ...),
//! so a renamed layer falls back to LeCun normal; the tests check the zero and
//! gating rules on a built model.

use super::config::ModelConfig;
use crate::layers::ParamEntry;
use rand::Rng;

/// A standard normal sample truncated to [-2, 2].
fn truncated_normal(rng: &mut impl Rng) -> f32 {
    loop {
        let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if z.abs() <= 2.0 {
            return z as f32;
        }
    }
}

/// Standard deviation of a truncated standard normal on [-2, 2].
const TRUNCATED_STD: f32 = 0.879_625_7;

/// How one block of columns of a weight is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Zero,
    One,
    /// Truncated normal with variance `scale / fan_in`.
    TruncNormal(f32),
    /// Plain normal with std 1/sqrt(fan_in).
    Normal,
    /// Glorot uniform over `fan_in + fan_out` (fan_out given).
    Glorot(usize),
}

fn sample(rule: Rule, fan_in: usize, rng: &mut impl Rng) -> f32 {
    let fan_in = fan_in.max(1) as f32;
    match rule {
        Rule::Zero => 0.0,
        Rule::One => 1.0,
        Rule::TruncNormal(scale) => (scale / fan_in).sqrt() / TRUNCATED_STD * truncated_normal(rng),
        Rule::Normal => {
            let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.random();
            let z = ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32;
            z / fan_in.sqrt()
        }
        Rule::Glorot(fan_out) => {
            let a = (6.0 / (fan_in + fan_out as f32)).sqrt();
            rng.random_range(-a..a)
        }
    }
}

/// Column blocks `(width, rule)` of a parameter, left to right, covering every
/// column (for a bias: every element).
fn column_rules(entry: &ParamEntry, cfg: &ModelConfig) -> Vec<(usize, Rule)> {
    let parts: Vec<&str> = entry.name.split('.').collect();
    let pname = parts.last().copied().unwrap_or("");
    let leaf = if parts.len() >= 2 {
        parts[parts.len() - 2]
    } else {
        ""
    };
    let parent = if parts.len() >= 3 {
        parts[parts.len() - 3]
    } else {
        ""
    };
    let cols = *entry.shape.last().unwrap_or(&1);
    let tri_mul_dim = if entry.name.starts_with("template.") {
        cfg.template_tri_mul_dim
    } else {
        cfg.tri_mul_dim
    };
    let lecun = Rule::TruncNormal(1.0);
    let he = Rule::TruncNormal(2.0);
    let all = |r: Rule| vec![(cols, r)];
    match (leaf, pname) {
        (_, "gamma") => all(Rule::One),
        (_, "beta") => all(Rule::Zero),
        ("lin_o", _) => all(Rule::Zero),
        ("lin_qkvg", "w") => {
            let w = cols / 4;
            vec![(3 * w, Rule::Glorot(w)), (w, Rule::Zero)]
        }
        ("lin_qkvg", "b") | ("lin_kvg", "b") => all(Rule::One),
        ("lin_kvg", "w") => {
            let d = cfg.extra_msa_head_dim;
            vec![(2 * d, Rule::Glorot(d)), (cols - 2 * d, Rule::Zero)]
        }
        ("lin_q" | "lin_k" | "lin_v", "w") => all(Rule::Glorot(cols)),
        ("lin_bias", "w") => all(Rule::Normal),
        ("lin_p", "w") => {
            let c = tri_mul_dim;
            vec![
                (c, lecun),
                (c, Rule::Zero),
                (c, lecun),
                (c, Rule::Zero),
                (cols - 4 * c, Rule::Zero),
            ]
        }
        ("lin_p", "b") => {
            let c = tri_mul_dim;
            vec![
                (c, Rule::Zero),
                (c, Rule::One),
                (c, Rule::Zero),
                (c, Rule::One),
                (cols - 4 * c, Rule::One),
            ]
        }
        ("lin1", "w") if parent.ends_with("transition") => all(he),
        ("lin2", "w") if parent.ends_with("transition") => all(Rule::Zero),
        ("lin_pair", "w") if parent == "template" => all(he),
        ("lin_angle1" | "lin_angle2", "w") => all(he),
        (_, "w") => all(lecun),
        _ => all(Rule::Zero),
    }
}

/// Initial values of one trunk parameter (flat, row-major `[d_in, d_out]` for
/// weights). The packed layouts (global attention's k|v|g, the triangle
/// multiplication's projections) take their widths from `cfg`.
pub fn initial_values(entry: &ParamEntry, cfg: &ModelConfig, rng: &mut impl Rng) -> Vec<f32> {
    let rules = column_rules(entry, cfg);
    let cols = *entry.shape.last().unwrap_or(&1);
    let rows: usize = entry.shape.iter().product::<usize>() / cols.max(1);
    let fan_in = if entry.shape.len() == 2 {
        entry.shape[0]
    } else {
        1
    };
    let mut per_col = Vec::with_capacity(cols);
    for &(w, r) in &rules {
        per_col.extend(std::iter::repeat_n(r, w));
    }
    assert_eq!(
        per_col.len(),
        cols,
        "init rules of {} cover every column",
        entry.name
    );
    let mut out = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        for &r in &per_col {
            out.push(sample(r, fan_in, rng));
        }
    }
    out
}
