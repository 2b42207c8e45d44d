//! The small dense layers of the structure module in f64, each a forward
//! returning its output and a cache, and a backward taking the cache: layer
//! normalisation, ReLU, the structure-module transition (AF2 supplement
//! Alg. 20 lines 8–9) and the angle resnet (Alg. 20 line 11, supplement
//! 1.8.2). The backbone update (single → 6-vector, Alg. 23 line 1) is a plain
//! [`Dense`] map; [`super::rigid::Rigid::update`] composes it with a frame.
//!
//! [`Params`] lists a layer's parameter tensors in a fixed order, so that an
//! optimiser or a finite-difference check can treat every layer alike.

use super::ipa::{Dense, IpaParams};
use super::rigid::NORM_EPSILON;
use crate::error::{Result, ensure};
use rayon::prelude::*;

/// Epsilon under the square root of the layer-norm variance.
pub const LAYER_NORM_EPSILON: f64 = 1e-5;

/// A layer with parameters, listed as tensors in a fixed order.
pub trait Params {
    /// Every parameter tensor, in a fixed order.
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>>;
}

impl Params for Dense {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        vec![&mut self.weight, &mut self.bias]
    }
}

impl Params for IpaParams {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        IpaParams::tensors_mut(self)
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }
}

/// All parameters of `layer` concatenated in [`Params`] order.
pub fn flatten_params<P: Params>(layer: &mut P) -> Vec<f64> {
    layer
        .tensors_mut()
        .into_iter()
        .flatten()
        .map(|x| *x)
        .collect()
}

/// Overwrites the parameters of `layer` from `values` (in [`Params`] order);
/// fails unless `values` has exactly the parameter count.
pub fn load_params<P: Params>(layer: &mut P, values: &[f64]) -> Result<()> {
    let mut tensors = layer.tensors_mut();
    let total: usize = tensors.iter().map(|t| t.len()).sum();
    ensure(total == values.len(), "load_params", || {
        format!("{} values for {total} parameters", values.len())
    })?;
    let mut at = 0;
    for t in tensors.iter_mut() {
        let len = t.len();
        t.copy_from_slice(&values[at..at + len]);
        at += len;
    }
    Ok(())
}

/// `max(x, 0)` entry by entry.
pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.max(0.0)).collect()
}

/// Backward of [`relu`]: `grad` where `x > 0`, else 0.
pub fn relu_backward(x: &[f64], grad: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(grad)
        .map(|(v, g)| if *v > 0.0 { *g } else { 0.0 })
        .collect()
}

/// Adds `b` into `a` entry by entry.
fn add_into(a: &mut [f64], b: &[f64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// Layer normalisation over the last axis with a learned scale and offset.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// Per-channel scale (γ), starts at 1.
    pub scale: Vec<f64>,
    /// Per-channel offset (β), starts at 0.
    pub offset: Vec<f64>,
}

impl Params for LayerNorm {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        vec![&mut self.scale, &mut self.offset]
    }
}

impl LayerNorm {
    /// The identity-initialised norm of `width` channels.
    pub fn new(width: usize) -> LayerNorm {
        LayerNorm {
            scale: vec![1.0; width],
            offset: vec![0.0; width],
        }
    }

    /// All-zero parameters (a gradient accumulator).
    pub fn zeros(width: usize) -> LayerNorm {
        LayerNorm {
            scale: vec![0.0; width],
            offset: vec![0.0; width],
        }
    }

    /// Mean and `1/sqrt(var + eps)` of one row.
    fn stats(row: &[f64]) -> (f64, f64) {
        let n = row.len() as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        (mean, 1.0 / (var + LAYER_NORM_EPSILON).sqrt())
    }

    /// Normalises each row of `x` (rows × width); blocks of rows run in
    /// parallel (each row is independent).
    pub fn forward(&self, x: &[f64]) -> Vec<f64> {
        let w = self.scale.len();
        let mut y = vec![0.0; x.len()];
        let block = |(xb, yb): (&[f64], &mut [f64])| {
            for (row, out) in xb.chunks_exact(w).zip(yb.chunks_exact_mut(w)) {
                let (mean, inv) = Self::stats(row);
                for (c, (o, v)) in out.iter_mut().zip(row).enumerate() {
                    *o = (v - mean) * inv * self.scale[c] + self.offset[c];
                }
            }
        };
        let chunk = NORM_BLOCK_ROWS * w;
        x.par_chunks(chunk)
            .zip(y.par_chunks_mut(chunk))
            .for_each(block);
        y
    }

    /// Adds dL/dγ, dL/dβ into `grad` and dL/dx into `grad_x`. Blocks of
    /// `NORM_BLOCK_ROWS` rows run in parallel; the parameter gradients are
    /// summed per block and the block sums added in order, so the result
    /// does not depend on the thread count.
    pub fn backward(&self, x: &[f64], grad_y: &[f64], grad: &mut LayerNorm, grad_x: &mut [f64]) {
        let w = self.scale.len();
        let chunk = NORM_BLOCK_ROWS * w;
        // Per block: dL/dγ then dL/dβ, `2·w` values.
        let block = |((xb, gyb), gxb): ((&[f64], &[f64]), &mut [f64])| -> Vec<f64> {
            let mut acc = vec![0.0; 2 * w];
            let (g_scale, g_offset) = acc.split_at_mut(w);
            let mut xhat = vec![0.0; w];
            let mut g_xhat = vec![0.0; w];
            for ((row, gy), gx) in xb
                .chunks_exact(w)
                .zip(gyb.chunks_exact(w))
                .zip(gxb.chunks_exact_mut(w))
            {
                let (mean, inv) = Self::stats(row);
                for c in 0..w {
                    xhat[c] = (row[c] - mean) * inv;
                    g_xhat[c] = gy[c] * self.scale[c];
                }
                let mean_g = g_xhat.iter().sum::<f64>() / w as f64;
                let mean_gx = g_xhat.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / w as f64;
                for c in 0..w {
                    g_scale[c] += gy[c] * xhat[c];
                    g_offset[c] += gy[c];
                    gx[c] += inv * (g_xhat[c] - mean_g - xhat[c] * mean_gx);
                }
            }
            acc
        };
        let blocks: Vec<Vec<f64>> = x
            .par_chunks(chunk)
            .zip(grad_y.par_chunks(chunk))
            .zip(grad_x.par_chunks_mut(chunk))
            .map(block)
            .collect();
        for b in &blocks {
            let (g_scale, g_offset) = b.split_at(w);
            add_into(&mut grad.scale, g_scale);
            add_into(&mut grad.offset, g_offset);
        }
    }
}

/// Rows per parallel block of [`LayerNorm`].
const NORM_BLOCK_ROWS: usize = 256;

/// The structure-module transition (Alg. 20 lines 8–9):
/// `s ← LayerNorm(s + L₃(relu(L₂(relu(L₁(s))))))`, all maps `c_s → c_s`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The three dense maps, applied in order.
    pub layers: [Dense; 3],
    /// The closing layer norm.
    pub norm: LayerNorm,
}

impl Params for Transition {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let mut out: Vec<&mut Vec<f64>> = Vec::new();
        for l in self.layers.iter_mut() {
            out.extend(l.tensors_mut());
        }
        out.extend(self.norm.tensors_mut());
        out
    }
}

/// Intermediates of [`Transition::forward`].
#[derive(Clone, Debug)]
pub struct TransitionCache {
    /// Pre-activations of the first two maps.
    hidden: [Vec<f64>; 2],
    /// The residual sum before the norm.
    residual: Vec<f64>,
}

impl Transition {
    /// A transition of width `c_s` with zero maps and an identity norm.
    pub fn zeros(c_s: usize) -> Transition {
        Transition {
            layers: std::array::from_fn(|_| Dense::zeros(c_s, c_s)),
            norm: LayerNorm::new(c_s),
        }
    }

    /// The transition of `s` (rows × c_s) and its cache.
    pub fn forward(&self, s: &[f64]) -> (Vec<f64>, TransitionCache) {
        let h1 = self.layers[0].forward(s);
        let h2 = self.layers[1].forward(&relu(&h1));
        let mut residual = self.layers[2].forward(&relu(&h2));
        add_into(&mut residual, s);
        let out = self.norm.forward(&residual);
        (
            out,
            TransitionCache {
                hidden: [h1, h2],
                residual,
            },
        )
    }

    /// Adds parameter gradients into `grad` and returns dL/ds.
    pub fn backward(
        &self,
        s: &[f64],
        cache: &TransitionCache,
        grad_out: &[f64],
        grad: &mut Transition,
    ) -> Vec<f64> {
        let mut g_res = vec![0.0; s.len()];
        self.norm
            .backward(&cache.residual, grad_out, &mut grad.norm, &mut g_res);
        let [h1, h2] = &cache.hidden;
        let mut g_a2 = vec![0.0; s.len()];
        let a2 = relu(h2);
        self.layers[2].backward(&a2, &g_res, &mut grad.layers[2], &mut g_a2);
        let g_h2 = relu_backward(h2, &g_a2);
        let mut g_a1 = vec![0.0; s.len()];
        self.layers[1].backward(&relu(h1), &g_h2, &mut grad.layers[1], &mut g_a1);
        let g_h1 = relu_backward(h1, &g_a1);
        let mut g_s = g_res;
        self.layers[0].backward(s, &g_h1, &mut grad.layers[0], &mut g_s);
        g_s
    }
}

/// Torsions predicted per residue (omega, phi, psi, chi1–4).
pub const TORSIONS: usize = 7;

/// The angle resnet (Alg. 20 line 11, supplement 1.8.2): from the current and
/// the initial single representation to seven unnormalised (sin, cos) pairs.
/// `a = L_in(relu(s)) + L_init(relu(s_init))`, then per block
/// `a ← a + L₂(relu(L₁(relu(a))))`, then `α̃ = L_out(relu(a))`.
#[derive(Clone, Debug, PartialEq)]
pub struct AngleResnet {
    /// Current single → hidden.
    pub input: Dense,
    /// Initial single → hidden.
    pub initial: Dense,
    /// The residual blocks (two in AF2), each two hidden → hidden maps.
    pub blocks: Vec<[Dense; 2]>,
    /// Hidden → 14 (seven (sin, cos) pairs).
    pub output: Dense,
}

impl Params for AngleResnet {
    fn tensors_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let mut out = self.input.tensors_mut();
        out.extend(self.initial.tensors_mut());
        for block in self.blocks.iter_mut() {
            for l in block.iter_mut() {
                out.extend(l.tensors_mut());
            }
        }
        out.extend(self.output.tensors_mut());
        out
    }
}

/// Intermediates of [`AngleResnet::forward`].
#[derive(Clone, Debug)]
pub struct AngleResnetCache {
    /// The hidden state before each block and after the last.
    states: Vec<Vec<f64>>,
    /// The first map's pre-activation inside each block.
    inner: Vec<Vec<f64>>,
}

impl AngleResnet {
    /// A resnet with zero maps: `c_s` single channels, `hidden` channels,
    /// `blocks` residual blocks.
    pub fn zeros(c_s: usize, hidden: usize, blocks: usize) -> AngleResnet {
        AngleResnet {
            input: Dense::zeros(c_s, hidden),
            initial: Dense::zeros(c_s, hidden),
            blocks: (0..blocks)
                .map(|_| std::array::from_fn(|_| Dense::zeros(hidden, hidden)))
                .collect(),
            output: Dense::zeros(hidden, 2 * TORSIONS),
        }
    }

    /// Unnormalised (sin, cos) pairs, `rows × 14`, and the cache.
    pub fn forward(&self, s: &[f64], s_initial: &[f64]) -> (Vec<f64>, AngleResnetCache) {
        let mut a = self.input.forward(&relu(s));
        add_into(&mut a, &self.initial.forward(&relu(s_initial)));
        let mut states = vec![a];
        let mut inner = Vec::new();
        for [l1, l2] in &self.blocks {
            let a = states.last().expect("states start non-empty");
            let h = l1.forward(&relu(a));
            let mut next = l2.forward(&relu(&h));
            add_into(&mut next, a);
            inner.push(h);
            states.push(next);
        }
        let out = self
            .output
            .forward(&relu(states.last().expect("states start non-empty")));
        (out, AngleResnetCache { states, inner })
    }

    /// Adds parameter gradients into `grad`; returns dL/ds and dL/ds_init.
    pub fn backward(
        &self,
        s: &[f64],
        s_initial: &[f64],
        cache: &AngleResnetCache,
        grad_out: &[f64],
        grad: &mut AngleResnet,
    ) -> (Vec<f64>, Vec<f64>) {
        let last = cache.states.last().expect("states start non-empty");
        let mut g_relu = vec![0.0; last.len()];
        self.output
            .backward(&relu(last), grad_out, &mut grad.output, &mut g_relu);
        let mut g_a = relu_backward(last, &g_relu);
        for (b, [l1, l2]) in self.blocks.iter().enumerate().rev() {
            let (a, h) = (&cache.states[b], &cache.inner[b]);
            let [g1, g2] = &mut grad.blocks[b];
            let mut g_rh = vec![0.0; h.len()];
            l2.backward(&relu(h), &g_a, g2, &mut g_rh);
            let g_h = relu_backward(h, &g_rh);
            let mut g_ra = vec![0.0; a.len()];
            l1.backward(&relu(a), &g_h, g1, &mut g_ra);
            add_into(&mut g_a, &relu_backward(a, &g_ra));
        }
        let mut g_rs = vec![0.0; s.len()];
        self.input
            .backward(&relu(s), &g_a, &mut grad.input, &mut g_rs);
        let mut g_rinit = vec![0.0; s_initial.len()];
        self.initial
            .backward(&relu(s_initial), &g_a, &mut grad.initial, &mut g_rinit);
        (relu_backward(s, &g_rs), relu_backward(s_initial, &g_rinit))
    }
}

/// Normalises each (sin, cos) pair of `raw` to unit length
/// (`x / sqrt(|x|² + ε)`, ε = [`NORM_EPSILON`]).
pub fn normalize_pairs(raw: &[f64]) -> Vec<f64> {
    raw.chunks_exact(2)
        .flat_map(|p| super::rigid::normalize(&[p[0], p[1]], NORM_EPSILON))
        .collect()
}

/// Backward of [`normalize_pairs`].
pub fn normalize_pairs_backward(raw: &[f64], grad: &[f64]) -> Vec<f64> {
    raw.chunks_exact(2)
        .zip(grad.chunks_exact(2))
        .flat_map(|(p, g)| {
            super::rigid::normalize_backward(&[p[0], p[1]], NORM_EPSILON, &[g[0], g[1]])
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient, random};

    /// Fills every parameter of `layer` with values in [-scale, scale).
    pub(crate) fn randomize<P: Params>(layer: &mut P, seed: u64, scale: f64) {
        let n = flatten_params(layer).len();
        let values: Vec<f64> = random(seed, n).iter().map(|v| v * scale).collect();
        load_params(layer, &values).unwrap();
    }

    fn weighted(out: &[f64], w: &[f64]) -> f64 {
        out.iter().zip(w).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn layer_norm_output_is_normalized_and_gradients_match() {
        let mut ln = LayerNorm::new(5);
        let x = random(1, 15);
        let y = ln.forward(&x);
        for row in y.chunks(5) {
            let mean = row.iter().sum::<f64>() / 5.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
            assert!(
                mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
        randomize(&mut ln, 2, 1.0);
        let w = random(3, 15);
        let mut grad = LayerNorm::zeros(5);
        let mut gx = vec![0.0; 15];
        ln.backward(&x, &w, &mut grad, &mut gx);
        check_gradient(&|x| weighted(&ln.forward(x), &w), &x, &gx);
        let theta = flatten_params(&mut ln);
        let f = |p: &[f64]| {
            let mut l = ln.clone();
            load_params(&mut l, p).unwrap();
            weighted(&l.forward(&x), &w)
        };
        check_gradient(&f, &theta, &flatten_params(&mut grad));
    }

    #[test]
    fn load_params_rejects_a_wrong_count() {
        let mut d = Dense::zeros(2, 3);
        let err = load_params(&mut d, &[0.0; 8]).unwrap_err().to_string();
        assert!(err.contains("8 values for 9 parameters"), "{err}");
    }

    #[test]
    fn transition_gradients_match_finite_differences() {
        let mut tr = Transition::zeros(4);
        randomize(&mut tr, 4, 0.7);
        let s = random(5, 12);
        let w = random(6, 12);
        let (_, cache) = tr.forward(&s);
        let mut grad = Transition::zeros(4);
        grad.norm = LayerNorm::zeros(4);
        let gs = tr.backward(&s, &cache, &w, &mut grad);
        check_gradient(&|x| weighted(&tr.forward(x).0, &w), &s, &gs);
        let theta = flatten_params(&mut tr);
        let f = |p: &[f64]| {
            let mut t = tr.clone();
            load_params(&mut t, p).unwrap();
            weighted(&t.forward(&s).0, &w)
        };
        check_gradient(&f, &theta, &flatten_params(&mut grad));
    }

    #[test]
    fn angle_resnet_gradients_match_finite_differences() {
        let mut net = AngleResnet::zeros(4, 3, 2);
        randomize(&mut net, 7, 0.8);
        let (s, s0) = (random(8, 8), random(9, 8));
        let w = random(10, 2 * 2 * TORSIONS);
        // Through the normalisation too, as the losses see both outputs.
        let loss = |net: &AngleResnet, s: &[f64], s0: &[f64]| {
            let raw = net.forward(s, s0).0;
            weighted(&raw, &w) + weighted(&normalize_pairs(&raw), &w[1..])
        };
        let (raw, cache) = net.forward(&s, &s0);
        assert_eq!(raw.len(), 2 * 14);
        let mut g_raw = w.clone();
        let mut w_shift = w[1..].to_vec();
        w_shift.push(0.0);
        add_into(&mut g_raw, &normalize_pairs_backward(&raw, &w_shift));
        let mut grad = AngleResnet::zeros(4, 3, 2);
        let (gs, gs0) = net.backward(&s, &s0, &cache, &g_raw, &mut grad);
        check_gradient(&|x| loss(&net, x, &s0), &s, &gs);
        check_gradient(&|x| loss(&net, &s, x), &s0, &gs0);
        let theta = flatten_params(&mut net);
        let f = |p: &[f64]| {
            let mut n = net.clone();
            load_params(&mut n, p).unwrap();
            loss(&n, &s, &s0)
        };
        check_gradient(&f, &theta, &flatten_params(&mut grad));
        for pair in normalize_pairs(&raw).chunks(2) {
            assert!((pair[0].hypot(pair[1]) - 1.0).abs() < 1e-6);
        }
    }
}
