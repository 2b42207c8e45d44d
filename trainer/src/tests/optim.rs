//! The optimizer against direct formulas: first-step Adam moves each weight by
//! lr·g/(|g| + ε), clipping scales the moments, and several steps match an
//! independent scalar f64 implementation.

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, Class};
use crate::layers::{Builder, Init, ParamTable};
use crate::optim::{Optimizer, OptimizerConfig};

/// Two parameters (shapes [2, 3] and [4]) on an f64 CPU backend.
fn setup(cfg: OptimizerConfig) -> (CpuBackend<f64>, ParamTable, Optimizer) {
    let mut be = CpuBackend::<f64>::new();
    let mut table = ParamTable::default();
    {
        let mut b = Builder::new(&mut be, &mut table);
        b.param("a", &[2, 3], Init::FanIn(3));
        b.param("b", &[4], Init::Zeros);
    }
    let opt = Optimizer::new(&mut be, &table, cfg).unwrap();
    be.materialize().unwrap();
    table.init(&mut be, 7, true).unwrap();
    (be, table, opt)
}

fn grads(k: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (crate::backend::mix64(k ^ ((i as u64) << 20)) >> 40) as f32 / 8_388_608.0 - 1.0)
        .collect()
}

fn write_grads(be: &mut CpuBackend<f64>, table: &ParamTable, g: &[f32]) {
    let mut off = 0;
    for e in &table.entries {
        let n: usize = e.shape.iter().product();
        be.write(e.param.g, &g[off..off + n]).unwrap();
        off += n;
    }
}

fn weights(be: &mut CpuBackend<f64>, table: &ParamTable) -> Vec<f64> {
    let mut w = Vec::new();
    for e in &table.entries {
        w.extend(be.get(e.param.w).unwrap().iter().copied());
    }
    w
}

#[test]
fn first_step_moves_each_weight_by_lr_times_sign_and_updates_the_average() {
    let cfg = OptimizerConfig {
        clip_norm: 0.0,
        ..OptimizerConfig::af2()
    };
    let (mut be, table, mut opt) = setup(cfg);
    opt.init(&mut be, &table).unwrap();
    let w0 = weights(&mut be, &table);
    let g = grads(1, w0.len());
    write_grads(&mut be, &table, &g);
    opt.step(&mut be).unwrap();
    let w1 = weights(&mut be, &table);
    let ema = be.get(opt.state.ema).unwrap().to_vec();
    let (lr, eps, d) = (cfg.lr as f64, cfg.eps as f64, cfg.ema_decay as f64);
    for i in 0..w0.len() {
        let gi = g[i] as f64;
        let want = w0[i] - lr * gi / (gi.abs() + eps);
        assert!(
            (w1[i] - want).abs() < 1e-9,
            "weight {i}: {} vs {want}",
            w1[i]
        );
        let want_ema = d * w0[i] + (1.0 - d) * want;
        assert!((ema[i] - want_ema).abs() < 1e-9, "ema {i}");
    }
    let norm: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((opt.last_grad_norm(&mut be).unwrap() as f64 - norm).abs() < 1e-6);
}

#[test]
fn clipping_scales_gradients_to_the_global_norm() {
    let cfg = OptimizerConfig::af2();
    let (mut be, table, mut opt) = setup(cfg);
    opt.init(&mut be, &table).unwrap();
    let n = table.numel();
    let g = grads(2, n);
    let norm: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!(norm > cfg.clip_norm as f64 * 2.0);
    write_grads(&mut be, &table, &g);
    opt.step(&mut be).unwrap();
    let (m, v) = (
        be.get(opt.state.m).unwrap().to_vec(),
        be.get(opt.state.v).unwrap().to_vec(),
    );
    let clip = cfg.clip_norm as f64 / norm;
    for i in 0..n {
        let gc = g[i] as f64 * clip;
        assert!(
            (m[i] - (1.0 - cfg.beta1 as f64) * gc).abs() < 1e-12,
            "m {i}"
        );
        assert!(
            (v[i] - (1.0 - cfg.beta2 as f64) * gc * gc).abs() < 1e-12,
            "v {i}"
        );
    }
    // A gradient below the threshold is left alone.
    let small: Vec<f32> = g.iter().map(|&x| x * 1e-3).collect();
    write_grads(&mut be, &table, &small);
    be.fill(opt.state.m, 0.0).unwrap();
    opt.step(&mut be).unwrap();
    let m = be.get(opt.state.m).unwrap().to_vec();
    for i in 0..n {
        let want = (1.0 - cfg.beta1 as f64) * small[i] as f64;
        assert!((m[i] - want).abs() < 1e-12, "unclipped m {i}");
    }
}

/// Five steps against a scalar f64 Adam with bias correction, clipping and EMA.
#[test]
fn five_steps_match_a_scalar_reference() {
    let cfg = OptimizerConfig {
        clip_norm: 1.5,
        lr: 3e-2,
        ..OptimizerConfig::af2()
    };
    let (mut be, table, mut opt) = setup(cfg);
    opt.init(&mut be, &table).unwrap();
    let n = table.numel();
    let mut p = weights(&mut be, &table);
    let (mut m, mut v, mut ema) = (vec![0.0f64; n], vec![0.0f64; n], p.clone());
    let (b1, b2, eps, lr, d) = (
        cfg.beta1 as f64,
        cfg.beta2 as f64,
        cfg.eps as f64,
        cfg.lr as f64,
        cfg.ema_decay as f64,
    );
    for t in 1..=5 {
        let g = grads(10 + t as u64, n);
        write_grads(&mut be, &table, &g);
        opt.step(&mut be).unwrap();
        let norm: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let clip = if norm > cfg.clip_norm as f64 {
            cfg.clip_norm as f64 / norm
        } else {
            1.0
        };
        for i in 0..n {
            let gi = g[i] as f64 * clip;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mh = m[i] / (1.0 - b1.powi(t));
            let vh = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * mh / (vh.sqrt() + eps);
            ema[i] = d * ema[i] + (1.0 - d) * p[i];
        }
    }
    let got = weights(&mut be, &table);
    let got_master = be.get(opt.state.master).unwrap().to_vec();
    let got_ema = be.get(opt.state.ema).unwrap().to_vec();
    for i in 0..n {
        // Bias corrections are passed as f32: relative 1e-7 of an lr-sized step.
        assert!(
            (got[i] - p[i]).abs() < 1e-8,
            "weight {i}: {} vs {}",
            got[i],
            p[i]
        );
        assert_eq!(got[i], got_master[i]);
        assert!((got_ema[i] - ema[i]).abs() < 1e-8, "ema {i}");
    }
    assert_eq!(opt.steps, 5);
}

#[test]
fn bad_settings_and_foreign_weights_are_typed_errors() {
    let mut be = CpuBackend::<f32>::new();
    let table = ParamTable::default();
    let bad = OptimizerConfig {
        beta2: 1.0,
        ..OptimizerConfig::af2()
    };
    let e = Optimizer::new(&mut be, &table, bad).err().unwrap();
    assert!(e.to_string().contains("beta2"), "{e}");
    // A Weight tensor outside the table: init refuses.
    be.declare("stray", 3, Class::Weight);
    let mut opt = Optimizer::new(&mut be, &table, OptimizerConfig::af2()).unwrap();
    be.materialize().unwrap();
    let e = opt.init(&mut be, &table).err().unwrap();
    assert!(e.to_string().contains("weight block holds 3"), "{e}");
}

/// The flat length rounds every parameter up to the backend's alignment (the
/// GPU's weight and gradient blocks share one padded element layout).
#[test]
fn flat_length_rounds_each_parameter_to_the_alignment() {
    let (_, table, _) = setup(OptimizerConfig::af2());
    assert_eq!(crate::optim::flat_len(&table, 1), 10);
    assert_eq!(crate::optim::flat_len(&table, 4), 8 + 4);
    assert_eq!(crate::optim::flat_len(&table, 128), 256);
}
