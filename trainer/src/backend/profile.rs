//! A profiling wrapper around any backend: synchronizes around every op and
//! accumulates, per op kind, calls, time, and the op's minimal FLOPs and bytes
//! (each operand read once, each output written once; 2-byte activations,
//! 4-byte statistics). Only for measurement: the syncs change the timing of
//! the step as a whole, never the per-op figures.

use super::{
    Activation, AdamStep, AttnShape, Backend, Class, Dropout, Gemm, OptimizerState, TensorId, View,
};
use crate::error::Result;
use std::collections::BTreeMap;
use std::time::Instant;

/// Totals for one op kind.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OpStats {
    /// Number of calls.
    pub calls: usize,
    /// Wall time in seconds (synchronized).
    pub seconds: f64,
    /// Floating-point operations (multiply-add = 2).
    pub flops: f64,
    /// Minimal bytes moved through device memory.
    pub bytes: f64,
}

/// Wraps a backend and times each op.
pub struct Profiled<B: Backend> {
    /// The wrapped backend.
    pub inner: B,
    /// Per op kind statistics.
    pub stats: BTreeMap<String, OpStats>,
}

impl<B: Backend> Profiled<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            stats: BTreeMap::new(),
        }
    }

    fn timed(
        &mut self,
        name: String,
        flops: f64,
        bytes: f64,
        f: impl FnOnce(&mut B) -> Result<()>,
    ) -> Result<()> {
        self.inner.sync()?;
        let t0 = Instant::now();
        f(&mut self.inner)?;
        self.inner.sync()?;
        let s = self.stats.entry(name).or_default();
        s.calls += 1;
        s.seconds += t0.elapsed().as_secs_f64();
        s.flops += flops;
        s.bytes += bytes;
        Ok(())
    }
}

const A: f64 = 2.0;
const F: f64 = 4.0;

impl<B: Backend> Backend for Profiled<B> {
    fn name(&self) -> String {
        format!("profiled {}", self.inner.name())
    }
    fn declare(&mut self, name: &str, len: usize, class: Class) -> TensorId {
        self.inner.declare(name, len, class)
    }
    fn view(&mut self, parent: TensorId, offset: usize, len: usize) -> Result<TensorId> {
        self.inner.view(parent, offset, len)
    }
    fn materialize(&mut self) -> Result<()> {
        self.inner.materialize()
    }
    fn len(&self, t: TensorId) -> usize {
        self.inner.len(t)
    }
    fn tensor_name(&self, t: TensorId) -> &str {
        self.inner.tensor_name(t)
    }
    fn arena_bytes(&self) -> Vec<(Class, usize)> {
        self.inner.arena_bytes()
    }
    fn write(&mut self, t: TensorId, data: &[f32]) -> Result<()> {
        self.inner.write(t, data)
    }
    fn read(&mut self, t: TensorId) -> Result<Vec<f32>> {
        self.inner.read(t)
    }
    fn fill(&mut self, t: TensorId, value: f32) -> Result<()> {
        let n = self.inner.len(t) as f64;
        self.timed("fill".into(), 0.0, n * A, |b| b.fill(t, value))
    }
    fn fill_class(&mut self, class: Class, value: f32) -> Result<()> {
        let n: usize = self
            .inner
            .arena_bytes()
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, b)| *b)
            .sum();
        self.timed("fill".into(), 0.0, n as f64, |b| b.fill_class(class, value))
    }
    fn sync(&mut self) -> Result<()> {
        self.inner.sync()
    }
    fn gemm(&mut self, g: &Gemm) -> Result<()> {
        let (m, n, k, bt) = (g.m as f64, g.n as f64, g.k as f64, g.batch as f64);
        let na = if g.a.stride == 0 { 1.0 } else { bt };
        let nb = if g.b.stride == 0 { 1.0 } else { bt };
        let bytes =
            A * (m * k * na + k * n * nb) + A * m * n * bt * if g.beta != 0.0 { 2.0 } else { 1.0 };
        let name = if g.batch > 1 {
            "gemm (batched)"
        } else {
            "gemm"
        };
        self.timed(name.into(), 2.0 * m * n * k * bt, bytes, |b| b.gemm(g))
    }
    fn gemm_bias_act(&mut self, g: &Gemm, bias: TensorId, act: Activation) -> Result<()> {
        let (m, n, k) = (g.m as f64, g.n as f64, g.k as f64);
        let bytes = A * (m * k + k * n + m * n + n);
        self.timed("gemm + bias epilogue".into(), 2.0 * m * n * k, bytes, |b| {
            b.gemm_bias_act(g, bias, act)
        })
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
        let n = (rows * cols) as f64;
        self.timed("layer_norm_fwd".into(), 8.0 * n, 2.0 * A * n, |b| {
            b.layer_norm_fwd(rows, cols, x, gamma, beta, y, mean, rstd)
        })
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
        let n = (rows * cols) as f64;
        let bytes = A * n * if accumulate { 4.0 } else { 3.0 };
        self.timed("layer_norm_bwd".into(), 12.0 * n, bytes, |b| {
            b.layer_norm_bwd(
                rows, cols, x, gamma, mean, rstd, dy, dx, accumulate, dgamma, dbeta,
            )
        })
    }
    fn bias_act_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        bias: TensorId,
        act: Activation,
    ) -> Result<()> {
        let n = (rows * cols) as f64;
        self.timed("bias_act_fwd".into(), n, 2.0 * A * n, |b| {
            b.bias_act_fwd(rows, cols, y, bias, act)
        })
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
        let n = (rows * cols) as f64;
        let bytes = A * n * if act == Activation::Relu { 3.0 } else { 1.0 };
        self.timed("bias_act_bwd".into(), n, bytes, |b| {
            b.bias_act_bwd(rows, cols, y, dy, dbias, act)
        })
    }
    fn sigmoid_mul_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        out: View,
    ) -> Result<()> {
        let n = (rows * cols) as f64;
        self.timed("sigmoid_mul_fwd".into(), 4.0 * n, 3.0 * A * n, |b| {
            b.sigmoid_mul_fwd(rows, cols, a, g, out)
        })
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
        let n = (rows * cols) as f64;
        self.timed("sigmoid_mul_bwd".into(), 8.0 * n, 5.0 * A * n, |b| {
            b.sigmoid_mul_bwd(rows, cols, a, g, dout, da, dg)
        })
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
        let (bh, l, d) = ((s.batch * s.heads) as f64, s.len as f64, s.head_dim as f64);
        let bytes =
            A * bh * l * d * 6.0 + bias.map_or(0.0, |_| A * s.heads as f64 * l * l) + F * bh * l;
        self.timed(
            format!("attention_fwd L={} d={}", s.len, s.head_dim),
            4.0 * bh * l * l * d,
            bytes,
            |b| b.attention_fwd(s, qkvg, bias, key_mask, attn, out, lse),
        )
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
        let (bh, l, d) = ((s.batch * s.heads) as f64, s.len as f64, s.head_dim as f64);
        let bytes = A * bh * l * d * 10.0
            + bias.map_or(0.0, |_| (A + 2.0 * F) * s.heads as f64 * l * l)
            + F * bh * l;
        self.timed(
            format!("attention_bwd L={} d={}", s.len, s.head_dim),
            10.0 * bh * l * l * d,
            bytes,
            |b| b.attention_bwd(s, qkvg, bias, key_mask, attn, lse, dout, dqkvg, dbias),
        )
    }
    fn softmax_fwd(&mut self, rows: usize, cols: usize, x: TensorId, y: TensorId) -> Result<()> {
        let n = (rows * cols) as f64;
        self.timed("softmax".into(), 4.0 * n, 2.0 * A * n, |b| {
            b.softmax_fwd(rows, cols, x, y)
        })
    }
    fn softmax_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: TensorId,
        dy: TensorId,
        dx: TensorId,
    ) -> Result<()> {
        let n = (rows * cols) as f64;
        self.timed("softmax_bwd".into(), 4.0 * n, 3.0 * A * n, |b| {
            b.softmax_bwd(rows, cols, y, dy, dx)
        })
    }
    fn transpose(
        &mut self,
        dims: [usize; 4],
        x: TensorId,
        y: TensorId,
        accumulate: bool,
    ) -> Result<()> {
        let n = dims.iter().product::<usize>() as f64;
        let name = if dims[3] == 1 {
            "transpose (tiled)"
        } else {
            "transpose (rows)"
        };
        self.timed(
            name.into(),
            0.0,
            A * n * if accumulate { 3.0 } else { 2.0 },
            |b| b.transpose(dims, x, y, accumulate),
        )
    }
    fn set_dropout_seed(&mut self, seed: u64) -> Result<()> {
        self.inner.set_dropout_seed(seed)
    }
    fn residual_dropout_fwd(
        &mut self,
        d: &Dropout,
        resid: TensorId,
        x: TensorId,
        out: TensorId,
    ) -> Result<()> {
        let n = d.shape.iter().product::<usize>() as f64;
        self.timed("residual_dropout_fwd".into(), n, 3.0 * A * n, |b| {
            b.residual_dropout_fwd(d, resid, x, out)
        })
    }
    fn dropout_bwd(&mut self, d: &Dropout, dout: TensorId, dx: TensorId) -> Result<()> {
        let n = d.shape.iter().product::<usize>() as f64;
        self.timed("dropout_bwd".into(), n, 2.0 * A * n, |b| {
            b.dropout_bwd(d, dout, dx)
        })
    }
    fn scale_rows(&mut self, rows: usize, cols: usize, x: TensorId, scale: TensorId) -> Result<()> {
        let n = (rows * cols) as f64;
        self.timed("scale_rows".into(), n, 2.0 * A * n + F * rows as f64, |b| {
            b.scale_rows(rows, cols, x, scale)
        })
    }
    fn param_align(&self) -> usize {
        self.inner.param_align()
    }
    fn class_len(&self, class: Class) -> usize {
        self.inner.class_len(class)
    }
    fn grad_norm_sq(&mut self, out: TensorId) -> Result<()> {
        let n = self.inner.class_len(Class::WeightGrad) as f64;
        self.timed("grad_norm_sq".into(), 2.0 * n, F * n, |b| {
            b.grad_norm_sq(out)
        })
    }
    fn adam_ema_step(&mut self, step: &AdamStep, st: &OptimizerState) -> Result<()> {
        // Reads grad, master, m, v, ema; writes master, m, v, ema (f32) and the weight (bf16).
        let n = self.inner.class_len(Class::Weight) as f64;
        self.timed("adam_ema_step".into(), 16.0 * n, (9.0 * F + A) * n, |b| {
            b.adam_ema_step(step, st)
        })
    }
}
