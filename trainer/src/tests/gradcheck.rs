//! Finite-difference gradient checks in f64 on the CPU backend, for every op,
//! every module and both whole blocks at tiny sizes.

use crate::backend::cpu::CpuBackend;
use crate::backend::{Activation, AttnShape, Backend, Class, Dropout, SharedAxis, TensorId, View};
use crate::block::EvoformerBlock;
use crate::config::BlockConfig;
use crate::error::Result;
use crate::layers::*;
use rand::{Rng, SeedableRng};

type Be = CpuBackend<f64>;
type Pass = Box<dyn Fn(&mut Be) -> Result<()>>;

/// A differentiable function of some tensors, with its hand-written backward.
struct Case {
    be: Be,
    /// (value, gradient) of every differentiable input, parameters included.
    inputs: Vec<(TensorId, TensorId)>,
    /// (value, gradient seed) of every output.
    outputs: Vec<(TensorId, TensorId)>,
    fwd: Pass,
    bwd: Pass,
}

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

fn random(r: &mut impl Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
}

fn loss(case: &mut Case, weights: &[Vec<f64>]) -> f64 {
    (case.fwd)(&mut case.be).unwrap();
    case.outputs
        .iter()
        .zip(weights)
        .map(|((o, _), w)| {
            case.be
                .get(*o)
                .unwrap()
                .iter()
                .zip(w)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .sum()
}

/// Checks every input's analytic gradient against central differences on up to
/// `probes` elements per input; returns the worst relative error.
fn check(mut case: Case, seed: u64, probes: usize) -> f64 {
    let mut r = rng(seed);
    for &(x, _) in &case.inputs {
        let n = case.be.len(x);
        let v = random(&mut r, n);
        case.be.write_exact(x, &v).unwrap();
    }
    let weights: Vec<Vec<f64>> = case
        .outputs
        .iter()
        .map(|&(o, _)| random(&mut r, case.be.len(o)))
        .collect();
    (case.fwd)(&mut case.be).unwrap();
    for &(_, g) in &case.inputs {
        case.be.fill(g, 0.0).unwrap();
    }
    for (&(_, d), w) in case.outputs.iter().zip(&weights) {
        case.be.write_exact(d, w).unwrap();
    }
    (case.bwd)(&mut case.be).unwrap();
    let analytic: Vec<Vec<f64>> = case
        .inputs
        .iter()
        .map(|&(_, g)| case.be.get(g).unwrap().to_vec())
        .collect();
    let eps = 1e-5;
    let mut worst: f64 = 0.0;
    for (k, &(x, _)) in case.inputs.clone().iter().enumerate() {
        let base = case.be.get(x).unwrap().to_vec();
        let n = base.len();
        let idx: Vec<usize> = if n <= probes {
            (0..n).collect()
        } else {
            (0..probes).map(|_| r.random_range(0..n)).collect()
        };
        for i in idx {
            let mut v = base.clone();
            v[i] = base[i] + eps;
            case.be.write_exact(x, &v).unwrap();
            let lp = loss(&mut case, &weights);
            v[i] = base[i] - eps;
            case.be.write_exact(x, &v).unwrap();
            let lm = loss(&mut case, &weights);
            case.be.write_exact(x, &base).unwrap();
            let numeric = (lp - lm) / (2.0 * eps);
            let a = analytic[k][i];
            let err = (a - numeric).abs() / (1e-3 + a.abs().max(numeric.abs()));
            assert!(
                err < 1e-4,
                "gradient of {} [{i}]: analytic {a:.8e}, numeric {numeric:.8e}",
                case.be.tensor_name(x)
            );
            worst = worst.max(err);
        }
    }
    worst
}

fn params_as_inputs(table: &ParamTable) -> Vec<(TensorId, TensorId)> {
    table
        .entries
        .iter()
        .map(|e| (e.param.w, e.param.g))
        .collect()
}

fn act(be: &mut Be, name: &str, n: usize) -> (TensorId, TensorId) {
    (
        be.declare(name, n, Class::Activation),
        be.declare(&format!("d_{name}"), n, Class::Activation),
    )
}

#[test]
fn gradcheck_linear_relu_and_partial_bias() {
    let mut be = Be::new();
    let mut table = ParamTable::default();
    let (lin, lin2) = {
        let mut b = Builder::new(&mut be, &mut table);
        (
            Linear::new(&mut b, "l", 4, 5, true, Activation::Relu),
            Linear::with_partial_bias(&mut b, "p", 5, 6, 2, 3),
        )
    };
    let (x, dx) = act(&mut be, "x", 3 * 4);
    let (h, dh) = act(&mut be, "h", 3 * 5);
    let (y, dy) = act(&mut be, "y", 3 * 6);
    be.materialize().unwrap();
    let mut inputs = params_as_inputs(&table);
    inputs.push((x, dx));
    let fwd: Pass = Box::new(move |be| {
        lin.forward(be, 3, x, h)?;
        lin2.forward(be, 3, h, y)
    });
    let bwd: Pass = Box::new(move |be| {
        lin2.backward(be, 3, h, y, dy, Some(dh), false)?;
        lin.backward(be, 3, x, h, dh, Some(dx), false)
    });
    check(
        Case {
            be,
            inputs,
            outputs: vec![(y, dy)],
            fwd,
            bwd,
        },
        1,
        40,
    );
}

#[test]
fn gradcheck_layer_norm() {
    let mut be = Be::new();
    let mut table = ParamTable::default();
    let ln = LayerNorm::new(&mut Builder::new(&mut be, &mut table), "ln", 4, 7);
    let (x, dx) = act(&mut be, "x", 28);
    let (y, dy) = act(&mut be, "y", 28);
    be.materialize().unwrap();
    let mut inputs = params_as_inputs(&table);
    inputs.push((x, dx));
    let fwd: Pass = Box::new(move |be| ln.forward(be, x, y));
    let bwd: Pass = Box::new(move |be| ln.backward(be, x, dy, dx, false));
    check(
        Case {
            be,
            inputs,
            outputs: vec![(y, dy)],
            fwd,
            bwd,
        },
        2,
        40,
    );
}

/// The attention op as a gradient-check case; `mask` is an optional key mask
/// `[2, 4]` (0 = masked).
fn attention_case(with_bias: bool, mask: Option<[f32; 8]>) -> Case {
    let s = AttnShape {
        batch: 2,
        len: 4,
        heads: 2,
        head_dim: 3,
    };
    let mut be = Be::new();
    let (p, dp) = act(&mut be, "qkvg", s.rows() * 4 * s.width());
    let (bias, dbias_act) = act(&mut be, "bias", s.heads * s.len * s.len);
    let dbias = be.declare("dbias", s.heads * s.len * s.len, Class::Stat);
    let attn = be.declare("attn", s.rows() * s.width(), Class::Activation);
    let (out, dout) = act(&mut be, "out", s.rows() * s.width());
    let lse = be.declare("lse", s.batch * s.heads * s.len, Class::Stat);
    let key_mask = be.declare("key_mask", s.batch * s.len, Class::Stat);
    be.materialize().unwrap();
    let km = mask.map(|m| {
        be.write(key_mask, &m).unwrap();
        key_mask
    });
    let b = with_bias.then_some(bias);
    let fwd: Pass = Box::new(move |be| be.attention_fwd(s, p, b, km, attn, out, lse));
    let bwd: Pass = Box::new(move |be| {
        be.fill(dbias, 0.0)?;
        be.attention_bwd(s, p, b, km, attn, lse, dout, dp, with_bias.then_some(dbias))?;
        let v = be.get(dbias)?.to_vec();
        be.write_exact(dbias_act, &v)
    });
    let mut inputs = vec![(p, dp)];
    if with_bias {
        inputs.push((bias, dbias_act));
    }
    Case {
        be,
        inputs,
        outputs: vec![(out, dout)],
        fwd,
        bwd,
    }
}

#[test]
fn gradcheck_attention_with_and_without_bias() {
    check(attention_case(true, None), 3, 60);
    check(attention_case(false, None), 4, 60);
}

/// Key masks: batch 0 keeps keys 0, 1, 3; batch 1 has every key masked (its rows
/// give zero output, so its gradients must be exactly the zeros FD sees).
#[test]
fn gradcheck_attention_with_key_mask() {
    let mask = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
    check(attention_case(true, Some(mask)), 5, 60);
    check(attention_case(false, Some(mask)), 6, 60);
}

#[test]
fn gradcheck_elementwise_ops() {
    let mut be = Be::new();
    let (a, da) = act(&mut be, "a", 2 * 3);
    let (g, dg) = act(&mut be, "g", 6 * 3);
    let (o, dout) = act(&mut be, "o", 6 * 3);
    let da_full = be.declare("da_full", 6 * 3, Class::Activation);
    let (sm, dsm) = act(&mut be, "softmax", 6 * 3);
    let (t, dt) = act(&mut be, "t", 6 * 3);
    let (x, dx) = act(&mut be, "x", 6 * 3);
    let (res, dres) = act(&mut be, "res", 6 * 3);
    let dxd = be.declare("dx_dropout", 18, Class::Activation);
    be.materialize().unwrap();
    let drop = Dropout {
        p: 0.3,
        seed: 7,
        shape: [2, 3, 3],
        shared: SharedAxis::Axis0,
    };
    // o = sigmoid(g) * a broadcast over 3 rows; sm = softmax(o); t = transpose(sm);
    // res_out = x + dropout(t) written into o's gradient chain through `t`.
    let a_b = View {
        t: a,
        off: 0,
        ld: 3,
        row_div: 3,
    };
    let fwd: Pass = Box::new(move |be| {
        be.sigmoid_mul_fwd(6, 3, a_b, View::dense(g, 3), View::dense(o, 3))?;
        be.softmax_fwd(6, 3, o, sm)?;
        be.transpose([1, 2, 3, 3], sm, t, false)?;
        be.residual_dropout_fwd(&drop, x, t, res)
    });
    let bwd: Pass = Box::new(move |be| {
        let v = be.get(dres)?.to_vec();
        be.write_exact(dx, &v)?;
        be.dropout_bwd(&drop, dres, dxd)?;
        be.transpose([1, 3, 2, 3], dxd, dt, false)?;
        be.softmax_bwd(6, 3, sm, dt, dsm)?;
        be.sigmoid_mul_bwd(
            6,
            3,
            a_b,
            View::dense(g, 3),
            View::dense(dsm, 3),
            View::dense(da_full, 3),
            View::dense(dg, 3),
        )?;
        // Broadcast reduction: da[r] = sum over its 3 logical rows.
        let full = be.get(da_full)?.to_vec();
        let red: Vec<f64> = (0..6)
            .map(|i| (0..3).map(|k| full[((i / 3) * 3 + k) * 3 + i % 3]).sum())
            .collect();
        be.write_exact(da, &red)?;
        let _ = dout;
        Ok(())
    });
    check(
        Case {
            be,
            inputs: vec![(a, da), (g, dg), (x, dx)],
            outputs: vec![(res, dres)],
            fwd,
            bwd,
        },
        5,
        40,
    );
}

fn module_case<M: 'static>(
    build: impl FnOnce(&mut Builder<Be>) -> M,
    in_len: usize,
    out_len: usize,
    extra_in: Option<usize>,
    fwd: impl Fn(&M, &mut Be, TensorId, Option<TensorId>, TensorId) -> Result<()> + 'static,
    bwd: impl Fn(
        &M,
        &mut Be,
        TensorId,
        Option<TensorId>,
        TensorId,
        TensorId,
        TensorId,
        Option<TensorId>,
    ) -> Result<()>
    + 'static,
) -> Case {
    let mut be = Be::new();
    let mut table = ParamTable::default();
    let m = build(&mut Builder::new(&mut be, &mut table));
    let (x, dx) = act(&mut be, "x", in_len);
    let (y, dy) = act(&mut be, "y", out_len);
    let extra = extra_in.map(|n| act(&mut be, "pair", n));
    be.materialize().unwrap();
    let mut inputs = params_as_inputs(&table);
    inputs.push((x, dx));
    inputs.extend(extra);
    let m = std::rc::Rc::new(m);
    let m2 = m.clone();
    let (e, de) = (extra.map(|p| p.0), extra.map(|p| p.1));
    let fwd: Pass = Box::new(move |be| fwd(&m, be, x, e, y));
    let bwd: Pass = Box::new(move |be| bwd(&m2, be, x, e, y, dy, dx, de));
    Case {
        be,
        inputs,
        outputs: vec![(y, dy)],
        fwd,
        bwd,
    }
}

#[test]
fn gradcheck_gated_attention_modules() {
    let s = AttnShape {
        batch: 3,
        len: 4,
        heads: 2,
        head_dim: 2,
    };
    let (c, cz) = (5, 3);
    let pair = module_case(
        |b| GatedAttention::new(b, "row", s, c, BiasKind::Pair(cz)),
        s.rows() * c,
        s.rows() * c,
        Some(s.len * s.len * cz),
        |m, be, x, p, y| m.forward(be, x, p, None, y),
        |m, be, x, p, y, dy, dx, dp| m.backward(be, x, p, None, y, dy, dx, false, dp),
    );
    check(pair, 6, 12);
    let tri = AttnShape {
        batch: 4,
        len: 4,
        heads: 2,
        head_dim: 2,
    };
    let own = module_case(
        |b| GatedAttention::new(b, "tri", tri, c, BiasKind::OwnInput),
        tri.rows() * c,
        tri.rows() * c,
        None,
        |m, be, x, _, y| m.forward(be, x, None, None, y),
        |m, be, x, _, y, dy, dx, _| m.backward(be, x, None, None, y, dy, dx, false, None),
    );
    check(own, 7, 12);
}

#[test]
fn gradcheck_transition_and_outer_product_mean() {
    let tr = module_case(
        |b| Transition::new(b, "t", 6, 4, 2),
        24,
        24,
        None,
        |m, be, x, _, y| m.forward(be, x, y),
        |m, be, x, _, y, dy, dx, _| m.backward(be, x, y, dy, dx),
    );
    check(tr, 8, 12);
    let (s, r, cm, c, cz) = (3, 4, 5, 2, 3);
    let opm = module_case(
        |b| OuterProductMean::new(b, "opm", s, r, cm, c, cz),
        s * r * cm,
        r * r * cz,
        None,
        |m, be, x, _, y| m.forward(be, x, None, y),
        |m, be, x, _, y, dy, dx, _| m.backward(be, x, None, y, dy, dx),
    );
    check(opm, 9, 12);
    // Masked: residue 3 is padding in every row, residue 1 in row 0.
    let msa: Vec<f32> = (0..s * r)
        .map(|k| if k % r == 3 || k == 1 { 0.0 } else { 1.0 })
        .collect();
    let norm = crate::layers::opm_inv_norm(&msa, s, r);
    assert!((norm[0] - 1.0 / 3.001).abs() < 1e-6 && (norm[1] - 1.0 / 2.001).abs() < 1e-6);
    assert!((norm[3] - 1000.0).abs() < 1e-3);
    let masked = module_case(
        |b| {
            let mask = OpmMask {
                msa: b.stat("msa_mask", s * r),
                inv_norm: b.stat("inv_norm", r * r),
            };
            (OuterProductMean::new(b, "opm", s, r, cm, c, cz), mask)
        },
        s * r * cm,
        r * r * cz,
        None,
        move |(m, mk), be, x, _, y| {
            be.write(mk.msa, &msa)?;
            be.write(mk.inv_norm, &norm)?;
            m.forward(be, x, Some(*mk), y)
        },
        |(m, mk), be, x, _, y, dy, dx, _| m.backward(be, x, Some(*mk), y, dy, dx),
    );
    check(masked, 16, 12);
}

#[test]
fn gradcheck_triangle_multiplication_both_directions() {
    for (k, dir) in [TriangleDirection::Outgoing, TriangleDirection::Incoming]
        .into_iter()
        .enumerate()
    {
        let (n, cz, c) = (4, 3, 2);
        let case = module_case(
            |b| TriangleMultiplication::new(b, "tm", dir, n, cz, c),
            n * n * cz,
            n * n * cz,
            None,
            |m, be, x, _, y| m.forward(be, x, None, y),
            |m, be, x, _, _, dy, dx, _| m.backward(be, x, None, dy, dx),
        );
        check(case, 10 + k as u64, 12);
        // Masked: pairs touching residue 2 are padding.
        let mask: Vec<f32> = (0..n * n)
            .map(|k| if k / n == 2 || k % n == 2 { 0.0 } else { 1.0 })
            .collect();
        let masked = module_case(
            |b| {
                let mk = b.stat("pair_mask", n * n);
                (TriangleMultiplication::new(b, "tm", dir, n, cz, c), mk)
            },
            n * n * cz,
            n * n * cz,
            None,
            move |(m, mk), be, x, _, y| {
                be.write(*mk, &mask)?;
                m.forward(be, x, Some(*mk), y)
            },
            |(m, mk), be, x, _, _, dy, dx, _| m.backward(be, x, Some(*mk), dy, dx),
        );
        check(masked, 20 + k as u64, 12);
    }
}

#[test]
fn gradcheck_global_column_attention() {
    let (r, s, c) = (3, 4, 5);
    let mut case = module_case(
        |b| GlobalColumnAttention::new(b, "gca", r, s, c, 2, 3),
        r * s * c,
        r * s * c,
        None,
        |m, be, x, _, y| m.forward(be, x, y),
        |m, be, x, _, y, dy, dx, _| m.backward(be, x, y, dy, dx),
    );
    // The "ones" constant is not an input: keep it at 1 by filling inside forward.
    let ones = (0..case.be.tensor_count())
        .map(TensorId)
        .find(|&t| case.be.tensor_name(t).ends_with(".ones"))
        .unwrap();
    let fwd = std::mem::replace(&mut case.fwd, Box::new(|_| Ok(())));
    case.fwd = Box::new(move |be| {
        be.fill(ones, 1.0)?;
        fwd(be)
    });
    check(case, 12, 12);
}

/// A tiny block as a gradient-check case; with `masked`, the last residue is
/// padding (masked in the MSA and in its pair row and column, so one triangle
/// attention row is fully masked) and one MSA row has a second padded residue.
fn block_case(global: bool, masked: bool) -> Case {
    let cfg = BlockConfig::tiny(global);
    let mut be = Be::new();
    let mut table = ParamTable::default();
    let mut block = EvoformerBlock::new(&mut be, &mut table, "blk", &cfg).unwrap();
    block.dropout_seed = Some(42);
    be.materialize().unwrap();
    block.init_constants(&mut be).unwrap();
    if masked {
        let (s, r) = (cfg.n_seq, cfg.n_res);
        let res = |j: usize| if j + 1 < r { 1.0 } else { 0.0 };
        let msa: Vec<f32> = (0..s * r)
            .map(|k| if k == r + r - 2 { 0.0 } else { res(k % r) })
            .collect();
        let pair: Vec<f32> = (0..r * r).map(|k| res(k / r) * res(k % r)).collect();
        block.set_masks(&mut be, &msa, &pair).unwrap();
    }
    let mut inputs = params_as_inputs(&table);
    inputs.push((block.m_in, block.d_m));
    inputs.push((block.z_in, block.d_z));
    let outputs = vec![(block.m_out, block.d_m), (block.z_out, block.d_z)];
    let block = std::rc::Rc::new(block);
    let b2 = block.clone();
    Case {
        be,
        inputs,
        outputs,
        fwd: Box::new(move |be| block.forward(be)),
        bwd: Box::new(move |be| b2.backward(be)),
    }
}

#[test]
fn gradcheck_evoformer_block() {
    let mut case = block_case(false, false);
    // Gradient seeds share tensors with the input gradients: the harness zeroes
    // input gradients first and then writes seeds, which is what we need, but
    // parameters named "ones" must stay constant (none in this block).
    case.inputs.retain(|_| true);
    check(case, 13, 4);
}

#[test]
fn gradcheck_evoformer_block_with_masks() {
    check(block_case(false, true), 15, 4);
}

#[test]
fn gradcheck_extra_msa_block() {
    let mut case = block_case(true, false);
    let ones = (0..case.be.tensor_count())
        .map(TensorId)
        .find(|&t| case.be.tensor_name(t).ends_with(".ones"))
        .unwrap();
    let fwd = std::mem::replace(&mut case.fwd, Box::new(|_| Ok(())));
    case.fwd = Box::new(move |be| {
        be.fill(ones, 1.0)?;
        fwd(be)
    });
    check(case, 14, 4);
}

/// How sensitive the block's gradients are to small input changes: the CPU f32
/// block run twice, the second time on inputs and weights with 2^-9 relative
/// noise (one bf16 rounding). The GPU comparison cannot be tighter than this.
#[test]
fn block_gradient_sensitivity_to_bf16_sized_input_noise() {
    use crate::backend::cpu::CpuBackend;
    let cfg = BlockConfig {
        n_seq: 5,
        n_res: 12,
        c_m: 40,
        c_z: 24,
        msa_heads: 2,
        msa_head_dim: 8,
        global_column: false,
        opm_dim: 6,
        tri_mul_dim: 12,
        tri_heads: 3,
        tri_head_dim: 16,
        transition_factor: 2,
        msa_dropout: 0.15,
        pair_dropout: 0.25,
    };
    let run = |noise: f32| -> (Vec<f32>, Vec<f32>) {
        let mut be = CpuBackend::<f32>::new();
        let mut table = ParamTable::default();
        let mut block = EvoformerBlock::new(&mut be, &mut table, "blk", &cfg).unwrap();
        block.dropout_seed = Some(3);
        be.materialize().unwrap();
        block.init_constants(&mut be).unwrap();
        table.init(&mut be, 3, true).unwrap();
        let mut r = rng(3);
        let mut noisy = rng(99);
        let mut jitter =
            |be: &mut CpuBackend<f32>, t: TensorId, fresh: Option<&mut rand_chacha::ChaCha8Rng>| {
                let mut v = match fresh {
                    Some(r) => (0..be.len(t))
                        .map(|_| r.random_range(-1.0f32..1.0))
                        .collect(),
                    None => be.read(t).unwrap(),
                };
                for x in &mut v {
                    *x *= 1.0 + noise * noisy.random_range(-1.0f32..1.0);
                }
                be.write(t, &v).unwrap();
            };
        for t in [block.m_in, block.z_in, block.d_m, block.d_z] {
            jitter(&mut be, t, Some(&mut r));
        }
        for e in &table.entries {
            jitter(&mut be, e.param.w, None);
        }
        block.forward(&mut be).unwrap();
        block.backward(&mut be).unwrap();
        let out: Vec<f32> = [block.m_out, block.z_out]
            .iter()
            .flat_map(|&t| be.read(t).unwrap())
            .collect();
        let grads: Vec<f32> = [block.d_m, block.d_z]
            .iter()
            .flat_map(|&t| be.read(t).unwrap())
            .collect();
        (out, grads)
    };
    let rel = |a: &[f32], b: &[f32]| {
        let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    let (o0, g0) = run(0.0);
    let (o1, g1) = run(1.0 / 512.0);
    let (eo, eg) = (rel(&o1, &o0), rel(&g1, &g0));
    println!("bf16-sized input noise moves outputs by {eo:.2e} and input gradients by {eg:.2e}");
    // Gradients are far worse conditioned than outputs (ReLU masks and softmax
    // saturation flip with the noise): this is the floor for any bf16 comparison.
    // The ratio depends on the dropout masks drawn (2.9x to over 3x seen).
    assert!(
        eo > 0.0 && eg > 2.0 * eo,
        "outputs {eo:.2e}, gradients {eg:.2e}"
    );
}

/// Template pointwise attention (Alg. 17): every parameter, the pair input and
/// the template input, two heads over three templates.
#[test]
fn gradcheck_template_pointwise_attention() {
    use crate::template::{TemplateAttnShape, TemplatePointwiseAttention};
    let s = TemplateAttnShape {
        pairs: 4,
        n_templ: 3,
        c_z: 5,
        c_t: 4,
        heads: 2,
        head_dim: 3,
    };
    let case = module_case(
        |b| TemplatePointwiseAttention::new(b, "tpa", s),
        s.pairs * s.c_z,
        s.pairs * s.c_z,
        Some(s.n_templ * s.pairs * s.c_t),
        |m, be, z, t, y| m.forward(be, z, t.expect("templates"), y),
        |m, be, z, t, y, dy, dz, dt| {
            m.backward(
                be,
                z,
                t.expect("templates"),
                y,
                dy,
                dz,
                false,
                dt.expect("dt"),
            )
        },
    );
    check(case, 17, 12);
}
