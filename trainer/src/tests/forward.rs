//! Forward passes against direct formulas on small hand-made inputs.

use crate::backend::cpu::CpuBackend;
use crate::backend::{AttnShape, Backend, Class, Dropout, Gemm, MatRef, SharedAxis, View};

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
    }
}

#[test]
fn gemm_matches_hand_computed_products_with_transposes_and_batches() {
    let mut be = CpuBackend::<f32>::new();
    let a = be.declare("a", 8, Class::Activation);
    let b = be.declare("b", 8, Class::Activation);
    let c = be.declare("c", 8, Class::Activation);
    be.materialize().unwrap();
    // Two batches of 2x2: A0 = [1 2; 3 4], A1 = [5 6; 7 8]; B = identity-ish.
    be.write(a, &[1., 2., 3., 4., 5., 6., 7., 8.]).unwrap();
    be.write(b, &[1., 1., 0., 1., 2., 0., 0., 2.]).unwrap();
    be.fill(c, 1.0).unwrap();
    let g = Gemm {
        m: 2,
        n: 2,
        k: 2,
        batch: 2,
        trans_a: false,
        trans_b: false,
        alpha: 1.0,
        beta: 1.0,
        a: MatRef::new(a, 2).batched(4),
        b: MatRef::new(b, 2).batched(4),
        c: MatRef::new(c, 2).batched(4),
    };
    be.gemm(&g).unwrap();
    // A0 @ [1 1; 0 1] = [1 3; 3 7], +1. A1 @ 2I = [10 12; 14 16], +1.
    close(
        &be.read(c).unwrap(),
        &[2., 4., 4., 8., 11., 13., 15., 17.],
        0.0,
    );
    be.gemm(&Gemm {
        trans_a: true,
        trans_b: true,
        beta: 0.0,
        batch: 1,
        ..g
    })
    .unwrap();
    // A0^T @ B0^T = [1 3; 2 4] @ [1 0; 1 1] = [4 3; 6 4].
    close(&be.read(c).unwrap()[..4], &[4., 3., 6., 4.], 0.0);
}

#[test]
fn layer_norm_matches_formula() {
    let mut be = CpuBackend::<f32>::new();
    let x = be.declare("x", 3, Class::Activation);
    let g = be.declare("g", 3, Class::Weight);
    let b = be.declare("b", 3, Class::Weight);
    let y = be.declare("y", 3, Class::Activation);
    let (mu, rs) = (
        be.declare("mu", 1, Class::Stat),
        be.declare("rs", 1, Class::Stat),
    );
    be.materialize().unwrap();
    be.write(x, &[1., 2., 3.]).unwrap();
    be.write(g, &[1., 2., 0.5]).unwrap();
    be.write(b, &[0., 1., -1.]).unwrap();
    be.layer_norm_fwd(1, 3, x, g, b, y, mu, rs).unwrap();
    let r = 1.0 / (2.0f32 / 3.0 + 1e-5).sqrt();
    close(&be.read(y).unwrap(), &[-r, 1.0, 0.5 * r - 1.0], 1e-6);
    close(&be.read(mu).unwrap(), &[2.0], 0.0);
}

#[test]
fn attention_matches_formula_with_bias_and_gate() {
    // One batch, one head, width 1, two positions.
    let s = AttnShape {
        batch: 1,
        len: 2,
        heads: 1,
        head_dim: 1,
    };
    let mut be = CpuBackend::<f32>::new();
    let p = be.declare("qkvg", 8, Class::Activation);
    let bias = be.declare("bias", 4, Class::Activation);
    let attn = be.declare("attn", 2, Class::Activation);
    let out = be.declare("out", 2, Class::Activation);
    let lse = be.declare("lse", 2, Class::Stat);
    be.materialize().unwrap();
    // rows: [q k v g] per position.
    be.write(p, &[1.0, 2.0, 10.0, 0.0, -1.0, 0.5, 20.0, 100.0])
        .unwrap();
    be.write(bias, &[0.0, 1.0, -1.0, 0.0]).unwrap();
    be.attention_fwd(s, p, Some(bias), None, attn, out, lse)
        .unwrap();
    // Query 0: logits [1*2 + 0, 1*0.5 + 1] = [2, 1.5]; query 1: [-2 - 1, -0.5 + 0] = [-3, -0.5].
    let sm = |a: f32, b: f32| {
        let (ea, eb) = (a.exp(), b.exp());
        (ea / (ea + eb), eb / (ea + eb), (ea + eb).ln())
    };
    let (p0, q0, l0) = sm(2.0, 1.5);
    let (p1, q1, l1) = sm(-3.0, -0.5);
    let a0 = p0 * 10.0 + q0 * 20.0;
    let a1 = p1 * 10.0 + q1 * 20.0;
    close(&be.read(attn).unwrap(), &[a0, a1], 1e-4);
    close(
        &be.read(out).unwrap(),
        &[a0 * 0.5, a1 / (1.0 + (-100.0f32).exp())],
        1e-4,
    );
    close(&be.read(lse).unwrap(), &[l0, l1], 1e-5);
}

/// A masked key drops out of the softmax exactly (as a bias of −∞ would); a query
/// whose keys are all masked yields zeros, lse 0 and zero gradients, never NaN.
#[test]
fn attention_key_mask_drops_keys_and_zeroes_fully_masked_rows() {
    // Two batch entries of three positions, one head of width 1.
    let s = AttnShape {
        batch: 2,
        len: 3,
        heads: 1,
        head_dim: 1,
    };
    let mut be = CpuBackend::<f32>::new();
    let p = be.declare("qkvg", 24, Class::Activation);
    let mask = be.declare("mask", 6, Class::Stat);
    let attn = be.declare("attn", 6, Class::Activation);
    let out = be.declare("out", 6, Class::Activation);
    let lse = be.declare("lse", 6, Class::Stat);
    let dout = be.declare("dout", 6, Class::Activation);
    let dp = be.declare("dqkvg", 24, Class::Activation);
    be.materialize().unwrap();
    // rows [q k v g]; the gate is large so out = attn.
    let rows: [[f32; 4]; 6] = [
        [1.0, 2.0, 10.0, 50.0],
        [0.5, -1.0, 20.0, 50.0],
        [-1.0, 3.0, 1000.0, 50.0],
        [1.0, 1.0, 1.0, 50.0],
        [2.0, 2.0, 2.0, 50.0],
        [3.0, 3.0, 3.0, 50.0],
    ];
    be.write(p, rows.as_flattened()).unwrap();
    // Batch 0: key 2 masked; batch 1: every key masked.
    be.write(mask, &[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    be.attention_fwd(s, p, None, Some(mask), attn, out, lse)
        .unwrap();
    let a = be.read(attn).unwrap();
    let (mut want, mut want_lse) = (Vec::new(), Vec::new());
    for r in &rows[..3] {
        // Logits over keys 0 and 1 only (key 2's value 1000 must not leak in).
        let (x0, x1) = (r[0] * 2.0, -r[0]);
        let z = x0.exp() + x1.exp();
        want.push((x0.exp() * 10.0 + x1.exp() * 20.0) / z);
        want_lse.push(z.ln());
    }
    want.extend([0.0; 3]);
    want_lse.extend([0.0; 3]);
    close(&a, &want, 1e-4);
    close(&be.read(lse).unwrap(), &want_lse, 1e-5);
    be.fill(dout, 1.0).unwrap();
    be.attention_bwd(s, p, None, Some(mask), attn, lse, dout, dp, None)
        .unwrap();
    let g = be.read(dp).unwrap();
    assert!(g.iter().all(|x| x.is_finite()));
    // Masked key 2 of batch 0 gets no k or v gradient; batch 1 gets none at all.
    assert_eq!(&g[2 * 4 + 1..2 * 4 + 3], &[0.0, 0.0]);
    assert!(g[12..].iter().all(|&x| x == 0.0), "{:?}", &g[12..]);
    // The value gradient of a kept key is the sum of its attention weights.
    let w1: f32 = rows[..3]
        .iter()
        .map(|r| {
            let (x0, x1) = (r[0] * 2.0, -r[0]);
            x1.exp() / (x0.exp() + x1.exp())
        })
        .sum();
    close(&[g[4 + 2]], &[w1], 1e-4);
}

#[test]
fn transpose_softmax_sigmoid_mul_match_formulas() {
    let mut be = CpuBackend::<f32>::new();
    let x = be.declare("x", 6, Class::Activation);
    let y = be.declare("y", 6, Class::Activation);
    let s = be.declare("s", 6, Class::Activation);
    be.materialize().unwrap();
    be.write(x, &[0., 1., 2., 3., 4., 5.]).unwrap();
    be.transpose([1, 2, 3, 1], x, y, false).unwrap();
    close(&be.read(y).unwrap(), &[0., 3., 1., 4., 2., 5.], 0.0);
    be.softmax_fwd(2, 3, x, s).unwrap();
    let e = [1.0f32, 1f32.exp(), 2f32.exp()];
    let z: f32 = e.iter().sum();
    close(
        &be.read(s).unwrap()[..3],
        &[e[0] / z, e[1] / z, e[2] / z],
        1e-6,
    );
    close(
        &be.read(s).unwrap()[3..],
        &[e[0] / z, e[1] / z, e[2] / z],
        1e-6,
    );
    // a broadcast over 2 rows: out[r, c] = a[0, c] * sigmoid(x[r, c]).
    be.sigmoid_mul_fwd(
        2,
        3,
        View {
            t: x,
            off: 3,
            ld: 3,
            row_div: 2,
        },
        View::dense(x, 3),
        View::dense(s, 3),
    )
    .unwrap();
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let want: Vec<f32> = (0..6).map(|i| (3 + i % 3) as f32 * sig(i as f32)).collect();
    close(&be.read(s).unwrap(), &want, 1e-6);
}

#[test]
fn dropout_masks_are_shared_along_the_named_axis_and_keep_the_expected_fraction() {
    const STEP: u64 = 7;
    let (d0, d1, c) = (4, 50, 40);
    let d = Dropout {
        p: 0.25,
        seed: 99,
        shape: [d0, d1, c],
        shared: SharedAxis::Axis0,
    };
    let n = d0 * d1 * c;
    let kept = (0..n).filter(|&i| d.factor(STEP, i) > 0.0).count() as f64 / n as f64;
    assert!((kept - 0.75).abs() < 0.03, "kept fraction {kept}");
    for i in 0..d1 * c {
        for k in 1..d0 {
            assert_eq!(d.factor(STEP, i), d.factor(STEP, k * d1 * c + i));
        }
    }
    let col = Dropout {
        shared: SharedAxis::Axis1,
        ..d
    };
    for i0 in 0..d0 {
        for i1 in 1..d1 {
            assert_eq!(
                col.factor(STEP, i0 * d1 * c + 3),
                col.factor(STEP, (i0 * d1 + i1) * c + 3)
            );
        }
    }
    assert!(d.factor(STEP, 0) == 0.0 || d.factor(STEP, 0) == 1.0 / 0.75);
    let other = Dropout { seed: 100, ..d };
    assert!(
        (0..n).any(|i| other.factor(STEP, i) != d.factor(STEP, i)),
        "site seeds must change the mask"
    );
    assert!(
        (0..n).any(|i| d.factor(STEP + 1, i) != d.factor(STEP, i)),
        "step seeds must change the mask"
    );
}

#[test]
fn shape_errors_name_the_tensor() {
    let mut be = CpuBackend::<f32>::new();
    let x = be.declare("too_short", 3, Class::Activation);
    let y = be.declare("y", 6, Class::Activation);
    be.materialize().unwrap();
    let err = be.softmax_fwd(2, 3, x, y).unwrap_err().to_string();
    assert!(
        err.contains("too_short") && err.contains("softmax_fwd"),
        "{err}"
    );
    let late = be.declare("late", 2, Class::Activation);
    assert!(be.read(late).unwrap_err().to_string().contains("late"));
}

/// Without a GPU (or without the CUDA libraries), opening the CUDA backend is an
/// error, never a panic. Skips itself where a GPU is present.
#[test]
fn cuda_backend_without_gpu_is_an_error() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        println!("a GPU is present: nothing to check");
        return;
    }
    match crate::backend::cuda::CudaBackend::new(0) {
        Ok(_) => panic!("opened a GPU on a machine without /dev/nvidia0"),
        Err(e) => assert!(e.to_string().contains("CUDA"), "{e}"),
    }
}

mod properties {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::{Backend, Class, Gemm, MatRef};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Swapping the middle axes twice is the identity, for any shape.
        #[test]
        fn transpose_twice_is_identity(a in 1usize..4, b in 1usize..40, c in 1usize..40, d in 1usize..5, seed in 0u64..1000) {
            let n = a * b * c * d;
            let mut be = CpuBackend::<f32>::new();
            let x = be.declare("x", n, Class::Activation);
            let y = be.declare("y", n, Class::Activation);
            let z = be.declare("z", n, Class::Activation);
            be.materialize().unwrap();
            let v: Vec<f32> = (0..n).map(|i| (crate::backend::mix64(seed ^ i as u64) >> 40) as f32).collect();
            be.write(x, &v).unwrap();
            be.transpose([a, b, c, d], x, y, false).unwrap();
            be.transpose([a, c, b, d], y, z, false).unwrap();
            prop_assert_eq!(be.read(z).unwrap(), v);
        }

        /// A GEMM with transpose flags equals the plain GEMM on explicitly transposed operands.
        #[test]
        fn gemm_transpose_flags_match_explicit_transposes(m in 1usize..9, n in 1usize..9, k in 1usize..9, batch in 1usize..3,
            ta in any::<bool>(), tb in any::<bool>(), seed in 0u64..1000) {
            let mut be = CpuBackend::<f64>::new();
            let a = be.declare("a", batch * m * k, Class::Activation);
            let b = be.declare("b", batch * k * n, Class::Activation);
            let at = be.declare("at", batch * m * k, Class::Activation);
            let bt = be.declare("bt", batch * k * n, Class::Activation);
            let c1 = be.declare("c1", batch * m * n, Class::Activation);
            let c2 = be.declare("c2", batch * m * n, Class::Activation);
            be.materialize().unwrap();
            let rnd = |len: usize, s: u64| -> Vec<f32> { (0..len).map(|i| (crate::backend::mix64(s ^ (i as u64) << 8) >> 40) as f32 / 8_388_608.0 - 1.0).collect() };
            be.write(a, &rnd(batch * m * k, seed)).unwrap();
            be.write(b, &rnd(batch * k * n, seed + 1)).unwrap();
            // Stored layouts: A is [m, k] (or [k, m] with ta), B is [k, n] (or [n, k] with tb).
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            be.transpose([batch, ar, ac, 1], a, at, false).unwrap();
            be.transpose([batch, br, bc, 1], b, bt, false).unwrap();
            let g = Gemm { m, n, k, batch, trans_a: ta, trans_b: tb, alpha: 1.5, beta: 0.0,
                a: MatRef::new(a, ac).batched(m * k), b: MatRef::new(b, bc).batched(k * n), c: MatRef::new(c1, n).batched(m * n) };
            be.gemm(&g).unwrap();
            let g2 = Gemm { trans_a: !ta, trans_b: !tb, a: MatRef::new(at, ar).batched(m * k), b: MatRef::new(bt, br).batched(k * n),
                c: MatRef::new(c2, n).batched(m * n), ..g };
            be.gemm(&g2).unwrap();
            let (x, y) = (be.get(c1).unwrap().to_vec(), be.get(c2).unwrap().to_vec());
            for (p, q) in x.iter().zip(&y) {
                prop_assert!((p - q).abs() < 1e-9, "{} vs {}", p, q);
            }
        }
    }
}

/// DAP readiness: row-wise ops applied to two row ranges (views) of a tensor give
/// exactly the full op's result, so a rank can run them on its shard unchanged.
#[test]
fn row_wise_ops_on_row_range_views_match_the_whole_tensor() {
    let (rows, cols) = (6, 5);
    let s = AttnShape {
        batch: 4,
        len: 3,
        heads: 2,
        head_dim: 2,
    };
    let mut be = CpuBackend::<f32>::new();
    let x = be.declare("x", rows * cols, Class::Activation);
    let g = be.declare("g", cols, Class::Weight);
    let b = be.declare("b", cols, Class::Weight);
    let y = be.declare("y", rows * cols, Class::Activation);
    let (mu, rs) = (
        be.declare("mu", rows, Class::Stat),
        be.declare("rs", rows, Class::Stat),
    );
    let p = be.declare("qkvg", s.rows() * 4 * s.width(), Class::Activation);
    let (att, out, lse) = (
        be.declare("attn", s.rows() * s.width(), Class::Activation),
        be.declare("out", s.rows() * s.width(), Class::Activation),
        be.declare("lse", s.batch * s.heads * s.len, Class::Stat),
    );
    be.materialize().unwrap();
    let fill = |be: &mut CpuBackend<f32>, t, k: u64| {
        let v: Vec<f32> = (0..be.len(t))
            .map(|i| {
                (crate::backend::mix64(k ^ ((i as u64) << 16)) >> 40) as f32 / 8_388_608.0 - 1.0
            })
            .collect();
        be.write(t, &v).unwrap();
    };
    for (k, t) in [x, g, b, p].into_iter().enumerate() {
        fill(&mut be, t, k as u64);
    }
    be.layer_norm_fwd(rows, cols, x, g, b, y, mu, rs).unwrap();
    be.attention_fwd(s, p, None, None, att, out, lse).unwrap();
    let (full_y, full_out) = (be.read(y).unwrap(), be.read(out).unwrap());
    be.fill(y, 0.0).unwrap();
    be.fill(out, 0.0).unwrap();
    let half = AttnShape { batch: 2, ..s };
    for r in 0..2 {
        let v = |be: &mut CpuBackend<f32>, t, per: usize| be.view(t, r * per, per).unwrap();
        let (xr, yr, mr, sr) = (
            v(&mut be, x, 3 * cols),
            v(&mut be, y, 3 * cols),
            v(&mut be, mu, 3),
            v(&mut be, rs, 3),
        );
        be.layer_norm_fwd(3, cols, xr, g, b, yr, mr, sr).unwrap();
        let (pr, ar, or) = (
            v(&mut be, p, half.rows() * 4 * half.width()),
            v(&mut be, att, half.rows() * half.width()),
            v(&mut be, out, half.rows() * half.width()),
        );
        let lr = v(&mut be, lse, half.batch * half.heads * half.len);
        be.attention_fwd(half, pr, None, None, ar, or, lr).unwrap();
    }
    assert_eq!(be.read(y).unwrap(), full_y);
    assert_eq!(be.read(out).unwrap(), full_out);
}
