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
    be.attention_fwd(s, p, Some(bias), attn, out, lse).unwrap();
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
    let (d0, d1, c) = (4, 50, 40);
    let d = Dropout {
        p: 0.25,
        seed: 99,
        shape: [d0, d1, c],
        shared: SharedAxis::Axis0,
    };
    let n = d0 * d1 * c;
    let kept = (0..n).filter(|&i| d.factor(i) > 0.0).count() as f64 / n as f64;
    assert!((kept - 0.75).abs() < 0.03, "kept fraction {kept}");
    for i in 0..d1 * c {
        for k in 1..d0 {
            assert_eq!(d.factor(i), d.factor(k * d1 * c + i));
        }
    }
    let col = Dropout {
        shared: SharedAxis::Axis1,
        ..d
    };
    for i0 in 0..d0 {
        for i1 in 1..d1 {
            assert_eq!(
                col.factor(i0 * d1 * c + 3),
                col.factor((i0 * d1 + i1) * c + 3)
            );
        }
    }
    assert!(d.factor(0) == 0.0 || d.factor(0) == 1.0 / 0.75);
    let other = Dropout { seed: 100, ..d };
    assert!(
        (0..n).any(|i| other.factor(i) != d.factor(i)),
        "seeds must change the mask"
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
