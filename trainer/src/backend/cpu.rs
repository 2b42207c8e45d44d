//! The CPU reference backend: plain loops over `Vec`s, generic over the element
//! type (`f32` is the reference; `f64` serves finite-difference gradient checks).
//!
//! Every op reads its inputs into owned vectors and writes its outputs back, so
//! inputs and outputs may be views of the same arena without aliasing trouble.
//! Clarity over speed: this is the truth the CUDA backend is compared against.

use super::{
    Activation, AdamStep, AttnShape, Backend, CLASSES, Class, Dropout, Gemm, MatRef,
    OptimizerState, TensorId, View, tensors::TensorTable,
};
use crate::error::{Result, TrainerError, ensure};
use rayon::prelude::*;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// Floating-point element type of the CPU backend.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
{
    /// Converts from f32.
    fn from_f32(x: f32) -> Self;
    /// Converts from f64.
    fn from_f64(x: f64) -> Self;
    /// Converts to f32.
    fn to_f32(self) -> f32;
    /// Converts to f64.
    fn to_f64(self) -> f64;
    /// e^self.
    fn exp(self) -> Self;
    /// Natural log.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Zero.
    fn zero() -> Self {
        Self::default()
    }
    /// One.
    fn one() -> Self {
        Self::from_f32(1.0)
    }
    /// Logistic sigmoid.
    fn sigmoid(self) -> Self {
        Self::one() / (Self::one() + (-self).exp())
    }
}

macro_rules! impl_real {
    ($t:ty) => {
        impl Real for $t {
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
        }
    };
}
impl_real!(f32);
impl_real!(f64);

/// LayerNorm epsilon, shared by every backend.
pub const LN_EPS: f32 = 1e-5;

/// CPU backend over element type `T`.
pub struct CpuBackend<T: Real = f32> {
    tensors: TensorTable,
    roots: Vec<(Class, Vec<T>)>,
    /// The step seed of dropout masks ([`Backend::set_dropout_seed`]).
    dropout_seed: u64,
}

impl<T: Real> Default for CpuBackend<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> CpuBackend<T> {
    /// An empty backend.
    pub fn new() -> Self {
        Self {
            tensors: TensorTable::default(),
            roots: Vec::new(),
            dropout_seed: 0,
        }
    }

    /// Number of tensors declared so far (ids are `0..tensor_count()`).
    pub fn tensor_count(&self) -> usize {
        self.tensors.count()
    }

    /// Borrow a tensor's elements.
    pub fn get(&self, t: TensorId) -> Result<&[T]> {
        let p = self.tensors.placement(t)?;
        Ok(&self.roots[p.arena].1[p.offset..p.offset + p.len])
    }

    fn get_mut(&mut self, t: TensorId) -> Result<&mut [T]> {
        let p = self.tensors.placement(t)?;
        Ok(&mut self.roots[p.arena].1[p.offset..p.offset + p.len])
    }

    /// Owned copy of a tensor's elements.
    fn rd(&self, t: TensorId) -> Result<Vec<T>> {
        Ok(self.get(t)?.to_vec())
    }

    /// Writes full-precision values into a tensor (for f64 gradient checks).
    pub fn write_exact(&mut self, t: TensorId, data: &[T]) -> Result<()> {
        let dst = self.get_mut(t)?;
        ensure(dst.len() == data.len(), "write", || {
            format!("{} elements into {}", data.len(), dst.len())
        })?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn check_len(&self, op: &'static str, t: TensorId, need: usize) -> Result<()> {
        self.tensors.need_len(op, t, need)
    }

    fn check_view(&self, op: &'static str, v: &View, rows: usize, cols: usize) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        self.check_len(op, v.t, v.at(rows - 1, cols - 1) + 1)
    }
}

impl<T: Real> CpuBackend<T> {
    /// The key mask of an attention as a predicate `keep(batch, key)`; every key is
    /// kept without a mask.
    fn key_keep(
        &self,
        op: &'static str,
        key_mask: Option<TensorId>,
        s: AttnShape,
    ) -> Result<impl Fn(usize, usize) -> bool + use<T>> {
        let mask = match key_mask {
            Some(m) => {
                self.check_len(op, m, s.batch * s.len)?;
                Some(self.rd(m)?)
            }
            None => None,
        };
        let l = s.len;
        Ok(move |b: usize, j: usize| mask.as_ref().is_none_or(|m| m[b * l + j] != T::zero()))
    }
}

fn gemm_extent(m: &MatRef, rows: usize, cols: usize, batch: usize) -> usize {
    m.off + (batch - 1) * m.stride + (rows - 1) * m.ld + cols
}

impl<T: Real> Backend for CpuBackend<T> {
    fn name(&self) -> String {
        format!("cpu-{}", std::any::type_name::<T>())
    }

    fn declare(&mut self, name: &str, len: usize, class: Class) -> TensorId {
        self.tensors.declare(name, len, class)
    }

    fn view(&mut self, parent: TensorId, offset: usize, len: usize) -> Result<TensorId> {
        self.tensors.view(parent, offset, len)
    }

    fn materialize(&mut self) -> Result<()> {
        for class in CLASSES {
            if let Some(total) = self.tensors.lay_out(class, self.roots.len(), 1) {
                self.roots.push((class, vec![T::zero(); total]));
            }
        }
        self.tensors.place_views();
        Ok(())
    }

    fn len(&self, t: TensorId) -> usize {
        self.tensors.len(t)
    }

    fn tensor_name(&self, t: TensorId) -> &str {
        self.tensors.name(t)
    }

    fn arena_bytes(&self) -> Vec<(Class, usize)> {
        CLASSES
            .iter()
            .map(|&c| {
                (
                    c,
                    self.roots
                        .iter()
                        .filter(|r| r.0 == c)
                        .map(|r| r.1.len() * std::mem::size_of::<T>())
                        .sum(),
                )
            })
            .collect()
    }

    fn write(&mut self, t: TensorId, data: &[f32]) -> Result<()> {
        let v: Vec<T> = data.iter().map(|&x| T::from_f32(x)).collect();
        self.write_exact(t, &v)
    }

    fn read(&mut self, t: TensorId) -> Result<Vec<f32>> {
        Ok(self.get(t)?.iter().map(|x| x.to_f32()).collect())
    }

    fn fill(&mut self, t: TensorId, value: f32) -> Result<()> {
        self.get_mut(t)?.fill(T::from_f32(value));
        Ok(())
    }

    fn fill_class(&mut self, class: Class, value: f32) -> Result<()> {
        for (c, v) in &mut self.roots {
            if *c == class {
                v.fill(T::from_f32(value));
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn gemm(&mut self, g: &Gemm) -> Result<()> {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        self.check_len("gemm(A)", g.a.t, gemm_extent(&g.a, ar, ac, g.batch))?;
        self.check_len("gemm(B)", g.b.t, gemm_extent(&g.b, br, bc, g.batch))?;
        self.check_len("gemm(C)", g.c.t, gemm_extent(&g.c, g.m, g.n, g.batch))?;
        let a = self.rd(g.a.t)?;
        let b = self.rd(g.b.t)?;
        let mut c = self.rd(g.c.t)?;
        let (alpha, beta) = (T::from_f32(g.alpha), T::from_f32(g.beta));
        let results: Vec<(usize, T)> = (0..g.batch * g.m)
            .into_par_iter()
            .flat_map_iter(|bi| {
                let (bt, i) = (bi / g.m, bi % g.m);
                let (a, b, c) = (&a, &b, &c);
                (0..g.n).map(move |j| {
                    let mut acc = T::zero();
                    for p in 0..g.k {
                        let av = if g.trans_a {
                            a[g.a.off + bt * g.a.stride + p * g.a.ld + i]
                        } else {
                            a[g.a.off + bt * g.a.stride + i * g.a.ld + p]
                        };
                        let bv = if g.trans_b {
                            b[g.b.off + bt * g.b.stride + j * g.b.ld + p]
                        } else {
                            b[g.b.off + bt * g.b.stride + p * g.b.ld + j]
                        };
                        acc += av * bv;
                    }
                    let ci = g.c.off + bt * g.c.stride + i * g.c.ld + j;
                    let old = if g.beta == 0.0 {
                        T::zero()
                    } else {
                        beta * c[ci]
                    };
                    (ci, alpha * acc + old)
                })
            })
            .collect();
        for (ci, v) in results {
            c[ci] = v;
        }
        self.write_exact(g.c.t, &c)
    }

    fn layer_norm_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        y: TensorId,
        mean: TensorId,
        rstd: TensorId,
    ) -> Result<()> {
        for (t, n) in [
            (x, rows * cols),
            (y, rows * cols),
            (gamma, cols),
            (beta, cols),
            (mean, rows),
            (rstd, rows),
        ] {
            self.check_len("layer_norm_fwd", t, n)?;
        }
        let (xv, gv, bv) = (self.rd(x)?, self.rd(gamma)?, self.rd(beta)?);
        let mut yv = self.rd(y)?;
        let (mut mv, mut rv) = (self.rd(mean)?, self.rd(rstd)?);
        let n = T::from_f64(cols as f64);
        for r in 0..rows {
            let row = &xv[r * cols..(r + 1) * cols];
            let mu = row.iter().fold(T::zero(), |s, &v| s + v) / n;
            let var = row.iter().fold(T::zero(), |s, &v| s + (v - mu) * (v - mu)) / n;
            let rs = T::one() / (var + T::from_f32(LN_EPS)).sqrt();
            for c in 0..cols {
                yv[r * cols + c] = (row[c] - mu) * rs * gv[c] + bv[c];
            }
            mv[r] = mu;
            rv[r] = rs;
        }
        self.write_exact(y, &yv)?;
        self.write_exact(mean, &mv)?;
        self.write_exact(rstd, &rv)
    }

    fn layer_norm_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        x: TensorId,
        gamma: TensorId,
        mean: TensorId,
        rstd: TensorId,
        dy: TensorId,
        dx: TensorId,
        accumulate: bool,
        dgamma: TensorId,
        dbeta: TensorId,
    ) -> Result<()> {
        for (t, n) in [
            (x, rows * cols),
            (dy, rows * cols),
            (dx, rows * cols),
            (gamma, cols),
            (dgamma, cols),
            (dbeta, cols),
            (mean, rows),
            (rstd, rows),
        ] {
            self.check_len("layer_norm_bwd", t, n)?;
        }
        let (xv, gv, mv, rv, dyv) = (
            self.rd(x)?,
            self.rd(gamma)?,
            self.rd(mean)?,
            self.rd(rstd)?,
            self.rd(dy)?,
        );
        let (mut dxv, mut dgv, mut dbv) = (self.rd(dx)?, self.rd(dgamma)?, self.rd(dbeta)?);
        let n = T::from_f64(cols as f64);
        for r in 0..rows {
            let (mut s1, mut s2) = (T::zero(), T::zero());
            for c in 0..cols {
                let i = r * cols + c;
                let xh = (xv[i] - mv[r]) * rv[r];
                let gdy = gv[c] * dyv[i];
                s1 += gdy;
                s2 += gdy * xh;
                dgv[c] += dyv[i] * xh;
                dbv[c] += dyv[i];
            }
            for c in 0..cols {
                let i = r * cols + c;
                let xh = (xv[i] - mv[r]) * rv[r];
                let v = rv[r] * (gv[c] * dyv[i] - s1 / n - xh * s2 / n);
                dxv[i] = if accumulate { dxv[i] + v } else { v };
            }
        }
        self.write_exact(dx, &dxv)?;
        self.write_exact(dgamma, &dgv)?;
        self.write_exact(dbeta, &dbv)
    }

    fn bias_act_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        bias: TensorId,
        act: Activation,
    ) -> Result<()> {
        self.check_view("bias_act_fwd", &y, rows, cols)?;
        self.check_len("bias_act_fwd", bias, cols)?;
        let bv = self.rd(bias)?;
        let yv = self.get_mut(y.t)?;
        for r in 0..rows {
            for c in 0..cols {
                let v = yv[y.at(r, c)] + bv[c];
                yv[y.at(r, c)] = match act {
                    Activation::None => v,
                    Activation::Relu => {
                        if v > T::zero() {
                            v
                        } else {
                            T::zero()
                        }
                    }
                };
            }
        }
        Ok(())
    }

    fn bias_act_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        dy: View,
        dbias: TensorId,
        act: Activation,
    ) -> Result<()> {
        self.check_view("bias_act_bwd", &y, rows, cols)?;
        self.check_view("bias_act_bwd", &dy, rows, cols)?;
        self.check_len("bias_act_bwd", dbias, cols)?;
        let yv = self.rd(y.t)?;
        let mut dyv = self.rd(dy.t)?;
        let mut db = self.rd(dbias)?;
        for r in 0..rows {
            for c in 0..cols {
                let i = dy.at(r, c);
                if act == Activation::Relu && yv[y.at(r, c)] <= T::zero() {
                    dyv[i] = T::zero();
                }
                db[c] += dyv[i];
            }
        }
        self.write_exact(dy.t, &dyv)?;
        self.write_exact(dbias, &db)
    }

    fn sigmoid_mul_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        out: View,
    ) -> Result<()> {
        for v in [&a, &g, &out] {
            self.check_view("sigmoid_mul_fwd", v, rows, cols)?;
        }
        let (av, gv) = (self.rd(a.t)?, self.rd(g.t)?);
        let mut ov = self.rd(out.t)?;
        for r in 0..rows {
            for c in 0..cols {
                ov[out.at(r, c)] = av[a.at(r, c)] * gv[g.at(r, c)].sigmoid();
            }
        }
        self.write_exact(out.t, &ov)
    }

    fn sigmoid_mul_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        dout: View,
        da: View,
        dg: View,
    ) -> Result<()> {
        for v in [&a, &g, &dout, &da, &dg] {
            self.check_view("sigmoid_mul_bwd", v, rows, cols)?;
        }
        let (av, gv, dov) = (self.rd(a.t)?, self.rd(g.t)?, self.rd(dout.t)?);
        let mut dav = self.rd(da.t)?;
        let mut results = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let s = gv[g.at(r, c)].sigmoid();
                let d = dov[dout.at(r, c)];
                dav[da.at(r, c)] = d * s;
                results.push((dg.at(r, c), d * av[a.at(r, c)] * s * (T::one() - s)));
            }
        }
        self.write_exact(da.t, &dav)?;
        let dgv = self.get_mut(dg.t)?;
        for (i, v) in results {
            dgv[i] = v;
        }
        Ok(())
    }

    fn scale_rows(&mut self, rows: usize, cols: usize, x: TensorId, scale: TensorId) -> Result<()> {
        self.check_len("scale_rows", x, rows * cols)?;
        self.check_len("scale_rows(scale)", scale, rows)?;
        let sv = self.rd(scale)?;
        let xv = self.get_mut(x)?;
        for (r, &f) in sv.iter().take(rows).enumerate() {
            for v in &mut xv[r * cols..(r + 1) * cols] {
                *v = *v * f;
            }
        }
        Ok(())
    }

    fn param_align(&self) -> usize {
        1
    }

    fn class_len(&self, class: Class) -> usize {
        self.roots
            .iter()
            .filter(|r| r.0 == class)
            .map(|r| r.1.len())
            .sum()
    }

    fn grad_norm_sq(&mut self, out: TensorId) -> Result<()> {
        self.check_len("grad_norm_sq", out, 1)?;
        let sum = self
            .roots
            .iter()
            .filter(|r| r.0 == Class::WeightGrad)
            .flat_map(|r| r.1.iter())
            .fold(T::zero(), |a, &g| a + g * g);
        self.get_mut(out)?[0] = sum;
        Ok(())
    }

    fn adam_ema_step(&mut self, step: &AdamStep, st: &OptimizerState) -> Result<()> {
        let n = self.class_len(Class::Weight);
        for t in [st.master, st.m, st.v, st.ema] {
            self.check_len("adam_ema_step", t, n)?;
        }
        self.check_len("adam_ema_step(norm_sq)", st.norm_sq, 1)?;
        let grads: Vec<T> = self
            .roots
            .iter()
            .filter(|r| r.0 == Class::WeightGrad)
            .flat_map(|r| r.1.iter().copied())
            .collect();
        if grads.len() != n {
            return Err(TrainerError::Shape {
                op: "adam_ema_step",
                detail: format!("{} gradients for {n} weights", grads.len()),
            });
        }
        let f = |x: f32| T::from_f32(x);
        let norm = self.get(st.norm_sq)?[0].sqrt();
        let clip = if step.clip_norm > 0.0 && norm > f(step.clip_norm) {
            f(step.clip_norm) / norm
        } else {
            T::one()
        };
        let (mut master, mut m, mut v, mut ema) = (
            self.rd(st.master)?,
            self.rd(st.m)?,
            self.rd(st.v)?,
            self.rd(st.ema)?,
        );
        let (b1, b2, d) = (f(step.beta1), f(step.beta2), f(step.ema_decay));
        for i in 0..n {
            let g = grads[i] * clip;
            m[i] = b1 * m[i] + (T::one() - b1) * g;
            v[i] = b2 * v[i] + (T::one() - b2) * g * g;
            let upd = m[i] * f(step.bc1) / ((v[i] * f(step.bc2)).sqrt() + f(step.eps));
            master[i] = master[i] - f(step.lr) * upd;
            ema[i] = d * ema[i] + (T::one() - d) * master[i];
        }
        self.write_exact(st.master, &master)?;
        self.write_exact(st.m, &m)?;
        self.write_exact(st.v, &v)?;
        self.write_exact(st.ema, &ema)?;
        let mut off = 0;
        for (_, w) in self.roots.iter_mut().filter(|r| r.0 == Class::Weight) {
            let len = w.len();
            w.copy_from_slice(&master[off..off + len]);
            off += len;
        }
        Ok(())
    }

    fn attention_fwd(
        &mut self,
        s: AttnShape,
        qkvg: TensorId,
        bias: Option<TensorId>,
        key_mask: Option<TensorId>,
        attn: TensorId,
        out: TensorId,
        lse: TensorId,
    ) -> Result<()> {
        let (w, l, d) = (s.width(), s.len, s.head_dim);
        self.check_len("attention_fwd", qkvg, s.rows() * 4 * w)?;
        self.check_len("attention_fwd", attn, s.rows() * w)?;
        self.check_len("attention_fwd", out, s.rows() * w)?;
        self.check_len("attention_fwd", lse, s.batch * s.heads * l)?;
        if let Some(b) = bias {
            self.check_len("attention_fwd(bias)", b, s.heads * l * l)?;
        }
        let p = self.rd(qkvg)?;
        let bv = match bias {
            Some(b) => Some(self.rd(b)?),
            None => None,
        };
        let keep = self.key_keep("attention_fwd(key_mask)", key_mask, s)?;
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        let mut av = self.rd(attn)?;
        let mut ov = self.rd(out)?;
        let mut lv = self.rd(lse)?;
        let at = |b: usize, i: usize, part: usize, h: usize, c: usize| {
            ((b * l + i) * 4 + part) * w + h * d + c
        };
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..l {
                    // Logits of the kept keys only; masked keys have weight 0.
                    let logits: Vec<Option<T>> = (0..l)
                        .map(|j| {
                            if !keep(b, j) {
                                return None;
                            }
                            let mut dot = T::zero();
                            for c in 0..d {
                                dot += p[at(b, i, 0, h, c)] * p[at(b, j, 1, h, c)];
                            }
                            let bias_ij =
                                bv.as_ref().map_or(T::zero(), |bv| bv[(h * l + i) * l + j]);
                            Some(dot * scale + bias_ij)
                        })
                        .collect();
                    let mx = logits
                        .iter()
                        .flatten()
                        .copied()
                        .reduce(|a, x| if x > a { x } else { a });
                    let e: Vec<T> = logits
                        .iter()
                        .map(|&x| match (x, mx) {
                            (Some(x), Some(mx)) => (x - mx).exp(),
                            _ => T::zero(),
                        })
                        .collect();
                    let sum = e.iter().fold(T::zero(), |a, &x| a + x);
                    // A fully masked row: zero output, lse 0.
                    let (lse_i, inv) = match mx {
                        Some(mx) => (mx + sum.ln(), T::one() / sum),
                        None => (T::zero(), T::zero()),
                    };
                    lv[(b * s.heads + h) * l + i] = lse_i;
                    for c in 0..d {
                        let mut acc = T::zero();
                        for j in 0..l {
                            acc += e[j] * p[at(b, j, 2, h, c)];
                        }
                        let o = acc * inv;
                        let oi = (b * l + i) * w + h * d + c;
                        av[oi] = o;
                        ov[oi] = o * p[at(b, i, 3, h, c)].sigmoid();
                    }
                }
            }
        }
        self.write_exact(attn, &av)?;
        self.write_exact(out, &ov)?;
        self.write_exact(lse, &lv)
    }

    fn attention_bwd(
        &mut self,
        s: AttnShape,
        qkvg: TensorId,
        bias: Option<TensorId>,
        key_mask: Option<TensorId>,
        attn: TensorId,
        lse: TensorId,
        dout: TensorId,
        dqkvg: TensorId,
        dbias: Option<TensorId>,
    ) -> Result<()> {
        let (w, l, d) = (s.width(), s.len, s.head_dim);
        self.check_len("attention_bwd", dqkvg, s.rows() * 4 * w)?;
        self.check_len("attention_bwd", dout, s.rows() * w)?;
        if let Some(db) = dbias {
            self.check_len("attention_bwd(dbias)", db, s.heads * l * l)?;
        }
        let (p, av, lv, dov) = (
            self.rd(qkvg)?,
            self.rd(attn)?,
            self.rd(lse)?,
            self.rd(dout)?,
        );
        let bv = match bias {
            Some(b) => Some(self.rd(b)?),
            None => None,
        };
        let mut dbv = match dbias {
            Some(b) => Some(self.rd(b)?),
            None => None,
        };
        let keep = self.key_keep("attention_bwd(key_mask)", key_mask, s)?;
        let mut dp = vec![T::zero(); s.rows() * 4 * w];
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        let at = |b: usize, i: usize, part: usize, h: usize, c: usize| {
            ((b * l + i) * 4 + part) * w + h * d + c
        };
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..l {
                    let oi = |c: usize| (b * l + i) * w + h * d + c;
                    // Gate, and the gradient w.r.t. the ungated attention output.
                    let mut da = vec![T::zero(); d];
                    let mut delta = T::zero();
                    for c in 0..d {
                        let sg = p[at(b, i, 3, h, c)].sigmoid();
                        let g = dov[oi(c)];
                        da[c] = g * sg;
                        dp[at(b, i, 3, h, c)] = g * av[oi(c)] * sg * (T::one() - sg);
                        delta += da[c] * av[oi(c)];
                    }
                    let lse_i = lv[(b * s.heads + h) * l + i];
                    for j in (0..l).filter(|&j| keep(b, j)) {
                        let mut dot = T::zero();
                        let mut dpj = T::zero();
                        for c in 0..d {
                            dot += p[at(b, i, 0, h, c)] * p[at(b, j, 1, h, c)];
                            dpj += da[c] * p[at(b, j, 2, h, c)];
                        }
                        let bias_ij = bv.as_ref().map_or(T::zero(), |bv| bv[(h * l + i) * l + j]);
                        let pij = (dot * scale + bias_ij - lse_i).exp();
                        let ds = pij * (dpj - delta);
                        for c in 0..d {
                            let (qc, kc) = (p[at(b, i, 0, h, c)], p[at(b, j, 1, h, c)]);
                            dp[at(b, i, 0, h, c)] += scale * ds * kc;
                            dp[at(b, j, 1, h, c)] += scale * ds * qc;
                            dp[at(b, j, 2, h, c)] += pij * da[c];
                        }
                        if let Some(dbv) = dbv.as_mut() {
                            dbv[(h * l + i) * l + j] += ds;
                        }
                    }
                }
            }
        }
        self.write_exact(dqkvg, &dp)?;
        if let (Some(db), Some(dbv)) = (dbias, dbv) {
            self.write_exact(db, &dbv)?;
        }
        Ok(())
    }

    fn softmax_fwd(&mut self, rows: usize, cols: usize, x: TensorId, y: TensorId) -> Result<()> {
        self.check_len("softmax_fwd", x, rows * cols)?;
        self.check_len("softmax_fwd", y, rows * cols)?;
        let xv = self.rd(x)?;
        let mut yv = self.rd(y)?;
        for r in 0..rows {
            let row = &xv[r * cols..(r + 1) * cols];
            let mx = row
                .iter()
                .copied()
                .fold(row[0], |a, v| if v > a { v } else { a });
            let sum = row.iter().fold(T::zero(), |a, &v| a + (v - mx).exp());
            for c in 0..cols {
                yv[r * cols + c] = (row[c] - mx).exp() / sum;
            }
        }
        self.write_exact(y, &yv)
    }

    fn softmax_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: TensorId,
        dy: TensorId,
        dx: TensorId,
    ) -> Result<()> {
        for t in [y, dy, dx] {
            self.check_len("softmax_bwd", t, rows * cols)?;
        }
        let (yv, dyv) = (self.rd(y)?, self.rd(dy)?);
        let mut dxv = self.rd(dx)?;
        for r in 0..rows {
            let dot = (0..cols).fold(T::zero(), |a, c| a + yv[r * cols + c] * dyv[r * cols + c]);
            for c in 0..cols {
                let i = r * cols + c;
                dxv[i] = yv[i] * (dyv[i] - dot);
            }
        }
        self.write_exact(dx, &dxv)
    }

    fn transpose(
        &mut self,
        dims: [usize; 4],
        x: TensorId,
        y: TensorId,
        accumulate: bool,
    ) -> Result<()> {
        let [a, b, c, d] = dims;
        let n = a * b * c * d;
        self.check_len("transpose", x, n)?;
        self.check_len("transpose", y, n)?;
        let xv = self.rd(x)?;
        let mut yv = self.rd(y)?;
        for ia in 0..a {
            for ib in 0..b {
                for ic in 0..c {
                    let src = ((ia * b + ib) * c + ic) * d;
                    let dst = ((ia * c + ic) * b + ib) * d;
                    for id in 0..d {
                        yv[dst + id] = if accumulate {
                            yv[dst + id] + xv[src + id]
                        } else {
                            xv[src + id]
                        };
                    }
                }
            }
        }
        self.write_exact(y, &yv)
    }

    fn set_dropout_seed(&mut self, seed: u64) -> Result<()> {
        self.dropout_seed = seed;
        Ok(())
    }

    fn residual_dropout_fwd(
        &mut self,
        d: &Dropout,
        resid: TensorId,
        x: TensorId,
        out: TensorId,
    ) -> Result<()> {
        let n = d.shape.iter().product();
        for t in [resid, x, out] {
            self.check_len("residual_dropout_fwd", t, n)?;
        }
        let (rv, xv) = (self.rd(resid)?, self.rd(x)?);
        let step = self.dropout_seed;
        let ov: Vec<T> = (0..n)
            .map(|i| rv[i] + xv[i] * T::from_f32(d.factor(step, i)))
            .collect();
        self.write_exact(out, &ov)
    }

    fn dropout_bwd(&mut self, d: &Dropout, dout: TensorId, dx: TensorId) -> Result<()> {
        let n = d.shape.iter().product();
        self.check_len("dropout_bwd", dout, n)?;
        self.check_len("dropout_bwd", dx, n)?;
        let dov = self.rd(dout)?;
        let step = self.dropout_seed;
        let v: Vec<T> = (0..n)
            .map(|i| dov[i] * T::from_f32(d.factor(step, i)))
            .collect();
        self.write_exact(dx, &v)
    }
}
