//! Invariant point attention (AF2 supplement Alg. 22) on the CPU in f64,
//! forward and backward, for gradient checks and tiny models.
//!
//! Per head `h`, residue `i` attends to residue `j` with logit
//! `w_L (qᵢ·kⱼ/√C + bᵢⱼ − γ_h w_C/2 Σ_p |Tᵢ q̃ᵢₚ − Tⱼ k̃ⱼₚ|²)`, with
//! `w_L = √(1/3)`, `w_C = √(2/(9 P_q))` and `γ_h = softplus(head_weight_h)`;
//! the bias `b` is a linear map of the pair representation. The output is a
//! linear map of, per head, the attended values, the attended value points
//! brought back into frame `i` (`Tᵢ⁻¹ Σⱼ aᵢⱼ Tⱼ ṽⱼₚ`), their norms
//! (`sqrt(|·|² + ε)`, ε = [`NORM_EPSILON`]) and the attended pair rows.
//! Points are laid out per residue as `[head][point][xyz]` in the residue's
//! local frame. Keys whose mask is 0 get no attention; a query with no valid
//! key attends to nothing (zero outputs before the final linear map).
//!
//! [`Ipa::forward`] returns the output and an [`IpaCache`] of intermediates;
//! [`Ipa::backward`] takes both and returns gradients with respect to every
//! parameter (an [`IpaParams`] of the same layout), the single and pair
//! representations and the frames.

use super::gemm::{View, ViewMut, gemm, par_gemm_add};
use super::rigid::{NORM_EPSILON, Rigid, Vec3, add, dot, scale, sub};
use crate::error::{Result, ensure};
use rayon::prelude::*;

/// Sizes of one IPA layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpaDims {
    /// Channels of the single representation.
    pub c_s: usize,
    /// Channels of the pair representation.
    pub c_z: usize,
    /// Attention heads.
    pub heads: usize,
    /// Channels per head of queries, keys and values.
    pub head_dim: usize,
    /// Query (and key) points per head.
    pub query_points: usize,
    /// Value points per head.
    pub value_points: usize,
}

impl IpaDims {
    /// Width of the concatenated per-residue features fed to the output map.
    fn feature_width(&self) -> usize {
        self.heads * (self.head_dim + 4 * self.value_points + self.c_z)
    }
}

/// A dense affine map `y = x W + b`, `W` row-major `[inputs][outputs]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// Weights, `inputs × outputs`.
    pub weight: Vec<f64>,
    /// Bias, `outputs`.
    pub bias: Vec<f64>,
}

impl Dense {
    /// A map with all weights and biases zero.
    pub fn zeros(inputs: usize, outputs: usize) -> Dense {
        Dense {
            inputs,
            outputs,
            weight: vec![0.0; inputs * outputs],
            bias: vec![0.0; outputs],
        }
    }

    /// Applies the map to `x` (rows × inputs): [`par_gemm_add`] over rows
    /// holding the bias, so the result does not depend on the thread count.
    pub(crate) fn forward(&self, x: &[f64]) -> Vec<f64> {
        let (inputs, outputs) = (self.inputs, self.outputs);
        let rows = x.len() / inputs;
        let mut y = vec![0.0; rows * outputs];
        y.chunks_exact_mut(outputs)
            .for_each(|yr| yr.copy_from_slice(&self.bias));
        par_gemm_add(
            View::rows(x, rows, inputs),
            View::rows(&self.weight, inputs, outputs),
            &mut y,
        );
        y
    }

    /// Adds dL/dW, dL/db into `grad` and dL/dx into `grad_x`. With many
    /// rows, dL/dW and dL/db are summed over fixed blocks of
    /// [`BACKWARD_BLOCK_ROWS`] rows and the block sums added in order; with
    /// few, dL/dW is one tiled product. Either way the result does not
    /// depend on the thread count.
    pub(crate) fn backward(&self, x: &[f64], grad_y: &[f64], grad: &mut Dense, grad_x: &mut [f64]) {
        let rows = x.len() / self.inputs;
        let (inputs, outputs) = (self.inputs, self.outputs);
        let x_view = View::rows(x, rows, inputs);
        let gy_view = View::rows(grad_y, rows, outputs);
        par_gemm_add(
            gy_view,
            View::rows(&self.weight, inputs, outputs).t(),
            grad_x,
        );
        if rows < BLOCKED_WEIGHT_GRAD_ROWS {
            par_gemm_add(x_view.t(), gy_view, &mut grad.weight);
            for gy in grad_y.chunks_exact(outputs) {
                grad.bias.iter_mut().zip(gy).for_each(|(b, g)| *b += g);
            }
            return;
        }
        // dL/dW and dL/db of one block of rows: `inputs·outputs + outputs` values.
        let block_grad = |(xb, gb): (&[f64], &[f64])| -> Vec<f64> {
            let r = xb.len() / inputs;
            let mut acc = vec![0.0; (inputs + 1) * outputs];
            let (gw, gbias) = acc.split_at_mut(inputs * outputs);
            gemm(
                1.0,
                View::rows(xb, r, inputs).t(),
                View::rows(gb, r, outputs),
                0.0,
                ViewMut::rows(gw, inputs, outputs),
            );
            for gy in gb.chunks_exact(outputs) {
                gbias.iter_mut().zip(gy).for_each(|(b, g)| *b += g);
            }
            acc
        };
        let (bx, by) = (BACKWARD_BLOCK_ROWS * inputs, BACKWARD_BLOCK_ROWS * outputs);
        let blocks: Vec<Vec<f64>> = x
            .par_chunks(bx)
            .zip(grad_y.par_chunks(by))
            .map(block_grad)
            .collect();
        for b in &blocks {
            let (gw, gbias) = b.split_at(inputs * outputs);
            grad.weight.iter_mut().zip(gw).for_each(|(a, v)| *a += v);
            grad.bias.iter_mut().zip(gbias).for_each(|(a, v)| *a += v);
        }
    }
}

/// Rows from which [`Dense::backward`] sums the weight gradient over row
/// blocks (pair-sized inputs) rather than as one tiled product.
const BLOCKED_WEIGHT_GRAD_ROWS: usize = 4096;
/// Rows per block of the blocked weight-gradient sums of [`Dense::backward`].
const BACKWARD_BLOCK_ROWS: usize = 512;

#[cfg(test)]
fn dot_slices(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The parameters of one IPA layer (also the layout of their gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct IpaParams {
    /// Single → queries, `heads · head_dim`.
    pub query: Dense,
    /// Single → keys.
    pub key: Dense,
    /// Single → values.
    pub value: Dense,
    /// Single → local query points, `heads · query_points · 3`.
    pub query_points: Dense,
    /// Single → local key points.
    pub key_points: Dense,
    /// Single → local value points, `heads · value_points · 3`.
    pub value_points: Dense,
    /// Pair → per-head attention bias.
    pub pair_bias: Dense,
    /// Per-head point weights before softplus.
    pub head_weights: Vec<f64>,
    /// Concatenated features → single.
    pub output: Dense,
}

impl IpaParams {
    /// All-zero parameters of the given sizes.
    pub fn zeros(d: &IpaDims) -> IpaParams {
        let hc = d.heads * d.head_dim;
        IpaParams {
            query: Dense::zeros(d.c_s, hc),
            key: Dense::zeros(d.c_s, hc),
            value: Dense::zeros(d.c_s, hc),
            query_points: Dense::zeros(d.c_s, d.heads * d.query_points * 3),
            key_points: Dense::zeros(d.c_s, d.heads * d.query_points * 3),
            value_points: Dense::zeros(d.c_s, d.heads * d.value_points * 3),
            pair_bias: Dense::zeros(d.c_z, d.heads),
            head_weights: vec![0.0; d.heads],
            output: Dense::zeros(d.feature_width(), d.c_s),
        }
    }

    /// Every parameter tensor with its name (`map.weight`, `map.bias`,
    /// `head_weights`), in a fixed order.
    pub fn tensors_mut(&mut self) -> Vec<(&'static str, &mut Vec<f64>)> {
        let mut out: Vec<(&'static str, &mut Vec<f64>)> = Vec::new();
        for (weight, bias, dense) in [
            ("query.weight", "query.bias", &mut self.query),
            ("key.weight", "key.bias", &mut self.key),
            ("value.weight", "value.bias", &mut self.value),
            (
                "query_points.weight",
                "query_points.bias",
                &mut self.query_points,
            ),
            ("key_points.weight", "key_points.bias", &mut self.key_points),
            (
                "value_points.weight",
                "value_points.bias",
                &mut self.value_points,
            ),
            ("pair_bias.weight", "pair_bias.bias", &mut self.pair_bias),
            ("output.weight", "output.bias", &mut self.output),
        ] {
            out.push((weight, &mut dense.weight));
            out.push((bias, &mut dense.bias));
        }
        out.push(("head_weights", &mut self.head_weights));
        out
    }
}

/// The inputs of one IPA evaluation.
#[derive(Clone, Copy, Debug)]
pub struct IpaInput<'a> {
    /// Single representation, `residues × c_s`.
    pub single: &'a [f64],
    /// Pair representation, `residues × residues × c_z`.
    pub pair: &'a [f64],
    /// One frame per residue.
    pub frames: &'a [Rigid],
    /// One weight per residue: 0 excludes it as a key.
    pub mask: &'a [f64],
}

/// Intermediates of a forward pass, consumed by [`Ipa::backward`].
#[derive(Clone, Debug)]
pub struct IpaCache {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    q_local: Vec<f64>,
    k_local: Vec<f64>,
    v_local: Vec<f64>,
    /// Points in global coordinates: `[residue][head][point] → xyz`.
    q_global: Vec<Vec3>,
    k_global: Vec<Vec3>,
    v_global: Vec<Vec3>,
    /// Attention weights `[head][i][j]`.
    attn: Vec<f64>,
    /// Attended value points, global, `[i][head][point]`.
    out_points_global: Vec<Vec3>,
    /// Concatenated features, `residues × feature_width`.
    features: Vec<f64>,
}

/// Gradients of one IPA evaluation.
#[derive(Clone, Debug)]
pub struct IpaGrad {
    /// dL/d(parameters).
    pub params: IpaParams,
    /// dL/d(single).
    pub single: Vec<f64>,
    /// dL/d(pair).
    pub pair: Vec<f64>,
    /// dL/d(frames), [`Rigid`]-shaped.
    pub frames: Vec<Rigid>,
}

/// Gradients of one IPA evaluation up to its attention bias
/// ([`Ipa::backward_to_bias`]).
#[derive(Clone, Debug)]
pub(crate) struct IpaBiasGrad {
    /// dL/d(parameters), the pair-bias map's left zero.
    pub params: IpaParams,
    /// dL/d(single).
    pub single: Vec<f64>,
    /// dL/d(attention bias), `[i][j][head]`.
    pub bias: Vec<f64>,
    /// dL/d(attended pair rows), `[i][head][c_z]`.
    pub attended_pair: Vec<f64>,
    /// dL/d(frames), [`Rigid`]-shaped.
    pub frames: Vec<Rigid>,
}

/// One IPA layer: its sizes and parameters.
#[derive(Clone, Debug)]
pub struct Ipa {
    /// Sizes.
    pub dims: IpaDims,
    /// Parameters.
    pub params: IpaParams,
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn to_points(flat: &[f64]) -> Vec<Vec3> {
    flat.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()
}

impl Ipa {
    fn residues(&self, input: &IpaInput) -> Result<usize> {
        let d = &self.dims;
        let n = input.frames.len();
        ensure(
            input.single.len() == n * d.c_s
                && input.pair.len() == n * n * d.c_z
                && input.mask.len() == n,
            "ipa",
            || {
                format!(
                    "{n} frames need single of {} (got {}), pair of {} (got {}) and mask of {n} (got {})",
                    n * d.c_s,
                    input.single.len(),
                    n * n * d.c_z,
                    input.pair.len(),
                    input.mask.len()
                )
            },
        )?;
        Ok(n)
    }

    /// Brings each residue's local points (`[residue][head][point]`) into
    /// global coordinates with that residue's frame.
    fn globalize(&self, local: &[f64], frames: &[Rigid], per_residue: usize) -> Vec<Vec3> {
        to_points(local)
            .iter()
            .enumerate()
            .map(|(k, x)| frames[k / per_residue].apply(x))
            .collect()
    }

    fn weights(&self) -> (f64, f64) {
        let w_l = (1.0f64 / 3.0).sqrt();
        let w_c = (2.0 / (9.0 * self.dims.query_points as f64)).sqrt();
        (w_l, w_c)
    }

    /// The layer's output, `residues × c_s`, and the intermediates for backward.
    pub fn forward(&self, input: &IpaInput) -> Result<(Vec<f64>, IpaCache)> {
        self.residues(input)?;
        let bias = self.pair_bias(input.pair);
        self.forward_with_bias(input, &bias)
    }

    /// The per-head attention bias `[i][j][head]` of a pair representation:
    /// the pair-bias map, which depends on the pair alone (layers sharing the
    /// weights and the pair compute it once).
    pub(crate) fn pair_bias(&self, pair: &[f64]) -> Vec<f64> {
        self.params.pair_bias.forward(pair)
    }

    /// [`Ipa::forward`] given the attention bias of `input.pair`
    /// ([`Ipa::pair_bias`]).
    pub(crate) fn forward_with_bias(
        &self,
        input: &IpaInput,
        bias: &[f64],
    ) -> Result<(Vec<f64>, IpaCache)> {
        let n = self.residues(input)?;
        ensure(bias.len() == n * n * self.dims.heads, "ipa", || {
            format!(
                "attention bias of {} values, expected {}",
                bias.len(),
                n * n * self.dims.heads
            )
        })?;
        let d = self.dims;
        let p = &self.params;
        let (h_n, c, pq, pv) = (d.heads, d.head_dim, d.query_points, d.value_points);
        let (q, k, v) = (
            p.query.forward(input.single),
            p.key.forward(input.single),
            p.value.forward(input.single),
        );
        let q_local = p.query_points.forward(input.single);
        let k_local = p.key_points.forward(input.single);
        let v_local = p.value_points.forward(input.single);
        let q_global = self.globalize(&q_local, input.frames, h_n * pq);
        let k_global = self.globalize(&k_local, input.frames, h_n * pq);
        let v_global = self.globalize(&v_local, input.frames, h_n * pv);
        let (w_l, w_c) = self.weights();
        let inv_sqrt_c = 1.0 / (c as f64).sqrt();
        let gammas: Vec<f64> = p.head_weights.iter().map(|&x| softplus(x)).collect();
        // Logits per head as two products, with |q̃ - k̃|² expanded as
        // |q̃|² + |k̃|² - 2 q̃·k̃: `w_L (q·k/√C + γ w_C q̃·k̃ + b
        // - γ w_C/2 (|q̃|² + |k̃|²))`, then the masked softmax of each row.
        let (q_points, k_points) = (q_global.as_flattened(), k_global.as_flattened());
        let (q_norms, k_norms) = (point_norms(&q_global, pq), point_norms(&k_global, pq));
        let mut attn = vec![0.0; h_n * n * n];
        for_head_row_blocks(&mut attn, n, n, |h, r0, block| {
            let rows = block.len() / n;
            let gamma = gammas[h];
            gemm(
                w_l * inv_sqrt_c,
                head_rows(&q, h_n, c, h).row_range(r0, rows),
                head_rows(&k, h_n, c, h).t(),
                0.0,
                ViewMut::rows(block, rows, n),
            );
            gemm(
                w_l * gamma * w_c,
                head_rows(q_points, h_n, 3 * pq, h).row_range(r0, rows),
                head_rows(k_points, h_n, 3 * pq, h).t(),
                1.0,
                ViewMut::rows(block, rows, n),
            );
            for (r, row) in block.chunks_exact_mut(n).enumerate() {
                let i = r0 + r;
                let q_norm = q_norms[i * h_n + h];
                for (j, l) in row.iter_mut().enumerate() {
                    *l += w_l
                        * (bias[(i * n + j) * h_n + h]
                            - 0.5 * gamma * w_c * (q_norm + k_norms[j * h_n + h]));
                }
                softmax_masked(row, input.mask);
            }
        });
        // Attended values and value points per head: `[head][i][c | 3·P_v]`.
        let v_points = v_global.as_flattened();
        let attended_width = c + 3 * pv;
        let mut attended = vec![0.0; h_n * n * attended_width];
        for_head_row_blocks(&mut attended, n, attended_width, |h, r0, block| {
            let rows = block.len() / attended_width;
            let a = head_attention(&attn, n, h).row_range(r0, rows);
            let values = head_rows(&v, h_n, c, h);
            let points = head_rows(v_points, h_n, 3 * pv, h);
            gemm(
                1.0,
                a,
                values,
                0.0,
                block_columns(block, rows, attended_width, 0, c),
            );
            let out = block_columns(block, rows, attended_width, c, 3 * pv);
            gemm(1.0, a, points, 0.0, out);
        });
        // Per-query features: queries run in parallel.
        let width = d.feature_width();
        let mut features = vec![0.0; n * width];
        let mut out_points_global = vec![[0.0; 3]; n * h_n * pv];
        features
            .par_chunks_mut(width)
            .zip(out_points_global.par_chunks_mut(h_n * pv))
            .enumerate()
            .for_each(|(i, (f, points))| {
                let (f_values, rest) = f.split_at_mut(h_n * c);
                let (f_points, rest) = rest.split_at_mut(h_n * pv * 3);
                let (f_norms, f_pair) = rest.split_at_mut(h_n * pv);
                for h in 0..h_n {
                    let att = &attended[(h * n + i) * attended_width..][..attended_width];
                    f_values[h * c..(h + 1) * c].copy_from_slice(&att[..c]);
                    for pt in 0..pv {
                        let slot = h * pv + pt;
                        let global = [att[c + 3 * pt], att[c + 3 * pt + 1], att[c + 3 * pt + 2]];
                        points[slot] = global;
                        let local = input.frames[i].invert_apply(&global);
                        f_points[3 * slot..3 * slot + 3].copy_from_slice(&local);
                        f_norms[slot] = (dot(&local, &local) + NORM_EPSILON).sqrt();
                    }
                }
                // The attended pair rows of all heads: attention row block
                // `[head][j]` of query i times the pair rows `[j][c_z]` of i.
                gemm(
                    1.0,
                    attention_rows(&attn, n, h_n, i),
                    View::rows(pair_rows(input.pair, n, d.c_z, i), n, d.c_z),
                    0.0,
                    ViewMut::rows(f_pair, h_n, d.c_z),
                );
            });
        let out = p.output.forward(&features);
        Ok((
            out,
            IpaCache {
                q,
                k,
                v,
                q_local,
                k_local,
                v_local,
                q_global,
                k_global,
                v_global,
                attn,
                out_points_global,
                features,
            },
        ))
    }

    /// Gradients of `Σ grad_out ⊙ output` with respect to everything.
    pub fn backward(
        &self,
        input: &IpaInput,
        cache: &IpaCache,
        grad_out: &[f64],
    ) -> Result<IpaGrad> {
        let n = self.residues(input)?;
        let mut pair = vec![0.0; n * n * self.dims.c_z];
        let mut g = self.backward_to_bias(input, cache, grad_out)?;
        self.attended_pair_backward(&[(cache, &g.attended_pair)], &mut pair);
        self.params
            .pair_bias
            .backward(input.pair, &g.bias, &mut g.params.pair_bias, &mut pair);
        Ok(IpaGrad {
            params: g.params,
            single: g.single,
            pair,
            frames: g.frames,
        })
    }

    /// The backward of [`Ipa::forward_with_bias`] up to the pair: returns
    /// the attention bias's gradient in place of the pair-bias map's (whose
    /// parameter gradients stay zero) and the gradient of the attended pair
    /// rows, which [`Ipa::attended_pair_backward`] takes to the pair.
    pub(crate) fn backward_to_bias(
        &self,
        input: &IpaInput,
        cache: &IpaCache,
        grad_out: &[f64],
    ) -> Result<IpaBiasGrad> {
        let n = self.residues(input)?;
        let d = self.dims;
        ensure(grad_out.len() == n * d.c_s, "ipa backward", || {
            format!(
                "grad_out has {} values, expected {}",
                grad_out.len(),
                n * d.c_s
            )
        })?;
        let p = &self.params;
        let (h_n, c, pq, pv) = (d.heads, d.head_dim, d.query_points, d.value_points);
        let mut g = IpaBiasGrad {
            params: IpaParams::zeros(&d),
            single: vec![0.0; n * d.c_s],
            bias: Vec::new(),
            attended_pair: vec![0.0; n * d.heads * d.c_z],
            frames: vec![Rigid::ZERO; n],
        };
        let width = d.feature_width();
        let mut g_features = vec![0.0; n * width];
        p.output.backward(
            &cache.features,
            grad_out,
            &mut g.params.output,
            &mut g_features,
        );

        // Back through the per-residue feature assembly to the attention
        // weights and the attended quantities.
        // Pass 1, queries in parallel: the pair rows' share of
        // dL/d(attention) (`[i][h][j]` here), the pair and frame gradients of
        // query i, and dL/d(attended value points) in global coordinates.
        let row_width = h_n * n;
        let mut g_attn_by_query = vec![0.0; n * row_width];
        let mut g_out_global = vec![[0.0; 3]; n * h_n * pv];
        let mut g_query_frames = vec![Rigid::ZERO; n];
        g_attn_by_query
            .par_chunks_mut(row_width)
            .zip(g.attended_pair.par_chunks_mut(h_n * d.c_z))
            .zip(g_out_global.par_chunks_mut(h_n * pv))
            .zip(g_query_frames.par_iter_mut())
            .enumerate()
            .for_each(|(i, (((g_attn_i, g_rows_i), g_points_i), g_frame_i))| {
                let gf = &g_features[i * width..(i + 1) * width];
                let f = &cache.features[i * width..(i + 1) * width];
                let (_, rest) = gf.split_at(h_n * c);
                let (g_points, rest) = rest.split_at(h_n * pv * 3);
                let (g_norms, g_pair) = rest.split_at(h_n * pv);
                let f_points = &f[h_n * c..h_n * c + h_n * pv * 3];
                let f_norms = &f[h_n * c + h_n * pv * 3..h_n * c + h_n * pv * 4];
                for slot in 0..h_n * pv {
                    let local: Vec3 = f_points[3 * slot..3 * slot + 3].try_into().unwrap();
                    let g_local = add(
                        &g_points[3 * slot..3 * slot + 3].try_into().unwrap(),
                        &scale(&local, g_norms[slot] / f_norms[slot]),
                    );
                    let (g_frame, g_global) = input.frames[i].invert_apply_backward(
                        &cache.out_points_global[i * h_n * pv + slot],
                        &g_local,
                    );
                    g_frame_i.accumulate(&g_frame);
                    g_points_i[slot] = g_global;
                }
                // The attended pair rows: dL/d(attention) `[head][j]` gets
                // dL/d(rows) `[head][c_z]` times the pair rows of i
                // transposed.
                g_rows_i.copy_from_slice(g_pair);
                let z_i = View::rows(pair_rows(input.pair, n, d.c_z, i), n, d.c_z);
                let g_rows = View::rows(g_pair, h_n, d.c_z);
                gemm(1.0, g_rows, z_i.t(), 0.0, ViewMut::rows(g_attn_i, h_n, n));
            });
        for (gf, gq) in g.frames.iter_mut().zip(&g_query_frames) {
            gf.accumulate(gq);
        }
        // The attended values' and value points' share of dL/d(attention),
        // per head: `[head][i][j]`.
        let g_values = View::rows(&g_features, n, width);
        let g_points_flat = g_out_global.as_flattened();
        let (v_points, k_points) = (cache.v_global.as_flattened(), cache.k_global.as_flattened());
        let q_points = cache.q_global.as_flattened();
        let mut g_attn = vec![0.0; h_n * n * n];
        for_head_row_blocks(&mut g_attn, n, n, |h, r0, block| {
            let rows = block.len() / n;
            let g_v_rows = g_values.col_range(h * c, c).row_range(r0, rows);
            let g_p_rows = head_rows(g_points_flat, h_n, 3 * pv, h).row_range(r0, rows);
            let values = head_rows(&cache.v, h_n, c, h);
            let points = head_rows(v_points, h_n, 3 * pv, h);
            gemm(
                1.0,
                g_v_rows,
                values.t(),
                0.0,
                ViewMut::rows(block, rows, n),
            );
            gemm(
                1.0,
                g_p_rows,
                points.t(),
                1.0,
                ViewMut::rows(block, rows, n),
            );
        });
        // Pass 2, per head: dL/d(values) and dL/d(value points), the
        // attention transposed times dL/d(attended): `[head][j][c | 3·P_v]`.
        let attended_width = c + 3 * pv;
        let mut g_attended = vec![0.0; h_n * n * attended_width];
        for_head_row_blocks(&mut g_attended, n, attended_width, |h, r0, block| {
            let rows = block.len() / attended_width;
            let a_t = head_attention(&cache.attn, n, h).t().row_range(r0, rows);
            let g_v_all = g_values.col_range(h * c, c);
            let g_p_all = head_rows(g_points_flat, h_n, 3 * pv, h);
            let out = block_columns(block, rows, attended_width, 0, c);
            gemm(1.0, a_t, g_v_all, 0.0, out);
            let out = block_columns(block, rows, attended_width, c, 3 * pv);
            gemm(1.0, a_t, g_p_all, 0.0, out);
        });
        let mut g_v = vec![0.0; cache.v.len()];
        let mut g_v_global = vec![[0.0; 3]; cache.v_global.len()];
        unpack_heads(&g_attended, n, h_n, attended_width, |j, h, row| {
            g_v[(j * h_n + h) * c..][..c].copy_from_slice(&row[..c]);
            for pt in 0..pv {
                g_v_global[(j * h_n + h) * pv + pt] =
                    [row[c + 3 * pt], row[c + 3 * pt + 1], row[c + 3 * pt + 2]];
            }
        });

        // Back through the softmax: dL/d(logits), `[h][i][j]`, rows in
        // parallel, with each row's sum.
        let (w_l, w_c) = self.weights();
        let inv_sqrt_c = 1.0 / (c as f64).sqrt();
        let gammas: Vec<f64> = p.head_weights.iter().map(|&x| softplus(x)).collect();
        let mut g_logits = vec![0.0; h_n * n * n];
        let row_sums: Vec<f64> = g_logits
            .par_chunks_mut(n)
            .enumerate()
            .map(|(row, g_row)| {
                let (h, i) = (row / n, row % n);
                let a_row = &cache.attn[row * n..(row + 1) * n];
                let ga_row = &g_attn[row * n..(row + 1) * n];
                let ga_pair = &g_attn_by_query[i * row_width + h * n..][..n];
                let mut mean = 0.0;
                for j in 0..n {
                    mean += a_row[j] * (ga_row[j] + ga_pair[j]);
                }
                let mut sum = 0.0;
                for j in 0..n {
                    g_row[j] = w_l * a_row[j] * (ga_row[j] + ga_pair[j] - mean);
                    sum += g_row[j];
                }
                sum
            })
            .collect();
        // Column sums per head, `[h][j]`, each summed over i in order.
        let col_sums: Vec<f64> = (0..h_n * n)
            .into_par_iter()
            .map(|hj| {
                let (h, j) = (hj / n, hj % n);
                (0..n).map(|i| g_logits[(h * n + i) * n + j]).sum()
            })
            .collect();
        // The bias gradient is dL/d(logits) in the bias layout `[i][j][h]`.
        let mut g_bias = vec![0.0; n * n * h_n];
        g_bias
            .par_chunks_mut(n * h_n)
            .enumerate()
            .for_each(|(i, row)| {
                for (j, gh) in row.chunks_exact_mut(h_n).enumerate() {
                    for (h, g) in gh.iter_mut().enumerate() {
                        *g = g_logits[(h * n + i) * n + j];
                    }
                }
            });
        // The logits are `q·k/√C + γ w_C q̃·k̃ + b - γ w_C/2 (|q̃|² + |k̃|²)`
        // (times w_L, already in dL/d(logits) = G). Per head:
        // queries `[G K/√C | G K̃]`, keys `[Gᵀ Q/√C | Gᵀ Q̃]`.
        let key_width = c + 3 * pq;
        let mut g_by_query = vec![0.0; h_n * n * key_width];
        let mut g_by_key = vec![0.0; h_n * n * key_width];
        let query_side = |h: usize, r0: usize, block: &mut [f64]| {
            let rows = block.len() / key_width;
            let g = head_attention(&g_logits, n, h).row_range(r0, rows);
            let out = block_columns(block, rows, key_width, 0, c);
            gemm(inv_sqrt_c, g, head_rows(&cache.k, h_n, c, h), 0.0, out);
            let out = block_columns(block, rows, key_width, c, 3 * pq);
            gemm(1.0, g, head_rows(k_points, h_n, 3 * pq, h), 0.0, out);
        };
        let key_side = |h: usize, r0: usize, block: &mut [f64]| {
            let rows = block.len() / key_width;
            let g_t = head_attention(&g_logits, n, h).t().row_range(r0, rows);
            let out = block_columns(block, rows, key_width, 0, c);
            gemm(inv_sqrt_c, g_t, head_rows(&cache.q, h_n, c, h), 0.0, out);
            let out = block_columns(block, rows, key_width, c, 3 * pq);
            gemm(1.0, g_t, head_rows(q_points, h_n, 3 * pq, h), 0.0, out);
        };
        rayon::join(
            || for_head_row_blocks(&mut g_by_query, n, key_width, query_side),
            || for_head_row_blocks(&mut g_by_key, n, key_width, key_side),
        );
        let (q_norms, k_norms) = (
            point_norms(&cache.q_global, pq),
            point_norms(&cache.k_global, pq),
        );
        let mut g_q = vec![0.0; cache.q.len()];
        let mut g_q_global = vec![[0.0; 3]; cache.q_global.len()];
        // Σ_ij G_ij |q̃_i - k̃_j|² per head, for the point weights.
        let mut dist_terms = vec![0.0; h_n];
        unpack_heads(&g_by_query, n, h_n, key_width, |i, h, row| {
            g_q[(i * h_n + h) * c..][..c].copy_from_slice(&row[..c]);
            let scale_h = -gammas[h] * w_c;
            let row_sum = row_sums[h * n + i];
            let mut cross = 0.0;
            for pt in 0..pq {
                let qp = cache.q_global[(i * h_n + h) * pq + pt];
                let gk: Vec3 = [row[c + 3 * pt], row[c + 3 * pt + 1], row[c + 3 * pt + 2]];
                cross += dot(&qp, &gk);
                g_q_global[(i * h_n + h) * pq + pt] =
                    scale(&sub(&scale(&qp, row_sum), &gk), scale_h);
            }
            dist_terms[h] += row_sum * q_norms[i * h_n + h] - 2.0 * cross;
        });
        let mut g_k = vec![0.0; cache.k.len()];
        let mut g_k_global = vec![[0.0; 3]; cache.k_global.len()];
        unpack_heads(&g_by_key, n, h_n, key_width, |j, h, row| {
            g_k[(j * h_n + h) * c..][..c].copy_from_slice(&row[..c]);
            let scale_h = gammas[h] * w_c;
            let col_sum = col_sums[h * n + j];
            for pt in 0..pq {
                let kp = cache.k_global[(j * h_n + h) * pq + pt];
                let gq: Vec3 = [row[c + 3 * pt], row[c + 3 * pt + 1], row[c + 3 * pt + 2]];
                g_k_global[(j * h_n + h) * pq + pt] =
                    scale(&sub(&gq, &scale(&kp, col_sum)), scale_h);
            }
            dist_terms[h] += col_sum * k_norms[j * h_n + h];
        });
        for h in 0..h_n {
            let g_gamma = -0.5 * w_c * dist_terms[h];
            g.params.head_weights[h] = g_gamma * sigmoid(p.head_weights[h]);
        }
        g.bias = g_bias;

        // Back through the frames to the local points, then the projections.
        let g_q_local = self.localize_backward(
            &cache.q_local,
            input.frames,
            h_n * pq,
            &g_q_global,
            &mut g.frames,
        );
        let g_k_local = self.localize_backward(
            &cache.k_local,
            input.frames,
            h_n * pq,
            &g_k_global,
            &mut g.frames,
        );
        let g_v_local = self.localize_backward(
            &cache.v_local,
            input.frames,
            h_n * pv,
            &g_v_global,
            &mut g.frames,
        );
        let s = input.single;
        p.query
            .backward(s, &g_q, &mut g.params.query, &mut g.single);
        p.key.backward(s, &g_k, &mut g.params.key, &mut g.single);
        p.value
            .backward(s, &g_v, &mut g.params.value, &mut g.single);
        p.query_points
            .backward(s, &g_q_local, &mut g.params.query_points, &mut g.single);
        p.key_points
            .backward(s, &g_k_local, &mut g.params.key_points, &mut g.single);
        p.value_points
            .backward(s, &g_v_local, &mut g.params.value_points, &mut g.single);
        Ok(g)
    }

    /// Adds into `grad_pair` (`[i][j][c_z]`) the pair gradient of the
    /// attended pair rows of evaluations over the same pair, given each one's
    /// cache and dL/d(attended pair rows) (`[i][head][c_z]`): per query i,
    /// the attention of i transposed times dL/d(rows), the evaluations added
    /// in the order given while the rows of i stay in cache. Queries run in
    /// parallel; the result does not depend on the thread count.
    pub(crate) fn attended_pair_backward(
        &self,
        evaluations: &[(&IpaCache, &Vec<f64>)],
        grad_pair: &mut [f64],
    ) {
        let (h_n, c_z) = (self.dims.heads, self.dims.c_z);
        let n = (grad_pair.len() / c_z).isqrt();
        assert_eq!(grad_pair.len(), n * n * c_z, "ipa pair gradient shape");
        grad_pair
            .par_chunks_mut(n * c_z)
            .enumerate()
            .for_each(|(i, g_pair_i)| {
                for (cache, g_rows) in evaluations {
                    gemm(
                        1.0,
                        attention_rows(&cache.attn, n, h_n, i).t(),
                        View::rows(&g_rows[i * h_n * c_z..][..h_n * c_z], h_n, c_z),
                        1.0,
                        ViewMut::rows(g_pair_i, n, c_z),
                    );
                }
            });
    }

    /// Backward of [`Ipa::globalize`]: accumulates frame gradients and returns
    /// the gradient of the flat local points.
    fn localize_backward(
        &self,
        local: &[f64],
        frames: &[Rigid],
        per_residue: usize,
        grad_global: &[Vec3],
        grad_frames: &mut [Rigid],
    ) -> Vec<f64> {
        let mut out = Vec::with_capacity(local.len());
        for (k, (x, gx)) in to_points(local).iter().zip(grad_global).enumerate() {
            let r = k / per_residue;
            let (g_frame, g_local) = frames[r].apply_backward(x, gx);
            grad_frames[r].accumulate(&g_frame);
            out.extend_from_slice(&g_local);
        }
        out
    }
}

/// The attention weights of query `i`, all heads, as a `heads × n` view of
/// the `[head][i][j]` attention array.
fn attention_rows(attn: &[f64], n: usize, heads: usize, i: usize) -> View<'_> {
    View {
        data: &attn[i * n..],
        rows: heads,
        cols: n,
        row_stride: n * n,
        col_stride: 1,
    }
}

/// Row `i` of a `n × n × c_z` pair array: `n · c_z` values.
fn pair_rows(pair: &[f64], n: usize, c_z: usize, i: usize) -> &[f64] {
    &pair[i * n * c_z..(i + 1) * n * c_z]
}

/// Softmax, in place, of the logits in `row` over the entries whose `mask`
/// is non-zero (masked entries 0; all 0 when nothing is unmasked).
fn softmax_masked(row: &mut [f64], mask: &[f64]) {
    let max = row
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m != 0.0)
        .map(|(l, _)| *l)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for (o, m) in row.iter_mut().zip(mask) {
        *o = if *m != 0.0 { (*o - max).exp() } else { 0.0 };
        total += *o;
    }
    if total > 0.0 {
        row.iter_mut().for_each(|o| *o /= total);
    }
}

/// Rows per parallel block of the per-head products.
const HEAD_BLOCK_ROWS: usize = 64;

/// Runs `f(head, first_row, block)` in parallel over blocks of
/// [`HEAD_BLOCK_ROWS`] rows of a `[head][rows][width]` array (the blocks are
/// fixed by the shapes, not by the thread count).
fn for_head_row_blocks(
    out: &mut [f64],
    rows: usize,
    width: usize,
    f: impl Fn(usize, usize, &mut [f64]) + Sync,
) {
    out.par_chunks_mut(rows * width)
        .enumerate()
        .for_each(|(h, head)| {
            head.par_chunks_mut(HEAD_BLOCK_ROWS * width)
                .enumerate()
                .for_each(|(b, block)| f(h, b * HEAD_BLOCK_ROWS, block));
        });
}

/// Head `h` of a `[residue][head][width]` array as a `residues × width` view.
fn head_rows(data: &[f64], heads: usize, width: usize, h: usize) -> View<'_> {
    View {
        data: &data[h * width..],
        rows: data.len() / (heads * width),
        cols: width,
        row_stride: heads * width,
        col_stride: 1,
    }
}

/// The `n × n` attention weights of head `h` in a `[head][i][j]` array.
fn head_attention(attn: &[f64], n: usize, h: usize) -> View<'_> {
    View::rows(&attn[h * n * n..(h + 1) * n * n], n, n)
}

/// Columns `start..start + cols` of a row-major `rows × width` block.
fn block_columns(
    block: &mut [f64],
    rows: usize,
    width: usize,
    start: usize,
    cols: usize,
) -> ViewMut<'_> {
    ViewMut {
        data: &mut block[start..],
        rows,
        cols,
        row_stride: width,
        col_stride: 1,
    }
}

/// Calls `f(residue, head, row)` for every row of a `[head][residue][width]`
/// array, residue-major (residues in order, heads in order within each).
fn unpack_heads(
    data: &[f64],
    n: usize,
    heads: usize,
    width: usize,
    mut f: impl FnMut(usize, usize, &[f64]),
) {
    for r in 0..n {
        for h in 0..heads {
            f(r, h, &data[(h * n + r) * width..][..width]);
        }
    }
}

/// `Σ_p |x_p|²` over the `points` points of each (residue, head).
fn point_norms(global: &[Vec3], points: usize) -> Vec<f64> {
    global
        .chunks_exact(points)
        .map(|ps| ps.iter().map(|x| dot(x, x)).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient, random};
    use crate::structure::rigid::rigid_from_update;

    const DIMS: IpaDims = IpaDims {
        c_s: 4,
        c_z: 3,
        heads: 2,
        head_dim: 2,
        query_points: 2,
        value_points: 2,
    };

    fn random_layer(seed: u64) -> Ipa {
        let mut params = IpaParams::zeros(&DIMS);
        for (k, (_, t)) in params.tensors_mut().into_iter().enumerate() {
            let v = random(seed * 100 + k as u64, t.len());
            t.copy_from_slice(&v);
        }
        Ipa { dims: DIMS, params }
    }

    fn random_frames(seed: u64, n: usize) -> Vec<Rigid> {
        let u = random(seed, 6 * n);
        (0..n)
            .map(|k| rigid_from_update(&std::array::from_fn(|i| 2.0 * u[6 * k + i])))
            .collect()
    }

    #[test]
    fn output_is_invariant_under_a_global_rigid_transform() {
        let n = 4;
        let layer = random_layer(1);
        let single = random(2, n * DIMS.c_s);
        let pair = random(3, n * n * DIMS.c_z);
        let frames = random_frames(4, n);
        let mask = [1.0, 1.0, 0.0, 1.0];
        let input = IpaInput {
            single: &single,
            pair: &pair,
            frames: &frames,
            mask: &mask,
        };
        let (out, _) = layer.forward(&input).unwrap();
        let g = random_frames(5, 1)[0];
        let moved: Vec<Rigid> = frames.iter().map(|f| g.compose(f)).collect();
        let (out_moved, _) = layer
            .forward(&IpaInput {
                frames: &moved,
                ..input
            })
            .unwrap();
        for (a, b) in out.iter().zip(&out_moved) {
            assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        }
        // The masked residue is ignored as a key: changing its single row
        // changes only its own output row.
        let mut single2 = single.clone();
        single2[2 * DIMS.c_s] += 0.5;
        let (out2, _) = layer
            .forward(&IpaInput {
                single: &single2,
                ..input
            })
            .unwrap();
        for r in [0, 1, 3] {
            for ch in 0..DIMS.c_s {
                let k = r * DIMS.c_s + ch;
                assert!((out[k] - out2[k]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn wrong_sizes_are_a_shape_error() {
        let layer = random_layer(1);
        let frames = random_frames(1, 2);
        let single = vec![0.0; 2 * DIMS.c_s];
        let err = layer
            .forward(&IpaInput {
                single: &single,
                pair: &[0.0; 5],
                frames: &frames,
                mask: &[1.0, 1.0],
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("pair of 12 (got 5)"), "{err}");
    }

    #[test]
    fn gradcheck_ipa() {
        let n = 3;
        let layer = random_layer(6);
        let single = random(7, n * DIMS.c_s);
        let pair = random(8, n * n * DIMS.c_z);
        let frames = random_frames(9, n);
        let mask = [1.0, 0.0, 1.0];
        let weights = random(10, n * DIMS.c_s);
        let input = IpaInput {
            single: &single,
            pair: &pair,
            frames: &frames,
            mask: &mask,
        };
        let (_, cache) = layer.forward(&input).unwrap();
        let mut grad = layer.backward(&input, &cache, &weights).unwrap();
        let loss =
            |layer: &Ipa, input: &IpaInput| dot_slices(&layer.forward(input).unwrap().0, &weights);

        // Parameters, one tensor at a time.
        // The key bias and the pair-bias bias shift every logit of a query
        // row equally, so the softmax cancels them: their gradients are zero.
        let analytic: Vec<(&str, Vec<f64>)> = grad
            .params
            .tensors_mut()
            .into_iter()
            .map(|(name, t)| (name, t.clone()))
            .collect();
        let shift_invariant = [3, 13];
        for (t, (name, analytic)) in analytic.iter().enumerate() {
            let x = layer.params.clone().tensors_mut().swap_remove(t).1.clone();
            let f = |v: &[f64]| {
                let mut l = layer.clone();
                l.params.tensors_mut().swap_remove(t).1.copy_from_slice(v);
                loss(&l, &input)
            };
            let nonzero = analytic.iter().any(|g| g.abs() > 1e-4);
            assert_eq!(
                nonzero,
                !shift_invariant.contains(&t),
                "tensor {t} ({name})"
            );
            check_gradient(&f, &x, analytic);
        }
        // Single and pair representations.
        let f = |v: &[f64]| loss(&layer, &IpaInput { single: v, ..input });
        check_gradient(&f, &single, &grad.single);
        let f = |v: &[f64]| loss(&layer, &IpaInput { pair: v, ..input });
        check_gradient(&f, &pair, &grad.pair);
        // Frames, all twelve numbers of each.
        let flat: Vec<f64> = frames.iter().flat_map(|f| f.to_array()).collect();
        let f = |v: &[f64]| {
            let fr: Vec<Rigid> = v
                .chunks(12)
                .map(|c| Rigid::from_array(c.try_into().unwrap()))
                .collect();
            loss(
                &layer,
                &IpaInput {
                    frames: &fr,
                    ..input
                },
            )
        };
        let analytic: Vec<f64> = grad.frames.iter().flat_map(|f| f.to_array()).collect();
        check_gradient(&f, &flat, &analytic);
    }
}
